"""Data sets held in memory as one uint8 tensor: a batch is gathered by index in one operation and
converted, augmented and normalized as a whole, with no per-sample PIL image or collate."""

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cnncli.data.common import check_labels, class_weights
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
    ):
        super().__init__()
        self.name, self.channels, self.image_size = name, channels, image_size
        self.num_classes, self.class_names, self.batch_size = num_classes, list(class_names), batch_size
        self.normalization = normalization  # {"mean": [...], "std": [...]}; None: computed on train
        self.class_weights_setting = class_weights
        self.class_weights: torch.Tensor | None = None  # loss weights, known after setup()
        self.augment = augment  # a transform of one float image, for the training split (cnncli/augment.py)
        self.splits: dict[str, TensorImages] = {}

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """uint8 images [N, C, H, W] and int64 labels [N] for each of train, val and test."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = {split: (fit_images(x, self.channels, self.image_size), y) for split, (x, y) in self.load().items()}
        for split, (_, labels) in raw.items():
            check_labels(labels, self.num_classes, f"{self.name} {split} split")
        self.class_weights = class_weights(self.class_weights_setting, raw["train"][1], self.num_classes)
        if self.normalization is None:
            train = raw["train"][0].float().div_(255)
            self.normalization = {
                "mean": train.mean(dim=(0, 2, 3)).tolist(),
                "std": train.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
            }
        mean, std = (torch.tensor(self.normalization[k]) for k in ("mean", "std"))
        self.splits = {
            split: TensorImages(x, y, mean, std, self.augment if split == "train" else None)
            for split, (x, y) in raw.items()
        }

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=_whole_batch)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
