"""Images in HDF5 files, as the course's hand-signs (SIGNS) set ships them: `<root>/train_signs.h5` holding
`train_set_x` uint8 [N, 64, 64, 3], `train_set_y` [N] (or [1, N]) and `list_classes`, and `<root>/test_signs.h5`
holding `test_set_x`, `test_set_y`, `list_classes`. Loaded whole into memory as one uint8 tensor (needs h5py).

Configurable (conf/data/hdf5.yaml): the file globs (`train_file`, `test_file`, relative to `root`, each must
match exactly one file), the data set names (`x_key`, `y_key`: explicit names or patterns where `{split}`
is `train` or `test`), `classes_key` (null: none), the image `layout` (NHWC, as the course's files, or
NCHW; 3-D arrays are [N, H, W] grey images). Pixels are uint8, or floats in [0, 1] (scaled to 0..255).
A stratified `val_fraction` of the training file (fixed by `split_seed`) is carved out for validation.
Class names: `class_names` from the config, else the file's `list_classes`, else "0" .. "num_classes-1".
A missing file or key, or data of the wrong shape, stops the run with one line naming the path and key.
"""

from pathlib import Path

import numpy as np
import torch

from cnncli.data.common import check_fraction, check_labels, stratified_split
from cnncli.data.memory import InMemoryImageData
from cnncli.errors import UserError, check_choice

Split = tuple[torch.Tensor, torch.Tensor]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UserError("data=hdf5 needs the h5py package: pip install h5py") from None
    return h5py


class HDF5Data(InMemoryImageData):
    def __init__(
        self,
        root: str = "data",
        train_file: str = "train_*.h5",
        test_file: str = "test_*.h5",
        x_key: str = "{split}_set_x",
        y_key: str = "{split}_set_y",
        classes_key: str | None = "list_classes",
        layout: str = "NHWC",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        class_names: list[str] | None = None,
        **common,
    ):
        super().__init__(class_names=class_names or [], **common)
        check_choice("layout", layout, ("NHWC", "NCHW"))
        self.root = Path(root).expanduser()
        self.files = {"train": train_file, "test": test_file}
        self.x_key, self.y_key, self.classes_key, self.layout = x_key, y_key, classes_key, layout
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.split_seed = split_seed

    def path(self, split: str) -> Path:
        pattern = self.files[split]
        matches = sorted(self.root.glob(pattern))
        if not matches:
            raise UserError(f"data.{split}_file: no file matches {(self.root / pattern).resolve()}")
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            where = (self.root / pattern).resolve()
            raise UserError(f"data.{split}_file: {where} matches {len(matches)} files ({names}); name one")
        return matches[0]

    def read(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
        h5py = _h5py()
        path = self.path(split)
        try:
            file = h5py.File(path, "r")
        except OSError as e:
            raise UserError(f"{path}: cannot open as HDF5 ({e})") from None
        with file:
            x_key, y_key = (key.format(split=split) for key in (self.x_key, self.y_key))
            x, y = (self._dataset(file, path, key, option) for key, option in ((x_key, "x_key"), (y_key, "y_key")))
            classes = None
            if self.classes_key is not None and self.classes_key in file:
                values = np.asarray(file[self.classes_key]).ravel()
                classes = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        images = self._images(x, path, x_key)
        labels = y.reshape(-1)
        if not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
            raise UserError(
                f"{path}: {y_key} must hold one integer label per image ({len(images)}), "
                f"got {labels.dtype} of shape {list(y.shape)}"
            )
        return images, torch.from_numpy(labels.astype(np.int64)), classes

    @staticmethod
    def _dataset(file, path: Path, key: str, option: str) -> np.ndarray:
        if key not in file:
            raise UserError(f"{path}: no data set {key!r} (data.{option}); the file holds: {', '.join(file.keys())}")
        return np.asarray(file[key])

    def _images(self, x: np.ndarray, path: Path, key: str) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and self.layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        elif x.ndim != 4:
            shapes = "[N, H, W, C], [N, C, H, W] or [N, H, W]"
            raise UserError(f"{path}: {key} has shape {list(x.shape)}; expected {shapes}")
        if x.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(x))
        if np.issubdtype(x.dtype, np.floating) and x.size and 0 <= x.min() and x.max() <= 1:
            return torch.from_numpy(np.round(x * 255).astype(np.uint8))
        raise UserError(f"{path}: {key} must be uint8, or floats in [0, 1]; got {x.dtype}")

    def load(self) -> dict[str, Split]:
        splits = {split: self.read(split) for split in ("train", "test")}
        for split, (_, labels, classes) in splits.items():
            where = f"{self.path(split)} ({self.y_key.format(split=split)})"
            check_labels(labels, self.num_classes, where)
            if classes is not None and len(classes) != self.num_classes:
                raise UserError(
                    f"{self.path(split)}: {self.classes_key} lists {len(classes)} classes, "
                    f"data.num_classes is {self.num_classes}"
                )
        if not self.class_names:
            classes = splits["train"][2]
            self.class_names = classes if classes is not None else [str(i) for i in range(self.num_classes)]
        images, labels, _ = splits["train"]
        kept, val = stratified_split(labels, self.val_fraction, self.split_seed)
        return {
            "train": (images[kept], labels[kept]),
            "val": (images[val], labels[val]),
            "test": splits["test"][:2],
        }
