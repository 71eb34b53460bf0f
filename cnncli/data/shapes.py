"""Shapes: the embedded segmentation data set, generated (no download, no files), deterministic from `seed`.

Each image is a textured background (a random colour swung by two random sinusoidal gratings, plus pixel
noise) with 1 to `max_shapes` shapes drawn on it, each a circle, a square or a triangle of random size,
place, colour and (triangles) orientation; a later shape covers an earlier one, in the image and in the
mask. The mask holds the class of every pixel: 0 background, 1 circle, 2 square, 3 triangle. Colour says
nothing of the class (every shape's colour is drawn afresh, CONTRAST away from the background's), so a
network must learn the outlines: the course's first segmentation exercise, trained by
`cnncli train model=unet` in about a minute on a laptop CPU. Each split has its own random stream
(seed, split), so resizing one split leaves the others unchanged.
"""

import numpy as np
import torch

from cnncli.data.masks import InMemorySegmentationData
from cnncli.errors import ConfigError

CLASS_NAMES = ["background", "circle", "square", "triangle"]
CONTRAST = 80  # a shape's colour differs from the background's by this much in one channel at least


def _count(key: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def draw(rng: np.random.Generator, size: int, max_shapes: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 [3, size, size]) and its mask (uint8 [size, size])."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = np.zeros((size, size), np.float32)
    for _ in range(2):  # two gratings: stripes of random direction and period
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 16), rng.uniform(0, 2 * np.pi)
        texture += np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    texture = texture / 2  # -1..1
    background, tint = rng.uniform(40, 215, 3), rng.uniform(-40, 40, 3)  # a colour, and the gratings' swing
    image = background[:, None, None] + tint[:, None, None] * texture[None]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, max_shapes + 1)):
        kind = int(rng.integers(1, 4))
        radius = rng.uniform(0.08, 0.2) * size
        cy, cx = rng.uniform(radius, size - radius, 2)
        if kind == 1:  # circle
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
        elif kind == 2:  # square, axis-aligned, half side `radius`
            inside = (np.abs(x - cx) <= radius) & (np.abs(y - cy) <= radius)
        else:  # triangle: three corners on the circle of `radius`, the first at a random angle
            corners = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
            px, py = cx + radius * 1.2 * np.cos(corners), cy + radius * 1.2 * np.sin(corners)
            sides = [(px[i] - x) * (py[(i + 1) % 3] - y) - (py[i] - y) * (px[(i + 1) % 3] - x) for i in range(3)]
            inside = (sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0) | (sides[0] <= 0) & (sides[1] <= 0) & (
                sides[2] <= 0
            )
        colour = rng.uniform(0, 255, 3)
        while np.abs(colour - background).max() < CONTRAST:  # visible on the background, whatever its class
            colour = rng.uniform(0, 255, 3)
        image[:, inside] = colour[:, None]
        mask[inside] = kind
    image += rng.normal(0, 8, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


class ShapesData(InMemorySegmentationData):
    def __init__(
        self,
        train_size: int = 1000,
        val_size: int = 200,
        test_size: int = 200,
        max_shapes: int = 3,
        seed: int = 0,
        class_names: list[str] | None = None,
        num_classes: int = len(CLASS_NAMES),
        **common,
    ):
        if num_classes != len(CLASS_NAMES):
            raise ConfigError("num_classes", f"shapes has {len(CLASS_NAMES)} classes ({', '.join(CLASS_NAMES)})")
        super().__init__(class_names=class_names or CLASS_NAMES, num_classes=num_classes, **common)
        self.sizes = {
            "train": _count("train_size", train_size, 2),
            "val": _count("val_size", val_size, 1),
            "test": _count("test_size", test_size, 1),
        }
        self.max_shapes, self.seed = _count("max_shapes", max_shapes, 1), _count("seed", seed, 0)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = {}
        for stream, (split, n) in enumerate(self.sizes.items()):
            rng = np.random.default_rng([self.seed, stream])
            drawn = [draw(rng, self.image_size, self.max_shapes) for _ in range(n)]
            images, masks = (np.stack(parts) for parts in zip(*drawn))
            splits[split] = torch.from_numpy(images), torch.from_numpy(masks)
        return splits
