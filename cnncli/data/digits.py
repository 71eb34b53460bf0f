"""The embedded default data set: scikit-learn's 8x8 handwritten digits (UCI ML, 1,797 images, 10 classes),
real data that needs no download. A fixed stratified split makes train, val and test."""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cnncli.data.memory import InMemoryImageData
from cnncli.errors import ConfigError


class DigitsDataModule(InMemoryImageData):
    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0, **common):
        super().__init__(**common)
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(fraction, float) or not 0 < fraction < 1:
                raise ConfigError(f"data.{key}", f"must be a fraction in (0, 1), got {fraction!r}")
        if val_fraction + test_fraction >= 1:
            raise ConfigError("data.val_fraction", "val_fraction + test_fraction must leave a training split")
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # 0..16 -> 0..255
        labels = torch.from_numpy(digits.target).long()
        index = torch.arange(len(labels)).numpy()
        rest, test = train_test_split(
            index, test_size=self.test_fraction, stratify=labels, random_state=self.split_seed
        )
        train, val = train_test_split(
            rest,
            test_size=self.val_fraction / (1 - self.test_fraction),
            stratify=labels[rest],
            random_state=self.split_seed,
        )
        return {split: (images[i], labels[i]) for split, i in (("train", train), ("val", val), ("test", test))}
