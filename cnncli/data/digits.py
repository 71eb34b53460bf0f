"""The embedded default data set: scikit-learn's 8x8 handwritten digits (UCI ML, 1,797 images, 10 classes),
real data that needs no download. A fixed stratified split makes train, val and test."""

import torch
from sklearn.datasets import load_digits

from cnncli.data.common import check_fraction, stratified_split
from cnncli.data.memory import InMemoryImageData
from cnncli.errors import ConfigError


class DigitsDataModule(InMemoryImageData):
    def __init__(
        self,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        class_names: list[str] | None = None,
        **common,
    ):
        super().__init__(class_names=class_names or [], **common)
        check_fraction("val_fraction", val_fraction)
        check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise ConfigError("data.val_fraction", "val_fraction + test_fraction must leave a training split")
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # 0..16 -> 0..255
        labels = torch.from_numpy(digits.target).long()
        if not self.class_names:  # class_names: null in the config: the digits themselves
            self.class_names = [str(name) for name in digits.target_names]
        rest, test = stratified_split(labels, self.test_fraction, self.split_seed)
        kept, val = stratified_split(labels[rest], self.val_fraction / (1 - self.test_fraction), self.split_seed)
        train, val = rest[kept], rest[val]
        return {split: (images[i], labels[i]) for split, i in (("train", train), ("val", val), ("test", test))}
