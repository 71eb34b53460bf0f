"""The image cache of folder data sets (`data.cache`: none | ram | disk): each image after the deterministic load
and resize (cnncli/data/images.py), as uint8 [N, C, S, S] at the run's image size and channels, with the
segmentation folders' masks as uint8 [N, S, S]. Augmentation and normalization come after it, so a cached
image is still augmented afresh every epoch; only the JPEG or PNG decode and the resize are done once.

`ram`: one array in shared memory (a torch storage in /dev/shm), built at setup; DataLoader workers map the
same pages, forked or spawned (torch sends the storage's handle, not its bytes). Before it is built, one line
says the memory it takes; a cache that would take more than SHARE of the available memory (or more than
/dev/shm's free space, which containers often keep small) is refused with one line.

`disk`: a folder under `data.cache_dir` holding images.npy (and masks.npy), read memory-mapped: the page
cache holds it once for every process and every run on the machine. Its name carries a hash of everything
the pixels depend on (the file paths, sizes and modification times, channels, size, resize, the cache
format), so a changed data set or image size builds a new cache and two runs of the same data share one.
A cache is built in a hidden temporary folder beside it and renamed into place when complete, under a lock
file: a killed build leaves no cache that a later run would read (its temporary folder is removed by the
next build), and a second run of the same data waits for the first's build and reads it. A cache whose files
were damaged (say, copied in part) is rebuilt, with a warning.

Building decodes every file (threads: PIL decodes without holding the GIL), so it is the setup's full image
check: an unreadable file is recorded (its message kept in the cache's metadata) and the caller decides
whether it stops the run or is left out.
"""

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from cnncli.data.images import UnreadableImage
from cnncli.errors import ConfigError, UserError, check_choice

log = logging.getLogger(__name__)

CACHES = ("none", "ram", "disk")
FORMAT = 1  # what a cache holds and how: raise it when that changes, and every older cache is rebuilt
SHARE = 0.8  # the most of the available memory (or free disk) a cache may take: the run needs the rest
SHM = "/dev/shm"  # where torch's shared storages live (Linux)

# decode(files of one row) -> (uint8 image [C, S, S], uint8 mask [S, S] or None); UnreadableImage: recorded
Decoder = Callable[[tuple[str, ...]], tuple[np.ndarray, np.ndarray | None]]


def check_cache(cache, cache_dir) -> tuple[str, Path]:
    """data.cache checked, and data.cache_dir made absolute now: the cache stays where the run started,
    whatever the working directory later is."""
    check_choice("cache", cache, CACHES)
    return cache, Path(cache_dir).expanduser().absolute()


def decode_threads() -> int:
    """Threads that decode image files at setup (the image check, a cache's build)."""
    return max(1, min(8, os.cpu_count() or 1))


def chw(picture: Image.Image) -> np.ndarray:
    """A PIL image ("L" or "RGB") as uint8 [C, H, W]."""
    array = np.asarray(picture, np.uint8)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def size_text(count: float) -> str:
    """Bytes as people read them: 512 B, 7.8 MiB, 1.2 GiB."""
    if count < 1024:
        return f"{count:,.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            return f"{count:,.1f} {unit}"
    raise AssertionError  # the loop returns at GiB


