"""Image folders on disk, read with torchvision's ImageFolder conventions (one folder per class, files with
one of torchvision's IMG_EXTENSIONS, everything else ignored) and a worker DataLoader. Configs:
conf/data/imagefolder.yaml (any folder) and conf/data/chestxray.yaml (the chest X-ray pneumonia set).

Layouts (`root` is the data.root folder):
  <root>/train/<class>/<files>  plus optional <root>/val/... and <root>/test/...  (split folders)
  <root>/<class>/<files>                                                        (no split folders)
A split that has no folder is carved out of the training images, stratified by class and fixed by
`split_seed`: test takes `test_fraction`, val `val_fraction` (fractions of the training images plus any
merged val images). A val folder with fewer than `min_val_size` images is merged into train and a new val
split is carved. Carving uses the file listing only, so train and eval carve the same test split.

Each image: PIL open -> "L" (channels 1) or "RGB" (channels 3) -> resize to image_size x image_size
(`stretch`, or `center_crop`: shorter side to image_size, centre square) -> float tensor in [0, 1] ->
`augment` (train only) -> normalize with statistics of the training split. JPEGs are decoded at a reduced
scale when that still covers image_size (PIL's draft mode: about 3x faster on large X-ray images).

Classes are the class folders (of <root>/train when there are split folders), sorted, as torchvision's
ImageFolder finds them; they are listed when the data module is made, so `num_classes` and `class_names`
are known before the model is built. Left null, the config takes them from the folders; set, they must
match them (a mismatch is a config error naming both).

Every file a stage needs is checked once at setup (`check_images`): `full` decodes it (about 3 s per
1,000 large 1500x1200 JPEGs, spread over threads), `header` only opens it (0.1 s per 1,000; a file whose
data is damaged then stops the run when the loader reaches it, still as one line naming the file). An
unreadable file stops the run with one line naming it, or with `skip_corrupt: true` is left out and counted
in a warning.

`cache: ram | disk` decodes and resizes each file once (cnncli/data/cache.py): the splits a stage needs are
cached at setup, which is then their full image check (check_images does not apply), and each image is read
from the cache as uint8, then augmented and normalized as above (the statistics pass reads it too).
"""

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import make_dataset
from torchvision.transforms import v2

from cnncli.data.cache import ImageCache, check_cache, chw, decode_threads, load
from cnncli.data.common import SPLITS, check_fraction, check_normalization, class_weights, stratified_split
from cnncli.data.images import (
    IMAGE_EXTENSIONS,
    MODES,
    RESIZE,
    UnreadableImage,
    check_header,
    fit,
    load_image,
    pixels,
    read,
)
from cnncli.errors import ConfigError, UserError, check_choice

log = logging.getLogger(__name__)

CHECKS = ("full", "header")
# what the one-line error of an unreadable file says to do about it
SKIP_HINT = "data.skip_corrupt=true leaves {} out"
LOADER_HINT = (
    "found while loading; data.check_images=full finds such files at setup, and data.skip_corrupt=true "
    "then leaves them out"
)
# the splits each Lightning stage reads; fit also checks test, so a bad test image stops the run before training
STAGE_SPLITS = {"fit": SPLITS, "validate": ("val",), "test": ("test",), "predict": ("test",), None: SPLITS}


class ImageFiles(Dataset):
    """(path, label) samples -> (float image [C, S, S], label), augmented then normalized when given. With a
    cache, sample i is its row rows[i], already loaded and resized."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        channels: int,
        size: int,
        resize: str,
        augment=None,
        normalize=None,
        cache: ImageCache | None = None,
        rows: list[int] | None = None,
    ):
        self.samples, self.channels, self.size, self.resize = samples, channels, size, resize
        self.augment, self.normalize = augment, normalize
        self.cache, self.rows = cache, rows

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        if self.cache is not None:  # uint8 [C, S, S] -> float as read() makes it (pixels() takes [H, W, C])
            image = torch.from_numpy(pixels(self.cache.images[self.rows[i]].transpose(1, 2, 0)))
        else:
            try:
                image = torch.from_numpy(read(path, self.channels, self.size, self.resize))  # cnncli/data/images.py
            except UnreadableImage as e:  # damage the setup check did not look for (check_images: header)
                raise UnreadableImage(f"{e} ({LOADER_HINT})") from None
        if self.augment is not None:
            image = self.augment(image)
        if self.normalize is not None:
            image = self.normalize(image)
        return image, label


def _class_folders(folder: Path) -> list[str]:
    """Sorted names of the class folders (hidden ones, such as .ipynb_checkpoints, are not classes)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith((".", "__MACOSX")))


