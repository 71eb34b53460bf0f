"""cnncli export: a checkpoint's network as ONNX, TorchScript or a torch.export program, verified against PyTorch
(how: cnncli/export.py). This file is the command, its options and their checks; it imports no torch, so
`--help`, `--cfg job` and a bad value answer at once."""

import hydra
from omegaconf import DictConfig

from cnncli import config_dir
from cnncli.config import check_number
from cnncli.errors import ConfigError, check_choice, reports_user_errors, require

FORMATS = {"onnx": ".onnx", "torchscript": ".ts", "exported_program": ".pt2"}


def validate(cfg: DictConfig) -> None:
    require(cfg, "ckpt_path", "PATH (a checkpoint, such as RUN_FOLDER/checkpoints/best.ckpt)")
    check_choice("format", cfg.format, list(FORMATS))
    check_number(cfg, "atol", 0)
    check_number(cfg, "min_top1_agreement", 0, 1)
    check_number(cfg, "batch_size", 1, integer=True)
    check_number(cfg, "test_images", 0, integer=True)
    check_number(cfg, "random_images", 1, integer=True)
    check_number(cfg, "opset", 7, integer=True)
    if not isinstance(cfg.dynamic_batch, bool):
        raise ConfigError("dynamic_batch", f"must be true or false, got {cfg.dynamic_batch!r}")
    if cfg.opset is not None and cfg.format != "onnx":
        raise ConfigError("opset", f"applies to format=onnx only, not format={cfg.format}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from cnncli.export import export  # torch (and onnx for format=onnx) load here

    export(cfg)
