"""Random images of any shape and class count, in the spirit of torchvision's FakeData, generated directly as
one uint8 tensor per split with torch's generator (no PIL, no files): 60,000 28x28 images take well under a
second, which makes this the data set for throughput benchmarks (benchmarks/data_throughput.py).

The class signal: each class has a fixed random template image (uniform 0..255, drawn from `seed`); an image
is its scaled class template plus fresh uniform noise, pixel = round(signal * template) + noise with noise
uniform in 0 .. 255 - round(signal * 255), all in uint8 arithmetic. `signal: 0` is pure noise (nothing to
learn, as FakeData); the default 0.5 is learnable in an epoch; 1 is the template itself.
Labels are balanced (i mod num_classes, shuffled), so every split holds every class when it has room.
Each split has its own random stream (seed, split), so resizing one split leaves the others unchanged.
"""

import torch

from cnncli.data.memory import InMemoryImageData
from cnncli.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]


def _size(key: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")
    return value


class FakeData(InMemoryImageData):
    def __init__(
        self,
        train_size: int = 1000,
        val_size: int = 200,
        test_size: int = 200,
        signal: float = 0.5,
        seed: int = 0,
        class_names: list[str] | None = None,
        **common,
    ):
        super().__init__(class_names=class_names or [str(i) for i in range(common.get("num_classes", 10))], **common)
        self.sizes = {
            "train": _size("train_size", train_size, 2),
            "val": _size("val_size", val_size, 1),
            "test": _size("test_size", test_size, 1),
        }
        if not isinstance(signal, (int, float)) or isinstance(signal, bool) or not 0 <= signal <= 1:
            raise ConfigError("signal", f"must be a number in [0, 1], got {signal!r}")
        self.signal, self.seed = float(signal), _size("seed", seed, 0)

    def _generator(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 4 + stream)

    def load(self) -> dict[str, Split]:
        shape = (self.channels, self.image_size, self.image_size)
        templates = torch.randint(0, 256, (self.num_classes, *shape), generator=self._generator(0))
        templates = (templates * self.signal).round().to(torch.uint8)  # at most round(signal * 255)
        noise_high = 256 - round(self.signal * 255)  # exclusive: the sum stays <= 255, no uint8 overflow
        splits = {}
        for stream, (split, n) in enumerate(self.sizes.items(), start=1):
            generator = self._generator(stream)
            labels = (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=generator)]
            images = torch.randint(0, noise_high, (n, *shape), dtype=torch.uint8, generator=generator)
            splits[split] = images.add_(templates[labels]), labels
        return splits