def _names(labels: list[int], class_names: list[str]) -> str:
    return ", ".join(class_names[i] for i in sorted(set(labels)))


def _listing(names: list[str], most: int = 12) -> str:
    """Names for a one-line message: the first `most` of a long list, and how many more."""
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


class ImageFolderData(L.LightningDataModule):
    """Image folders on disk with the interface of InMemoryImageData (cnncli/data/memory.py): num_classes and
    class_names are known once it is made (the class folders), normalization and class_weights after setup()."""

    def __init__(
        self,
        name: str,
        channels: int,
        image_size: int,
        num_classes: int | None = None,
        root: str | None = None,
        class_names: list[str] | None = None,
        batch_size: int = 32,
        normalization: dict | None = None,
        class_weights: str | list[float] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_val_size: int = 0,
        split_seed: int = 0,
        resize: str = "stretch",
        num_workers: int = 2,
        normalization_samples: int = 2000,
        check_images: str = "full",
        skip_corrupt: bool = False,
        cache: str = "none",
        cache_dir: str = "outputs/cache",
        augment=None,
    ):
        super().__init__()
        if root in (None, "", "???"):
            raise ConfigError("root", "required: the folder of the images, e.g. data.root=path/to/images")
        if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)):
            raise ConfigError(
                "num_classes", f"must be an integer >= 2, or null (the class folders' count), got {num_classes!r}"
            )
        check_choice("channels", channels, tuple(MODES))
        check_choice("resize", resize, RESIZE)
        check_choice("check_images", check_images, CHECKS)
        for key, value, low in (
            ("num_workers", num_workers, 0),
            ("min_val_size", min_val_size, 0),
            ("normalization_samples", normalization_samples, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction", "val_fraction + test_fraction must leave a training split")
        normalization = check_normalization(normalization, channels)
        self.name, self.channels, self.image_size = name, channels, image_size
        self.root, self.batch_size = Path(root).expanduser(), batch_size
        self.split_seed, self.min_val_size = split_seed, min_val_size
        # the classes now, from the folder listing (cheap): the model is built for them before setup
        self.class_root, self.split_dirs, self.class_names = self._classes(num_classes, class_names)
        self.num_classes = len(self.class_names)
        self.normalization = normalization  # {"mean": [...], "std": [...]}; None: computed on train in setup()
        self.class_weights_setting = class_weights
        self.class_weights: torch.Tensor | None = None  # loss weights, known after setup("fit")
        self.resize, self.num_workers, self.normalization_samples = resize, num_workers, normalization_samples
        self.check_images, self.skip_corrupt = check_images, skip_corrupt
        self.cache, self.cache_dir = check_cache(cache, cache_dir)
        self.caches: dict[str, ImageCache] = {}  # each cached split's images (cache: ram or disk)
        self.rows: dict[str, list[int]] = {}  # the cache rows of each split's readable samples
        self.augment = augment
        self.merged_note = ""  # set when a small val folder is merged into train
        self.samples: dict[str, list[tuple[str, int]]] | None = None  # the file listing, before the image check
        self.checked: dict[str, list[tuple[str, int]]] = {}  # readable samples of each checked split
        self.splits: dict[str, ImageFiles] = {}  # the Dataset of each split set up, as in memory.py

    # ---- setup ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        needed = STAGE_SPLITS.get(stage, SPLITS)
        if all(split in self.splits for split in needed):
            return
        if self.samples is None:
            self.samples = self._list_files()
            if self.merged_note and "val" in needed:
                log.info(self.merged_note)
        if self.normalization is None or stage in ("fit", None):
            needed = tuple(dict.fromkeys(("train", *needed)))
        self._check([split for split in needed if split not in self.checked])
        if "train" in self.checked and self.class_weights is None:
            labels = torch.tensor([label for _, label in self.checked["train"]])
            self.class_weights = class_weights(self.class_weights_setting, labels, self.num_classes)
        if self.normalization is None:
            self.normalization = self._statistics()
        normalize = v2.Normalize(self.normalization["mean"], self.normalization["std"])
        for split in needed:
            self.splits[split] = self._dataset(split, None, self.augment if split == "train" else None, normalize)

    def _dataset(self, split: str, pick: list[int] | None = None, augment=None, normalize=None) -> ImageFiles:
        """The split's readable samples (those at `pick` in it), read from the split's cache if there is one."""
        samples, rows = self.checked[split], self.rows[split]
        if pick is not None:
            samples, rows = [samples[i] for i in pick], [rows[i] for i in pick]
        cache = self.caches.get(split)
        return ImageFiles(samples, self.channels, self.image_size, self.resize, augment, normalize, cache, rows)

    def _classes(self, num_classes: int | None, class_names: list | None) -> tuple[Path, dict, list[str]]:
        """(the folder holding the class folders, the split folders, the class names): the sorted class
        folders, checked against num_classes and class_names where the config sets them."""
        root = self.root
        if not root.is_dir():
            raise UserError(f"data.root: {'not a folder' if root.exists() else 'no such folder'}: {root}")
        split_dirs = {split: root / split for split in SPLITS if (root / split).is_dir()}
        if split_dirs and "train" not in split_dirs:
            raise UserError(f"{root}: has {'/'.join(split_dirs)} folders but no train folder")
        class_root = split_dirs.get("train", root)
        classes = _class_folders(class_root)
        if not classes:
            raise UserError(
                f"{class_root}: no class folders (expected <root>/<class>/<images> "
                "or <root>/train|val|test/<class>/<images>)"
            )
        if class_names is not None and classes != [str(c) for c in class_names]:
            raise ConfigError(
                "data.class_names",
                f"{[str(c) for c in class_names]} differ from the class folders of {class_root}: {classes} "
                "(null: the folders' names)",
            )
        if num_classes is not None and num_classes != len(classes):
            raise ConfigError(
                "data.num_classes",
                f"{class_root} has {len(classes)} class folders ({_listing(classes)}), but data.num_classes="
                f"{num_classes} (null: as many as the class folders)",
            )
        if len(classes) < 2:
            raise UserError(f"{class_root}: one class folder ({classes[0]}); a classifier needs two or more")
        return class_root, split_dirs, classes

    def _list_files(self) -> dict[str, list[tuple[str, int]]]:
        root, classes = self.root, self.class_names
        index = {name: i for i, name in enumerate(classes)}
        found = {}
        for split, folder in (self.split_dirs or {"train": root}).items():
            unknown = sorted(set(_class_folders(folder)) - set(classes))
            if unknown:
                raise UserError(f"{folder}: class folder(s) {unknown} not among the training classes {classes}")
            found[split] = make_dataset(str(folder), index, extensions=IMAGE_EXTENSIONS, allow_empty=True)
            present = {label for _, label in found[split]}
            for name in _class_folders(folder):
                if index[name] not in present:
                    raise UserError(
                        f"{folder / name}: empty class folder (no file ending in {', '.join(IMAGE_EXTENSIONS)})"
                    )
        return self._carve(found)

    def _carve(self, found: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
        """train, val and test: the missing ones (and a val under min_val_size) carved from train."""
        pool = found["train"]
        val = found.get("val")
        if val is not None and len(val) < self.min_val_size:
            self.merged_note = (
                f"val split: {len(val)} images < data.min_val_size={self.min_val_size}: merged into "
                f"train, a {self.val_fraction:.0%} val split carved"
            )
            pool, val = pool + val, None
        total, splits = len(pool), {"val": val, "test": found.get("test")}
        for split in ("test", "val"):
            if splits[split] is None:
                # sklearn carves ceil(fraction * n): ask for half an image less, so float rounding never adds one
                size = math.ceil(getattr(self, f"{split}_fraction") * total - 1e-9)
                labels = torch.tensor([label for _, label in pool])
                try:
                    kept, carved = stratified_split(labels, (size - 0.5) / len(pool), self.split_seed)
                except UserError as e:
                    reason = str(e).split(": ", 1)[-1]  # sklearn's reason, without common.py's own preamble
                    raise UserError(
                        f"{self.root}: cannot carve a {split} split of {size} image(s) stratified by class: {reason}"
                    ) from None
                splits[split] = [pool[i] for i in sorted(carved.tolist())]
                pool = [pool[i] for i in sorted(kept.tolist())]
        return {"train": pool, **splits}

    def _check(self, splits: list[str]) -> None:
        """Every file of these splits readable (check_images, or the cache's build), or left out with
        skip_corrupt; class checks."""
        skipped = []
        for split in splits:
            samples = self.samples[split]
            if self.cache == "none":
                errors = self._check_files(samples)
            else:
                self.caches[split] = load(
                    self.cache,
                    f"{self.name} {split}",
                    [(path,) for path, _ in samples],
                    self._decode,
                    (self.channels, self.image_size, self.image_size),
                    settings={"resize": self.resize},
                    cache_dir=self.cache_dir,
                )
                errors = [self.caches[split].unreadable.get(row) for row in range(len(samples))]
            bad = [e for e in errors if e is not None]
            if bad and not self.skip_corrupt:
                more = (
                    f"and {len(bad) - 1} more; {SKIP_HINT.format('them')}" if len(bad) > 1 else SKIP_HINT.format("it")
                )
                raise UnreadableImage(f"{bad[0]} ({more})")
            skipped += bad
            self.rows[split] = [row for row, e in enumerate(errors) if e is None]
            self.checked[split] = [samples[row] for row in self.rows[split]]
            self._check_classes(split, self.checked[split])
        if skipped:
            log.warning(
                "skipped %d unreadable image file(s) (data.skip_corrupt=true), first: %s", len(skipped), skipped[0]
            )

    def _check_files(self, samples: list[tuple[str, int]]) -> list[str | None]:
        """The error line of each unreadable file (None: readable), by check_images."""
        check = (
            check_header
            if self.check_images == "header"
            else (lambda path: load_image(path, MODES[self.channels], self.image_size))
        )
        with ThreadPoolExecutor(max_workers=decode_threads()) as pool:  # PIL decodes without holding the GIL
            return list(pool.map(lambda sample: _error(check, sample[0]), samples))

    def _decode(self, files: tuple[str]) -> tuple:
        """One file as its cache row holds it: loaded and resized as read() does it, uint8 [C, S, S]."""
        picture = load_image(files[0], MODES[self.channels], self.image_size)
        return chw(fit(picture, self.image_size, self.resize)), None

    def _check_classes(self, split: str, samples: list[tuple[str, int]]) -> None:
        labels = [label for _, label in samples]
        where = f"{self.root} {split} split"
        if not labels:
            raise UserError(f"{where}: no images")
        if len(set(labels)) < 2:
            only = _names(labels, self.class_names)
            raise UserError(f"{where}: only class {only} has images; a split needs two or more")
        if split == "train" and len(set(labels)) < self.num_classes:
            missing = [name for i, name in enumerate(self.class_names) if i not in set(labels)]
            raise UserError(f"{where}: no training images of class {', '.join(missing)}")

    def _statistics(self) -> dict[str, list[float]]:
        """Per-channel mean and std (as torch.std: n - 1) of up to normalization_samples training images,
        as the model sees them (converted and resized, before augmentation)."""
        pick, size = None, len(self.checked["train"])
        if size > self.normalization_samples:
            generator = torch.Generator().manual_seed(self.split_seed)
            pick = torch.randperm(size, generator=generator)[: self.normalization_samples].sort().values.tolist()
        loader = self._loader(self._dataset("train", pick), persistent=False)
        total = torch.zeros(self.channels, dtype=torch.float64)
        squares, count = torch.zeros_like(total), 0
        for images, _ in loader:
            images = images.double()
            total += images.sum(dim=(0, 2, 3))
            squares += images.square().sum(dim=(0, 2, 3))
            count += images.numel() // self.channels
        mean = total / count
        std = ((squares - count * mean.square()) / max(count - 1, 1)).clamp_min(0).sqrt().clamp_min(1e-6)
        return {"mean": mean.tolist(), "std": std.tolist()}

    # ---- loaders -------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool = False, persistent: bool = True) -> DataLoader:
        workers = min(self.num_workers, math.ceil(len(dataset) / self.batch_size))  # no idle worker processes
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits["test"])


def _error(check, path: str) -> str | None:
    try:
        check(path)
    except UnreadableImage as e:
        return str(e)
    return None
