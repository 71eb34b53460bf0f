"""Files in each data set's real format, written for tests: IDX (the MNIST family), CIFAR's pickled batches,
SVHN's .mat, the course's hand-signs .h5, and image folders of JPEGs and PNGs."""

import gzip
import pickle
import struct
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

SIZES = {"train": 100, "test": 20}  # 10 classes: the 10% val carve holds one image of each


def images_and_labels(n: int, shape: tuple, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), labels


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """IDX (LeCun's MNIST format): 0, 0, type 0x08 (uint8), ndim; big-endian int32 sizes; the bytes."""
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        Path(f"{path}.gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = True) -> dict:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = images_and_labels(SIZES[split], (28, 28), seed=len(split))
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8), gz)
        arrays[split] = x, y
    return arrays


def write_cifar(root: Path, hundred: bool = False) -> dict:
    """CIFAR's python pickles: rows of 3072 bytes (R plane, G plane, B plane), labels as a list."""
    arrays = {}
    num_classes = 100 if hundred else 10
    sizes = {"train": 1000, "test": 100} if hundred else SIZES  # CIFAR-100: 10 per class, the val carve one
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        x, y = images_and_labels(sizes[split], (3, 32, 32), num_classes, seed=len(split))
        arrays[split] = x, y
        if hundred:
            batches = {split: slice(None)}
            key = "fine_labels"
        else:  # five training batches, as the real set
            key = "labels"
            batches = {"test_batch": slice(None)}
            if split == "train":
                batches = {f"data_batch_{i + 1}": slice(i * 20, (i + 1) * 20) for i in range(5)}
        for name, part in batches.items():
            entry = {"data": x[part].reshape(-1, 3072), key: y[part].tolist()}
            if hundred:
                entry["coarse_labels"] = (y[part] // 5).tolist()
            (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]}
    if not hundred:
        meta = {"label_names": [f"k{i}" for i in range(10)]}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))
    return arrays


def write_svhn(root: Path) -> dict:
    """SVHN's .mat: X [32, 32, 3, N] uint8, y [N, 1] with the digit 0 stored as 10."""
    arrays = {}
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        x, y = images_and_labels(SIZES[split], (3, 32, 32), seed=len(split))
        mat = {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None]}
        scipy.io.savemat(root / f"{split}_32x32.mat", mat)
        arrays[split] = x, y
    return arrays


def write_signs(root: Path, n: dict | None = None, **replace) -> dict:
    """The course's hand-signs files: {split}_set_x [N, 64, 64, 3] uint8, {split}_set_y [N], list_classes;
    `replace` swaps in the training file's `x` or `y`."""
    arrays = {}
    root.mkdir(parents=True, exist_ok=True)
    for split, size in (n or {"train": 60, "test": 20}).items():
        x, y = images_and_labels(size, (64, 64, 3), num_classes=6, seed=len(split))
        with h5py.File(root / f"{split}_signs.h5", "w") as f:
            f[f"{split}_set_x"] = replace.get("x", x) if split == "train" else x
            f[f"{split}_set_y"] = replace.get("y", y) if split == "train" else y
            f["list_classes"] = np.arange(6)
        arrays[split] = x, y
    return arrays


def make_images(folder, count, kind="gray_jpeg", size=(40, 30), level=None, seed=0):
    """`count` random images: grayscale JPEGs or RGB PNGs, of `size` (w, h); level: mean brightness 0..255."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        shape = (size[1], size[0]) if kind == "gray_jpeg" else (size[1], size[0], 3)
        low = 0 if level is None else max(level - 40, 0)
        high = 256 if level is None else min(level + 40, 256)
        pixels = rng.integers(low, high, shape, dtype=np.uint8)
        path = folder / (f"{i:03d}.jpeg" if kind == "gray_jpeg" else f"{i:03d}.png")
        Image.fromarray(pixels, "L" if kind == "gray_jpeg" else "RGB").save(path)
        paths.append(path)
    return paths


def make_split(root, counts: dict[str, int], mix=True, **kw):
    """<root>/<class>/ images per class: half grayscale JPEG, half RGB PNG when mix."""
    for c, (name, n) in enumerate(counts.items()):
        jpegs = n // 2 if mix else n
        make_images(root / name, jpegs, "gray_jpeg", seed=c, **kw)
        if n - jpegs:
            pngs = make_images(root / name / "png", n - jpegs, "rgb_png", seed=c + 100, **kw)
            for p in pngs:  # next to the JPEGs, names not clashing
                p.rename(root / name / f"rgb_{p.name}")
            (root / name / "png").rmdir()


def write_pets(root: Path, sizes: dict | None = None, side: int = 40) -> dict:
    """The Oxford-IIIT Pet layout torchvision reads: oxford-iiit-pet/images/<name>.jpg, annotations/trimaps/
    <name>.png (1 pet, 2 background, 3 border) and annotations/trainval.txt, test.txt ("<name> <class> <species>
    <breed>"). Each pet is a disc with a 1-pixel border ring. Returns the trimaps by name."""
    folder = root / "oxford-iiit-pet"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    rng, trimaps = np.random.default_rng(0), {}
    y, x = np.mgrid[0:side, 0:side]
    for split, count in (sizes or {"trainval": 12, "test": 4}).items():
        lines = []
        for i in range(count):
            name = f"Abyssinian_{split}_{i}"
            cy, cx, radius = *rng.uniform(12, side - 12, 2), rng.uniform(5, 10)
            distance = np.hypot(y - cy, x - cx)
            trimap = np.where(distance < radius, 1, np.where(distance < radius + 1.5, 3, 2)).astype(np.uint8)
            image = np.where(trimap[..., None] == 1, [200, 120, 40], [40, 90, 160]) + rng.normal(0, 8, (side, side, 3))
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / "images" / f"{name}.jpg")
            Image.fromarray(trimap).save(folder / "annotations" / "trimaps" / f"{name}.png")
            lines.append(f"{name} 1 1 1")
            trimaps[name] = trimap
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return trimaps
