"""Segmentation folders: images with their masks on disk, loaded into memory (cnncli/data/masks.py).

Layout (`root` is data.root; a split without a folder is carved out of train, at random fixed by split_seed):

    <root>/train/images/<stem>.<ext>     <root>/train/masks/<stem>.png     (and val/, test/ alike)

An image is any file with one of torchvision's IMG_EXTENSIONS; its mask is the PNG of the same stem. A mask
is an index map: pixel value = class id, `ignore_index` (default 255) for void or border pixels; a palette
PNG ("P" mode, as VOC's masks) is read by its indices. An RGB mask is mapped to class ids by `palette`
(one [r, g, b] per class, the colour of class i at index i). Images are read as image folders read them
(cnncli/data/images.py: converted to data.channels, stretched to image_size x image_size, bilinear); masks
are resized nearest-neighbour, so a class id is never blended. Every file is read once, at setup; a mask
that does not fit its image or the classes stops the run with one line naming the file.

The images and masks are held in memory in any case (decoded in threads). `cache: ram` holds them in shared
memory, its size said first and refused when it does not fit; `cache: disk` keeps them in a memory-mapped
file that later runs of the same files and size read instead of decoding again (cnncli/data/cache.py).
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnncli.data.cache import check_cache, chw, load
from cnncli.data.common import SPLITS, check_fraction
from cnncli.data.images import IMAGE_EXTENSIONS, MODES, UnreadableImage, fit, load_image
from cnncli.data.masks import InMemorySegmentationData
from cnncli.errors import ConfigError, UserError, check_choice

INDEX_MODES = ("L", "P", "I", "I;16", "1")  # masks whose pixel values are class ids


class SegFolderData(InMemorySegmentationData):
    def __init__(
        self,
        root: str | None = None,
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        cache: str = "none",
        cache_dir: str = "outputs/cache",
        **common,
    ):
        if root in (None, "", "???"):
            raise ConfigError("root", "required: the folder of the split folders, e.g. data.root=path/to/masks_data")
        if not isinstance(class_names, (list, tuple)) or len(class_names) < 2:
            got = "" if class_names in (None, "???") else f", got {class_names!r}"
            raise ConfigError("class_names", f"required: two or more names, id 0 first, e.g. [background,cell]{got}")
        if num_classes is not None and num_classes != len(class_names):
            raise ConfigError("num_classes", f"is {num_classes}, but class_names has {len(class_names)} names")
        check_choice("channels", common.get("channels"), tuple(MODES))
        super().__init__(class_names=[str(c) for c in class_names], num_classes=len(class_names), **common)
        self.root = Path(root).expanduser()
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction", "val_fraction + test_fraction must leave a training split")
        self.split_seed = split_seed
        self.cache, self.cache_dir = check_cache(cache, cache_dir)
        if not self.root.is_dir():
            raise UserError(f"data.root: {'not a folder' if self.root.exists() else 'no such folder'}: {self.root}")
        if not (self.root / "train" / "images").is_dir():
            raise UserError(
                f"{self.root}: no train/images folder (expected <root>/train/images/ and <root>/train/masks/)"
            )

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        found = {split: self._pairs(split) for split in SPLITS if (self.root / split / "images").is_dir()}
        splits = self._carve(found)
        return {split: self._read(pairs, split) for split, pairs in splits.items()}

    def _pairs(self, split: str) -> list[tuple[Path, Path]]:
        """Each image of the split's images/ folder with its mask in masks/ (an image without one: an error)."""
        folder = self.root / split
        images = sorted(
            Path(e.path) for e in os.scandir(folder / "images")
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
        )  # fmt: skip
        if not images:
            raise UserError(f"{folder / 'images'}: no image files (ending in {', '.join(IMAGE_EXTENSIONS)})")
        pairs = []
        for image in images:
            mask = folder / "masks" / f"{image.stem}.png"
            if not mask.is_file():
                raise UserError(f"{image}: no mask; expected {mask}")
            pairs.append((image, mask))
        return pairs

    def _carve(self, found: dict) -> dict[str, list[tuple[Path, Path]]]:
        pool, splits = found["train"], {"val": found.get("val"), "test": found.get("test")}
        total = len(pool)
        order = torch.randperm(total, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        for split in ("test", "val"):
            if splits[split] is None:
                size = math.ceil(getattr(self, f"{split}_fraction") * total - 1e-9)
                if size >= len(order):
                    raise UserError(f"{self.root}: {total} training images are too few to carve a {split} split")
                carved, order = order[:size], order[size:]
                splits[split] = [pool[i] for i in sorted(carved)]
        return {"train": [pool[i] for i in sorted(order)], **splits}

    def _read(self, pairs: list[tuple[Path, Path]], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        cache = load(
            self.cache,
            f"{self.name} {split}",
            [(str(image), str(mask)) for image, mask in pairs],
            self._decode,
            (self.channels, self.image_size, self.image_size),
            masks=True,
            # what the masks' class ids depend on besides the files
            settings={"palette": self.palette_given, "classes": self.num_classes, "ignore": self.ignore_index},
            cache_dir=self.cache_dir,
        )
        if cache.unreadable:  # the first, as reading them one by one would have stopped at it
            raise UnreadableImage(cache.unreadable[min(cache.unreadable)])
        return cache.as_tensors()

    def _decode(self, files: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """An image and its mask, resized: uint8 [C, S, S] and uint8 [S, S] of class ids."""
        (image_path, mask_path), size = files, self.image_size
        picture = load_image(image_path, MODES[self.channels], size)  # a JPEG may be decoded at a smaller scale
        with Image.open(image_path) as header:  # so the file's own size, to compare the mask with
            width, height = header.size
        mask = self._mask(Path(mask_path))
        if mask.size != (width, height):
            raise UserError(
                f"{mask_path}: the mask is {mask.size[0]}x{mask.size[1]} pixels, its image {image_path} "
                f"{width}x{height}"
            )
        return chw(fit(picture, size, "stretch")), np.asarray(mask.resize((size, size), Image.NEAREST), np.uint8)

    def _mask(self, path: Path) -> Image.Image:
        """The mask as an 8-bit image of class ids, checked against num_classes and ignore_index."""
        try:
            with Image.open(path) as opened:
                mask = opened.copy()
        except Exception as e:  # noqa: BLE001 (PIL's errors depend on the format)
            raise UnreadableImage(f"unreadable mask file {path}: {str(e).splitlines()[0] if str(e) else e}") from None
        if mask.mode in INDEX_MODES:
            ids = np.asarray(mask).astype(np.int64)
        elif mask.mode in ("RGB", "RGBA"):
            ids = self._ids_of_colours(np.asarray(mask.convert("RGB")), path)
        else:
            raise UserError(f"{path}: a mask of PIL mode {mask.mode}; masks are index maps (L, P) or RGB")
        invalid = (ids >= self.num_classes) & (ids != self.ignore_index)
        if invalid.any():
            raise UserError(
                f"{path}: holds class id {int(ids[invalid].max())}, but data.class_names names {self.num_classes} "
                f"classes (ids 0..{self.num_classes - 1}; {self.ignore_index} is data.ignore_index)"
            )
        return Image.fromarray(ids.astype(np.uint8), "L")

    def _ids_of_colours(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        if self.palette_given is None:
            raise UserError(
                f"{path}: an RGB mask; set data.palette (one [r, g, b] per class) to map its colours to classes, "
                "or save masks as index maps (pixel value = class id)"
            )
        codes = rgb.astype(np.int64) @ np.array([65536, 256, 1])
        palette = np.array(self.palette_given, np.int64) @ np.array([65536, 256, 1])
        index = np.searchsorted(np.sort(palette), codes).clip(0, len(palette) - 1)
        known = np.sort(palette)[index] == codes
        if not known.all():
            r, g, b = rgb[~known][0].tolist()
            raise UserError(f"{path}: the colour [{r}, {g}, {b}] is not in data.palette")
        return np.argsort(palette)[index]
