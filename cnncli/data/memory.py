"""Data sets held in memory as one uint8 tensor: a batch is gathered by index in one operation and
converted, augmented and normalized as a whole, with no per-sample PIL image or collate."""

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from cnncli.data.common import check_labels, check_normalization, class_weights
from cnncli.errors import ConfigError


class TensorImages(Dataset):
    """uint8 images [N, C, H, W] and int64 labels [N]; `__getitems__` makes DataLoader fetch whole batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, augment=None):
        self.images, self.labels, self.augment = images, labels, augment
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        images = self.images[index].float().div_(255)
        if self.augment is not None:  # one random draw per image
            images = torch.stack([self.augment(image) for image in images])
        return images.sub_(self.mean).div_(self.std), self.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([i])
        return images[0], labels[0]


def _whole_batch(batch):
    return batch  # __getitems__ already returns the batch as two tensors


def batch_loader(dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
    """Whole batches from `__getitems__` (images with labels, or with masks: cnncli/data/masks.py)."""
    sampler = None
    if not shuffle and dist.is_available() and dist.is_initialized():
        # Under DDP each rank evaluates its share and every image counts once (the DistributedSampler
        # Lightning puts in otherwise repeats a few images to give the ranks equal shares).
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, collate_fn=_whole_batch)


def channel_statistics(images: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], as pixel values / 255: the normalization."""
    pixels = images.float().div_(255)
    return {"mean": pixels.mean(dim=(0, 2, 3)).tolist(), "std": pixels.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()}


def fit_images(images: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, channels, image_size, image_size]: channels converted, resized."""
    if images.shape[1] != channels:
        if channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif channels == 1 and images.shape[1] == 3:  # ITU-R 601 luma, as PIL's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
        else:
            raise ConfigError("data.channels", f"cannot convert {images.shape[1]}-channel images to {channels}")
    if images.shape[-2:] != (image_size, image_size):
        resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def _check_classes(classes, num_classes: int) -> list[int] | None:
    """data.classes, checked when the module is built (by call_target, which puts `data.` before the key)."""
    if classes is None:
        return None
    if not isinstance(classes, (list, tuple)) or any(type(c) is not int or c < 0 for c in classes):
        raise ConfigError("classes", f"must be a list of class indices (integers >= 0), got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ConfigError("classes", f"lists a class twice: {list(classes)}")
    if len(classes) != num_classes:
        raise ConfigError("classes", f"selects {len(classes)} classes; set data.num_classes={len(classes)} too")
    return list(classes)


class InMemoryImageData(L.LightningDataModule):
    """Base of the in-memory data sets. A subclass implements `load()`; this class does the rest:
    channel conversion, resizing, normalization statistics from the training split, batching."""

    def __init__(
        self,
        name: str,
        channels: int,
        image_size: int,
        num_classes: int,
        class_names: list[str],
        batch_size: int = 64,
        normalization: dict | None = None,
        class_weights: str | list[float] | None = None,
        augment=None,
        classes: list[int] | None = None,
    ):
        super().__init__()
        self.name, self.channels, self.image_size = name, channels, image_size
        self.num_classes, self.class_names, self.batch_size = num_classes, list(class_names), batch_size
        self.normalization = check_normalization(normalization, channels)  # None: computed on train in setup()
        self.class_weights_setting = class_weights
        self.class_weights: torch.Tensor | None = None  # loss weights, known after setup()
        self.augment = augment  # a transform of one float image, for the training split (cnncli/augment.py)
        self.splits: dict[str, TensorImages] = {}
        # data.classes: a subset of the data set's labels, relabelled 0..n-1 in the order given
        self.classes = _check_classes(classes, num_classes)
        self.names_from_data = not class_names  # class_names null: the data set's own (load() fills them in)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """uint8 images [N, C, H, W] and int64 labels [N] for each of train, val and test."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        loaded = self.load()
        if self.classes is not None:
            loaded = {split: self._select_classes(x, y, split) for split, (x, y) in loaded.items()}
            if self.names_from_data:
                self.class_names = [self.class_names[c] for c in self.classes]
        raw = {split: (fit_images(x, self.channels, self.image_size), y) for split, (x, y) in loaded.items()}
        for split, (_, labels) in raw.items():
            check_labels(labels, self.num_classes, f"{self.name} {split} split")
        self.class_weights = class_weights(self.class_weights_setting, raw["train"][1], self.num_classes)
        if self.normalization is None:
            self.normalization = channel_statistics(raw["train"][0])
        mean, std = (torch.tensor(self.normalization[k]) for k in ("mean", "std"))
        self.splits = {
            split: TensorImages(x, y, mean, std, self.augment if split == "train" else None)
            for split, (x, y) in raw.items()
        }

    def _select_classes(self, images: torch.Tensor, labels: torch.Tensor, split: str) -> tuple:
        new_label = torch.full((max(int(labels.max()), *self.classes) + 1,), -1)
        new_label[self.classes] = torch.arange(len(self.classes))
        labels = new_label[labels]
        kept = labels >= 0
        empty = [c for c, n in zip(self.classes, torch.bincount(labels[kept], minlength=len(self.classes))) if n == 0]
        if empty:
            raise ConfigError("data.classes", f"{self.name} has no images of class {empty[0]} in its {split} split")
        return images[kept], labels[kept]

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return batch_loader(self.splits[split], self.batch_size, shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