def available_memory() -> int:
    """Bytes this process can still take: the kernel's MemAvailable, within the container's (cgroup) limit."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:  # no /proc (macOS): free physical pages
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            left = int(Path(limit).read_text()) - int(Path(usage).read_text())
        except (OSError, ValueError):  # no such cgroup, or "max": no limit
            continue
        available = min(available, max(left, 0))
    return available


def shared_memory_free() -> int | None:
    """Free bytes of /dev/shm (Docker gives it 64 MiB unless run with --shm-size); None where there is none."""
    try:
        stat = os.statvfs(SHM)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class ImageCache:
    """uint8 images [N, C, S, S], uint8 masks [N, S, S] or None, and `unreadable`: {row: the file's one-line
    error} of the rows whose files could not be read (their pixels are zeros: leave them out).

    Pickled for a spawned DataLoader worker it does not copy the pixels: a disk cache sends its folder (the
    worker maps the same files), a ram cache its shared torch storages (torch sends their handles)."""

    def __init__(self, images, masks, unreadable: dict[int, str], folder: Path | None = None):
        self.tensors = None
        if not isinstance(images, np.ndarray):  # torch tensors in shared memory (ram)
            self.tensors = images, masks
            images, masks = images.numpy(), None if masks is None else masks.numpy()
        self.images, self.masks, self.unreadable, self.folder = images, masks, unreadable, folder

    def __len__(self) -> int:
        return len(self.images)

    def as_tensors(self) -> tuple:
        """(images, masks) as torch tensors on the same memory."""
        import torch

        if self.tensors is not None:
            return self.tensors
        return tuple(None if array is None else torch.from_numpy(array) for array in (self.images, self.masks))

    def __getstate__(self) -> dict:
        if self.folder is not None:
            return {"folder": self.folder, "unreadable": self.unreadable}
        if self.tensors is not None:
            return {"tensors": self.tensors, "unreadable": self.unreadable}
        return self.__dict__  # the private arrays of a `none` cache: copied, as any other array

    def __setstate__(self, state: dict) -> None:
        if "folder" in state:
            images, masks = _open_arrays(state["folder"])
            self.__init__(images, masks, state["unreadable"], state["folder"])
        elif "tensors" in state:
            self.__init__(*state["tensors"], state["unreadable"])
        else:
            self.__dict__.update(state)


def load(
    kind: str,
    what: str,
    files: list[tuple[str, ...]],
    decode: Decoder,
    shape: tuple[int, int, int],
    masks: bool = False,
    settings: dict | None = None,
    cache_dir: Path | None = None,
) -> ImageCache:
    """The cache of one split: `files` holds each row's files (an image, or an image and its mask), `shape` is
    (C, S, S), `settings` whatever else the pixels depend on (resize, palette, ...), `what` names the data set
    and split in messages and in the disk cache's folder name. Kind `none` decodes into private memory (what
    the in-memory segmentation folders hold without a cache)."""
    if kind == "disk":
        return _disk(what, files, decode, shape, masks, settings or {}, Path(cache_dir))
    if kind == "ram":
        import torch  # here: only a ram cache needs torch's shared storages

        _check_room(kind, what, len(files), shape, masks, available_memory(), shared_memory_free(), None)
        # torch.empty's pages are not touched before share_memory_ moves the storage: no second copy in memory
        images = torch.empty((len(files), *shape), dtype=torch.uint8).share_memory_()
        mask_array = torch.empty((len(files), *shape[1:]), dtype=torch.uint8).share_memory_() if masks else None
        cache = ImageCache(images, mask_array, {})
    else:
        mask_array = np.empty((len(files), *shape[1:]), np.uint8) if masks else None
        cache = ImageCache(np.empty((len(files), *shape), np.uint8), mask_array, {})
    cache.unreadable = _fill(cache.images, cache.masks, files, decode)
    return cache


def _check_room(kind, what, count, shape, masks, available, shm_free, folder) -> int:
    """The line saying what the cache takes; one line refusing it where it does not fit. Returns its bytes."""
    needed = count * int(np.prod(shape)) + (count * shape[1] * shape[2] if masks else 0)
    place = f"in {folder}" if kind == "disk" else "of shared memory"
    room = "free on its disk" if kind == "disk" else "available"
    log.info(
        "data.cache=%s: %s, %s images%s x %s = %s %s (%s %s)",
        kind,
        what,
        f"{count:,}",
        " and masks" if masks else "",
        "x".join(map(str, shape)),
        size_text(needed),
        place,
        size_text(available),
        room,
    )
    advice = "a smaller data.image_size" + (", or data.cache=disk" if kind == "ram" else " or another data.cache_dir")
    if needed > SHARE * available:
        raise ConfigError(
            "data.cache",
            f"{kind}: the {what} cache needs {size_text(needed)}, more than {SHARE:.0%} of the "
            f"{size_text(available)} {room}; use {advice}",
        )
    if shm_free is not None and needed > shm_free:
        raise ConfigError(
            "data.cache",
            f"ram: the {what} cache needs {size_text(needed)}, {SHM} has {size_text(shm_free)} free (in a "
            f"container, docker run --shm-size=8g raises it); use {advice}",
        )
    return needed


def _fill(images: np.ndarray, masks: np.ndarray | None, files: list[tuple[str, ...]], decode: Decoder) -> dict:
    """Decode every row into the arrays; {row: message} of the unreadable files. Any other error stops it."""

    def one(row: int) -> str | None:
        try:
            image, mask = decode(files[row])
        except UnreadableImage as e:
            images[row] = 0
            return str(e)
        images[row] = image
        if masks is not None:
            masks[row] = mask
        return None

    pool = ThreadPoolExecutor(max_workers=decode_threads())
    try:
        errors = list(pool.map(one, range(len(files))))  # an error stops it at the first file, in order
    finally:
        pool.shutdown(cancel_futures=True)  # after an error, the files not started are not decoded
    return {row: error for row, error in enumerate(errors) if error is not None}


# ---- disk ---------------------------------------------------------------------------------------------------
def key(files: list[tuple[str, ...]], shape: tuple, masks: bool, settings: dict) -> str:
    """The hash of everything a cache's pixels depend on: each file's absolute path, size and modification
    time (in the rows' order), the shape, masks or not, the caller's settings and FORMAT."""
    h = hashlib.sha256(json.dumps([FORMAT, list(shape), masks, settings], sort_keys=True).encode())
    for row in files:
        for path in row:
            stat = os.stat(path)
            h.update(f"\0{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return h.hexdigest()


def _open_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    # copy-on-write mappings: the pages are the file's, shared by every process, and a write (nothing should
    # write) would change a private copy, never the cache other runs read; writable, so torch takes them as is
    images = np.load(folder / "images.npy", mmap_mode="c")
    masks = np.load(folder / "masks.npy", mmap_mode="c") if (folder / "masks.npy").exists() else None
    return images, masks


def _open(folder: Path, digest: str, count: int, shape: tuple, masks: bool) -> ImageCache:
    """The cache in `folder`, checked against what it must hold; ValueError or OSError: it is damaged."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("key") != digest:
        raise ValueError("it was built for other files")
    images, mask_array = _open_arrays(folder)  # numpy: ValueError for a file shorter than its header says
    if images.shape != (count, *shape) or images.dtype != np.uint8:
        raise ValueError(f"images.npy holds {images.dtype} {images.shape}")
    if masks and (mask_array is None or mask_array.shape != (count, *shape[1:])):
        raise ValueError("masks.npy is missing or of another shape")
    return ImageCache(images, mask_array, {int(row): e for row, e in meta["unreadable"].items()}, folder)


def _disk(what, files, decode, shape, masks, settings, cache_dir: Path) -> ImageCache:
    digest = key(files, shape, masks, settings)
    folder = cache_dir / f"{what.replace(' ', '-')}-{'x'.join(map(str, shape))}-{digest[:16]}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"data.cache_dir={cache_dir}: cannot make the folder ({e.strerror})") from None
    with open(cache_dir / f".{folder.name}.lock", "a") as lock:  # held while the cache is read or built
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run is building this very cache: read it when it is done
            log.info("data.cache=disk: waiting for another run building %s", folder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.exists():
            try:
                cache = _open(folder, digest, len(files), shape, masks)
            except (OSError, ValueError, KeyError, AttributeError) as e:
                log.warning("data.cache=disk: %s is damaged (%s): building it again", folder, e)
                shutil.rmtree(folder, ignore_errors=True)
            else:
                count = f"{len(files):,} images{' and masks' if masks else ''}"
                log.info("data.cache=disk: %s, %s read from %s", what, count, folder)
                return cache
        return _build(folder, what, files, decode, shape, masks, digest)


def _build(folder: Path, what, files, decode, shape, masks, digest) -> ImageCache:
    """Build the cache in a temporary folder and rename it into place once complete (called under the lock)."""
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # what a killed build left
        shutil.rmtree(stale, ignore_errors=True)
    needed = _check_room("disk", what, len(files), shape, masks, shutil.disk_usage(folder.parent).free, None, folder)
    started = time.perf_counter()
    temporary = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    temporary.mkdir()
    try:
        images = _new_array(temporary / "images.npy", (len(files), *shape))
        mask_array = _new_array(temporary / "masks.npy", (len(files), *shape[1:])) if masks else None
        unreadable = _fill(images, mask_array, files, decode)
        for array in (images, mask_array):
            if array is not None:
                array.flush()  # msync: on disk before the folder is renamed into place
        meta = {"format": FORMAT, "key": digest, "what": what, "count": len(files), "bytes": needed}
        meta["unreadable"] = {str(row): error for row, error in unreadable.items()}
        with open(temporary / "meta.json", "w") as out:
            json.dump(meta, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        del images, mask_array  # unmapped before the rename
        os.replace(temporary, folder)  # atomic: the cache appears complete, or not at all
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # after an error (a file that stops the run): nothing left
    took = time.perf_counter() - started
    log.info("data.cache=disk: %s built in %.1f s (%s images/s)", what, took, f"{len(files) / max(took, 1e-9):,.0f}")
    return _open(folder, digest, len(files), shape, masks)


def _new_array(path: Path, shape: tuple) -> np.memmap:
    """A uint8 .npy file of `shape`, its blocks reserved first: a full disk is an error here rather than a
    crash (SIGBUS) when a page of the mapped file is first written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
            except OSError as e:
                raise UserError(f"data.cache=disk: cannot write {path} ({e.strerror})") from None
    return array
