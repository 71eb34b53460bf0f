"""cnncli viz <mode>: what a trained network computes, drawn as PNGs (the path of each file is printed).
How each mode draws: cnncli/visualize.py. This file is the command, its options and their checks; it
imports no torch or captum, so `--help`, `--cfg job` and a bad value answer at once."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnncli import config_dir
from cnncli.config import check_number
from cnncli.errors import UserError, check_choice, check_output_folder, reports_user_errors

MODES = {
    "featuremaps": "the activation maps of layer=NAME (default: every conv, up-conv and pooling layer) for image=FILE",
    "filters": "the first conv layer's kernels, and the input that maximizes each filter of layer=NAME",
    "cam": "a classifier's CAM (global-average-pooling models) or Grad-CAM of the predicted class (or target=CLASS) "
    "on image=FILE",
    "occlusion": "a classifier's class probability as a grey patch slides over image=FILE (Zeiler & Fergus)",
    "deconv": "Zeiler & Fergus's deconvnet: the strongest unit of the top_k most active maps of layer=NAME, "
    "projected back to the pixels of image=FILE",
    "guided": "the same units projected by guided backpropagation (Springenberg et al.)",
    "guided_gradcam": "a classifier's guided backpropagation times Grad-CAM for the predicted class (or target=CLASS)",
    "attention": "a vision transformer's attention rollout of its class token over image=FILE (Abnar & Zuidema)",
}


def validate(cfg: DictConfig) -> None:
    if cfg.mode is None:
        raise UserError(f"say what to draw: cnncli viz {{{'|'.join(MODES)}}} ckpt_path=PATH ...")
    check_choice("mode", cfg.mode, MODES)
    if cfg.ckpt_path is None:
        raise UserError("give the checkpoint to look into: ckpt_path=PATH")
    if cfg.mode != "filters" and cfg.image is None:
        raise UserError(f"viz {cfg.mode} needs an image: image=FILE")
    check_number(cfg, "max_maps", 1, integer=True)
    check_number(cfg, "top_k", 1, integer=True)
    check_number(cfg, "ascent.steps", 1, integer=True)
    check_number(cfg, "ascent.lr", 0, open_low=True)
    check_number(cfg, "ascent.l2", 0)
    check_number(cfg, "ascent.tv", 0)
    check_number(cfg, "ascent.seed", 0, integer=True)
    check_choice("ascent.start", cfg.ascent.start, ("noise", "blank"))
    check_number(cfg, "occlusion.patch", 1, integer=True)
    check_number(cfg, "occlusion.stride", 1, integer=True)
    if cfg.occlusion.fill != "mean":
        check_number(cfg, "occlusion.fill", 0, 1)
    if cfg.out is not None:
        check_output_folder("out", Path(str(cfg.out)))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="viz")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from cnncli.visualize import visualize  # torch and captum load here

    visualize(cfg)


def command_line(args: list[str]) -> list[str]:
    """`cnncli viz MODE overrides...`: the mode word becomes the override mode=MODE before Hydra parses."""
    if args and args[0] in MODES:
        return [f"mode={args[0]}", *args[1:]]
    if args and not args[0].startswith("-") and "=" not in args[0]:
        print(f"error: unknown viz mode {args[0]!r}; choose from: {', '.join(MODES)}", file=sys.stderr)
        sys.exit(2)
    return args
