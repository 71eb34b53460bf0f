"""Training-time augmentation from conf/augmentation: torchvision.transforms.v2 on float images in [0, 1],
one image at a time so each gets its own random draw. Applied to the training split only.

Segmentation passes each image with its mask (a tv_tensors.Mask): v2 moves both by the same geometric draw
(crop, affine, flip; nearest-neighbour for the mask), and colour jitter and random erasing change only the
image. Pixels a transform invents (an affine's corners, a crop's padding) are ignore_index in the mask."""

import warnings

from omegaconf import DictConfig
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnncli.errors import ConfigError

# what v2 says on every erased image of a segmentation batch: the mask is meant to pass through
warnings.filterwarnings("ignore", ".*RandomErasing.*passing through inputs of type tv_tensors.Mask.*")


def _fraction(cfg: DictConfig, key: str, high: float = 1.0) -> float:
    value = cfg.get(key) or 0.0
    if not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ConfigError(f"augmentation.{key}", f"must be a number in [0, {high}], got {value!r}")
    return float(value)


def _pair(cfg: DictConfig, key: str) -> tuple[float, float] | None:
    value = cfg.get(key)
    if value is None:
        return None
    if len(value) != 2 or not 0 < value[0] <= value[1]:
        raise ConfigError(f"augmentation.{key}", f"must be [low, high] with 0 < low <= high, got {list(value)}")
    return float(value[0]), float(value[1])


def build_augmentation(cfg: DictConfig | None, image_size: int, ignore_index: int | None = None) -> v2.Compose | None:
    """The random transforms a config asks for, in the usual order (crop, affine, flip, colour, erase);
    None when it asks for none. (Saturation and hue leave 1-channel images unchanged, as in PIL.)
    `ignore_index`: a segmentation run's, for the mask pixels a transform fills in."""
    if cfg is None:
        return None
    fill = 0 if ignore_index is None else {tv_tensors.Mask: ignore_index, "others": 0}
    steps = []
    crop_scale = _pair(cfg, "random_resized_crop")
    if crop_scale:
        steps.append(v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True))
    padding = cfg.get("crop_padding") or 0
    if not isinstance(padding, int) or padding < 0:
        raise ConfigError("augmentation.crop_padding", f"must be an integer >= 0 (pixels), got {padding!r}")
    if padding:
        steps.append(v2.RandomCrop(image_size, padding=padding, fill=fill))
    degrees = _fraction(cfg, "rotate", high=180)
    translate = _fraction(cfg, "translate", high=0.5)
    scale = _pair(cfg, "scale")
    shear = _fraction(cfg, "shear", high=45)  # horizontal shear, degrees (one of LeCun et al.'s distortions)
    if degrees or translate or scale or shear:
        steps.append(
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate else None,
                scale=scale,
                shear=(-shear, shear) if shear else None,
                fill=fill,
            )  # fmt: skip
        )
    hflip = _fraction(cfg, "hflip")
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    jitter = cfg.get("color_jitter")
    if jitter:
        try:
            steps.append(v2.ColorJitter(**jitter))
        except (TypeError, ValueError) as e:
            raise ConfigError("augmentation.color_jitter", str(e)) from None
    erasing = _fraction(cfg, "random_erasing")
    if erasing:
        steps.append(v2.RandomErasing(erasing))
    return v2.Compose(steps) if steps else None
