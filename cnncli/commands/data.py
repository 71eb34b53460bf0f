"""cnncli data show: a PNG grid of training images after augmentation, labelled, as the network sees them
(before normalization, which is undone for display). torch and co. are imported by `show`: --help and
--cfg job do not load them."""

import math
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnncli import config_dir
from cnncli.commands.compare import check_picture
from cnncli.config import call_target
from cnncli.errors import ConfigError, UserError, reports_user_errors

ACTIONS = {"show": "write a PNG grid of augmented training images with their labels"}


def validate(cfg: DictConfig) -> None:
    """The command's own values, before torch is imported."""
    count = cfg.count
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError("count", f"must be an integer >= 1 (the images in the grid), got {count!r}")
    check_picture("out", Path(str(cfg.out)))


def show(cfg: DictConfig) -> Path:
    validate(cfg)
    import lightning as L
    import torch

    from cnncli.augment import build_augmentation
    from cnncli.plots import plt

    L.seed_everything(cfg.seed, verbose=False)
    segmentation = cfg.data.get("task") == "segmentation"  # masks: drawn beside their images
    ignore_index = cfg.data.get("ignore_index") if segmentation else None
    augment = build_augmentation(cfg.augmentation, cfg.data.image_size, ignore_index)
    datamodule = call_target("data", cfg.data, augment=augment)
    datamodule.setup("fit")
    images, labels = [], []
    for batch_images, batch_labels in datamodule.train_dataloader():
        images.append(batch_images)
        labels.append(batch_labels)
        if sum(map(len, labels)) >= cfg.count:
            break
    images, labels = torch.cat(images)[: cfg.count], torch.cat(labels)[: cfg.count]
    mean, std = (torch.tensor(datamodule.normalization[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    images = (images * std + mean).clamp(0, 1)
    if segmentation:
        return _save(_masks_figure(plt, images, labels, datamodule, cfg), cfg)

    columns = min(8, len(images))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        picture = image.permute(1, 2, 0).numpy()
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
        ax.set_title(datamodule.class_names[label], fontsize=8)
    fig.suptitle(f"{cfg.data.name}, augmentation={cfg.augmentation.name}, {cfg.data.image_size}px", fontsize=10)
    fig.tight_layout()
    return _save(fig, cfg)


def _masks_figure(plt, images, masks, datamodule, cfg):
    """Segmentation: each image beside its mask drawn over it (the class colours, the legend below); pixels
    of ignore_index in white."""
    from matplotlib.patches import Patch

    from cnncli.tasks.segmentation import colour_masks

    colours = colour_masks(masks, datamodule.palette, datamodule.ignore_index).numpy()
    columns = min(4, len(images))  # pairs: image | overlay
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(3.2 * columns, 2.0 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, colour, mask) in enumerate(zip(images, colours, masks)):
        picture = image.permute(1, 2, 0).expand(-1, -1, 3).numpy()
        drawn = (mask != 0).numpy()[..., None]  # class 0 (background) shows the image through
        overlay = picture * (1 - 0.6 * drawn) + colour * 0.6 * drawn
        left, right = axes.flat[2 * i], axes.flat[2 * i + 1]
        left.imshow(picture)
        right.imshow(overlay.clip(0, 1), interpolation="nearest")
        left.set_title(f"image {i}", fontsize=8)
        right.set_title("mask", fontsize=8)
    handles = [Patch(color=[c / 255 for c in colour], label=name)
               for name, colour in zip(datamodule.class_names, datamodule.palette)]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(f"{cfg.data.name} with masks, augmentation={cfg.augmentation.name}, {cfg.data.image_size}px",
                 fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.5 / (2.0 * rows + 0.6), 1, 1))
    return fig


def _save(fig, cfg: DictConfig) -> Path:
    from cnncli.plots import plt

    out = Path(cfg.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as e:  # no permission, disk full: one line, as for a bad value
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    print(out)
    return out


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="data_show")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    show(cfg)


PROGRAM = "cnncli data show"


def command_line(args: list[str]) -> list[str]:
    """`cnncli data show overrides...`: the action word is not an override."""
    action = args[0] if args else None
    if action not in ACTIONS:
        print(f"usage: cnncli data show [overrides...]\n  show  {ACTIONS['show']}", file=sys.stderr)
        sys.exit(0 if action in ("-h", "--help") else 2)
    return args[1:]
