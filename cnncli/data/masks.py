"""Segmentation data held in memory: uint8 images [N, C, H, W] with uint8 masks [N, H, W] (pixel value =
class id, `ignore_index` for void or border pixels). The sibling of cnncli/data/memory.py for the
segmentation task: a batch is gathered by index, and augmentation draws one geometric transform per image
that moves the image and its mask together (transforms.v2 with a tv_tensors.Mask, nearest-neighbour for
the mask); colour transforms change the image only. Class weights count pixels, not images."""

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cnncli.data.common import check_normalization
from cnncli.data.memory import batch_loader, channel_statistics, fit_images
from cnncli.errors import ConfigError, UserError

IGNORE_INDEX = 255  # the void / border label of VOC and of the pet trimaps' border, as masks are stored


def check_ignore_index(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ConfigError("ignore_index", f"must be an integer in 0..255 (a mask pixel value), got {value!r}")
    return value


def check_masks(masks: torch.Tensor, num_classes: int, ignore_index: int, where: str) -> None:
    """Every mask pixel is a class id below num_classes, or ignore_index."""
    high = masks.masked_fill(masks == ignore_index, 0).amax().item() if masks.numel() else 0
    if high >= num_classes:
        raise UserError(
            f"{where}: a mask holds class id {high}, but data.num_classes={num_classes} (ids 0..{num_classes - 1}; "
            f"{ignore_index} is data.ignore_index)"
        )


def pixel_class_weights(setting, masks: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor | None:
    """Loss weights per class: None, `auto` (inverse pixel frequency in the training masks, mean 1) or a list."""
    if setting is None:
        return None
    if setting == "auto":
        labels = masks[masks != ignore_index].long()
        counts = torch.bincount(labels, minlength=num_classes)[:num_classes].float()
        if (counts == 0).any():
            missing = (counts == 0).nonzero().flatten().tolist()
            raise UserError(f"class_weights=auto: classes {missing} have no pixel in the training masks")
        return counts.sum() / (num_classes * counts)
    if isinstance(setting, str) or len(setting) != num_classes:
        raise ConfigError(
            "data.class_weights", f"must be null, auto or a list of {num_classes} numbers, got {setting!r}"
        )
    return torch.tensor([float(w) for w in setting])


def fit_masks(masks: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [N, H, W] -> [N, image_size, image_size], nearest neighbour (a class id is never blended)."""
    if masks.shape[-2:] == (image_size, image_size):
        return masks.contiguous()
    return F.interpolate(masks[:, None].float(), size=(image_size, image_size), mode="nearest-exact")[:, 0].to(
        torch.uint8
    )


class MaskedImages(Dataset):
    """uint8 images and masks -> (float images [B, C, S, S] normalized, int64 masks [B, S, S]) per batch."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, augment=None):
        from torchvision import tv_tensors  # what tells transforms.v2 which input is the mask

        self.images, self.masks, self.augment, self.Mask = images, masks, augment, tv_tensors.Mask
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        images, masks = self.images[index].float().div_(255), self.masks[index]
        if self.augment is not None:  # one draw per image, the same for its mask
            pairs = [self.augment(image, self.Mask(mask)) for image, mask in zip(images, masks)]
            images = torch.stack([image for image, _ in pairs])
            masks = torch.stack([mask.as_subclass(torch.Tensor) for _, mask in pairs])
        return images.sub_(self.mean).div_(self.std), masks.long()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = self.__getitems__([i])
        return images[0], masks[0]


class InMemorySegmentationData(L.LightningDataModule):
    """Base of the in-memory segmentation data sets: a subclass implements `load()` (uint8 images and masks
    per split); this class resizes them (bilinear images, nearest masks), checks the masks, computes the
    normalization on the training images and the pixel class weights, and batches."""

    task = "segmentation"

    def __init__(
        self,
        name: str,
        channels: int,
        image_size: int,
        num_classes: int,
        class_names: list[str],
        batch_size: int = 16,
        normalization: dict | None = None,
        class_weights: str | list[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        palette: list[list[int]] | None = None,
        augment=None,
        task: str = "segmentation",
    ):
        super().__init__()
        if task != "segmentation":
            raise ConfigError("task", f"{name} is a segmentation data set (masks), not {task!r}")
        if len(class_names) != num_classes:
            raise ConfigError("class_names", f"has {len(class_names)} names for {num_classes} classes")
        self.name, self.channels, self.image_size = name, channels, image_size
        self.num_classes, self.class_names, self.batch_size = num_classes, list(class_names), batch_size
        self.normalization = check_normalization(normalization, channels)
        self.class_weights_setting, self.class_weights = class_weights, None
        self.ignore_index = check_ignore_index(ignore_index)
        self.palette = check_palette(palette, num_classes)  # the colours masks are drawn in
        self.palette_given = None if palette is None else self.palette  # what maps an RGB mask's colours
        self.augment = augment
        self.splits: dict[str, MaskedImages] = {}

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """uint8 images [N, C, H, W] and uint8 masks [N, H, W] for each of train, val and test."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = {}
        for split, (images, masks) in self.load().items():
            if len(images) == 0:
                raise UserError(f"{self.name} {split} split: no images")
            check_masks(masks, self.num_classes, self.ignore_index, f"{self.name} {split} split")
            raw[split] = fit_images(images, self.channels, self.image_size), fit_masks(masks, self.image_size)
        train_masks = raw["train"][1]
        self.class_weights = pixel_class_weights(
            self.class_weights_setting, train_masks, self.num_classes, self.ignore_index
        )
        if self.normalization is None:
            self.normalization = channel_statistics(raw["train"][0])
        mean, std = (torch.tensor(self.normalization[k]) for k in ("mean", "std"))
        self.splits = {
            split: MaskedImages(x, y, mean, std, self.augment if split == "train" else None)
            for split, (x, y) in raw.items()
        }

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return batch_loader(self.splits[split], self.batch_size, shuffle)  # under DDP each image counted once

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


# A colour per class for masks drawn and saved (predict's indexed PNGs, overlays): black background, then
# the distinct colours of VOC's palette (its bit-interleaved scheme, as VOC's own mask files use).
def default_palette(num_classes: int) -> list[list[int]]:
    colours = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours.append([r, g, b])
    return colours


def check_palette(palette, num_classes: int) -> list[list[int]]:
    """null (VOC's colours) or one [r, g, b] per class, each 0..255, all different."""
    if palette is None:
        return default_palette(num_classes)
    ok = isinstance(palette, (list, tuple)) and len(palette) == num_classes
    ok = ok and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
        for c in palette
    )
    if not ok:
        raise ConfigError("palette", f"must be null or {num_classes} [r, g, b] colours (0..255), got {palette!r}")
    colours = [list(c) for c in palette]
    if len({tuple(c) for c in colours}) != len(colours):
        raise ConfigError("palette", "gives two classes the same colour")
    return colours
