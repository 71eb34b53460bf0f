"""The image cache of folder data sets (data.cache: none | ram | disk; cnncli/data/cache.py): the same pixels as
no cache, DataLoader workers reading the one copy, a disk cache reused until its files or size change, a killed
build that leaves nothing a later run reads, and a cache too big refused in one line. In-process but for one
`cnncli train` with a disk cache and the killed build."""

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from multiprocessing.reduction import ForkingPickler  # with torch's reductions: torch.utils.data imports them

import numpy as np
import pytest
import torch
import yaml
from conftest import QUIET, cnncli, cnncli_here
from formats import make_split
from PIL import Image
from test_data_folder import IDENTITY3, datamodule, truncate
from test_segmentation_data import make_folder
from torch.utils.data import DataLoader

from cnncli.data import cache as image_cache
from cnncli.data.images import UnreadableImage
from cnncli.data.segfolder import SegFolderData
from cnncli.errors import ConfigError

SPLITS = ("train", "val", "test")


def cached(root, kind, cache_dir, *overrides):
    return datamodule(
        f"data.root={root}", f"data.cache={kind}", f"data.cache_dir={cache_dir}", "data.num_classes=2", *overrides
    )


def folders(cache_dir):
    """The disk caches built under cache_dir (the temporary folders and locks are hidden)."""
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(
    "options", [("data.image_size=12",), ("data.image_size=10", "data.channels=1", "data.resize=center_crop")]
)
def test_ram_and_disk_give_the_pixels_and_statistics_no_cache_gives(tmp_path, options):
    root = tmp_path / "mix"
    make_split(root, {"a": 8, "b": 10}, size=(30, 20))  # grayscale JPEGs and RGB PNGs, not square
    plain = cached(root, "none", tmp_path / "cache", *options)
    for kind in ("ram", "disk"):
        dm = cached(root, kind, tmp_path / "cache", *options)
        assert dm.normalization == plain.normalization  # the statistics pass reads the cache
        for split in SPLITS:
            assert dm.splits[split].samples == plain.splits[split].samples
            for i in range(len(plain.splits[split])):
                assert torch.equal(dm.splits[split][i][0], plain.splits[split][i][0]), (kind, split, i)
    assert len(folders(tmp_path / "cache")) == 3  # one per split


def test_a_disk_cache_is_reused_and_rebuilt_when_a_file_or_the_size_changes(tmp_path, caplog):
    root = tmp_path / "data"
    make_split(root, {"a": 6, "b": 6}, mix=False, size=(16, 16))
    cache_dir = tmp_path / "cache"
    args = (root, "disk", cache_dir, "data.image_size=8", "data.channels=1", "data.normalization={mean: [0], std: [1]}")
    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        first = cached(*args)
    assert caplog.text.count(" built in ") == 3
    built = {name: os.stat(cache_dir / name / "images.npy") for name in folders(cache_dir)}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        again = cached(*args)
    assert " built in " not in caplog.text and caplog.text.count(" images read from ") == 3
    for name, stat in built.items():  # the same files, not written again
        now = os.stat(cache_dir / name / "images.npy")
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert torch.equal(again.splits["train"][0][0], first.splits["train"][0][0])

    # a training image rewritten: that split's cache is built again and holds the new pixels
    path = first.splits["train"].samples[0][0]
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        changed = cached(*args)
    assert caplog.text.count(" built in ") == 1 and "imagefolder train" in caplog.text
    assert torch.allclose(changed.splits["train"][0][0], torch.full((1, 8, 8), 200 / 255))
    assert len(folders(cache_dir)) == 4
    # another image size: caches of their own, the others kept for the runs that use them
    cached(root, "disk", cache_dir, "data.image_size=6", "data.channels=1", "data.normalization={mean: [0], std: [1]}")
    assert len(folders(cache_dir)) == 7 and sum("1x6x6" in name for name in folders(cache_dir)) == 3


def test_a_damaged_disk_cache_is_built_again(tmp_path, caplog):
    root = tmp_path / "data"
    make_split(root, {"a": 6, "b": 6}, mix=False, size=(16, 16))
    args = (root, "disk", tmp_path / "cache", "data.image_size=8", IDENTITY3)
    cached(*args)
    good = cached(root, "none", tmp_path / "cache", "data.image_size=8", IDENTITY3)
    for name in folders(tmp_path / "cache"):  # as if copied in part
        truncate(tmp_path / "cache" / name / "images.npy")
    caplog.clear()  # the first build's lines, when an earlier test left the logger at INFO
    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        again = cached(*args)
    assert caplog.text.count("is damaged") == 3 and caplog.text.count(" built in ") == 3
    for split in SPLITS:
        assert all(
            torch.equal(again.splits[split][i][0], good.splits[split][i][0]) for i in range(len(good.splits[split]))
        )


def test_unreadable_files_are_recorded_in_the_cache_and_named_in_one_line(tmp_path):
    root = tmp_path / "bad"
    make_split(root, {"a": 10, "b": 10}, mix=False, size=(32, 32))
    bad = root / "a" / "003.jpeg"
    truncate(bad)
    args = (root, "disk", tmp_path / "cache", "data.image_size=8")
    with pytest.raises(UnreadableImage, match="truncated") as e:
        cached(*args)
    assert str(bad) in str(e.value) and str(e.value).endswith("(data.skip_corrupt=true leaves it out)")
    (train,) = folders(tmp_path / "cache")  # the split's cache, the unreadable file recorded in it
    recorded = json.loads((tmp_path / "cache" / train / "meta.json").read_text())["unreadable"]
    assert [str(bad) in line for line in recorded.values()] == [True]
    dm = cached(*args, "data.skip_corrupt=true")  # read from it, the file left out
    assert sum(len(dm.splits[s]) for s in SPLITS) == 19 and str(bad) not in {p for p, _ in dm.splits["train"].samples}
    with pytest.raises(UnreadableImage, match="truncated") as again:  # the recorded error, the same line
        cached(*args)
    assert str(again.value) == str(e.value)


def test_a_ram_cache_the_memory_cannot_hold_is_refused_in_one_line(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    make_split(root, {"a": 6, "b": 6}, mix=False, size=(16, 16))
    monkeypatch.setattr(image_cache, "available_memory", lambda: 4000)
    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        with pytest.raises(ConfigError, match="data.cache: ram: the imagefolder train cache needs 6.0 KiB") as e:
            cached(root, "ram", tmp_path / "cache", "data.image_size=16")
    assert "3.9 KiB available" in str(e.value) and "data.cache=disk" in str(e.value)
    # printed before it is built: the images, their shape and what they take
    assert "data.cache=ram: imagefolder train, 8 images x 3x16x16 = 6.0 KiB of shared memory" in caplog.text
    monkeypatch.setattr(image_cache, "available_memory", lambda: 2**40)
    monkeypatch.setattr(image_cache, "shared_memory_free", lambda: 5000)  # a container's small /dev/shm
    with pytest.raises(ConfigError, match=r"/dev/shm has 4.9 KiB free \(in a container, docker run --shm-size"):
        cached(root, "ram", tmp_path / "cache", "data.image_size=16")
    # as the user sees it: one line, exit 2
    monkeypatch.setattr(image_cache, "shared_memory_free", lambda: None)
    monkeypatch.setattr(image_cache, "available_memory", lambda: 4000)
    result = cnncli_here(
        "train", "data=imagefolder", f"data.root={root}", "data.image_size=16", "data.cache=ram", "model=simple_cnn",
        f"hydra.run.dir={tmp_path / 'run'}", *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("error: data.cache: ram: the imagefolder train cache needs"), line
    bad = cnncli_here("train", "data=imagefolder", f"data.root={root}", "data.cache=memory", cwd=tmp_path)
    assert bad.returncode == 2 and "data.cache: 'memory' is not one of: none, ram, disk" in bad.stderr


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_loader_workers_read_the_one_cache_not_copies(tmp_path, kind):
    root = tmp_path / "data"
    make_split(root, {"a": 8, "b": 8}, mix=False, size=(64, 64))  # shrunk: no pixel stays at 255 by chance
    dm = cached(root, kind, tmp_path / "cache", "data.image_size=32", IDENTITY3)
    dataset = dm.splits["train"]
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    assert torch.cat([x for x, _ in loader]).max() < 1  # random pixels; the workers now run
    # every pixel set to 255 after the workers started: a worker holding a copy would not see it
    if kind == "ram":
        dataset.cache.images[:] = 255
    else:
        writer = np.load(dataset.cache.folder / "images.npy", mmap_mode="r+")  # the file itself, shared
        writer[:] = 255
        writer.flush()
    assert torch.cat([x for x, _ in loader]).min() == 1  # both workers read the same memory as this process
    # a spawned worker gets the dataset pickled: the cache's handle or folder, not its pixels
    assert len(ForkingPickler.dumps(dataset.cache)) < 1000 < dataset.cache.images.nbytes  # 16 x 3 x 32 x 32 bytes
    sent = ForkingPickler.dumps(dataset)  # the file list as well: its length depends on the tmp path
    if kind == "disk":
        received = pickle.loads(sent)
        assert isinstance(received.cache.images, np.memmap) and torch.equal(received[0][0], dataset[0][0])
    else:
        assert dataset.cache.tensors[0].is_shared()


SLOW_BUILD = """
import sys, time
import numpy as np
from cnncli.data import cache

def slow(files):
    time.sleep(0.1)
    return np.full((1, 4, 4), 7, np.uint8), None

files = [(path,) for path in sys.argv[2:]]
cache.load("disk", "slow train", files, slow, (1, 4, 4), cache_dir=sys.argv[1])
"""


def test_a_killed_build_leaves_no_cache_and_the_next_run_builds_it(tmp_path, caplog):
    files = [tmp_path / f"{i}.txt" for i in range(160)]  # the key stats them; the decode below ignores them
    for path in files:
        path.write_text(str(path))
    cache_dir = tmp_path / "cache"
    build = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(cache_dir), *map(str, files)])
    deadline = time.monotonic() + 60
    while not list(cache_dir.glob(".*.tmp-*/images.npy")) and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # some rows decoded, most not: 160 x 0.1 s take 2 s on 8 threads
    assert build.poll() is None, "the build ended before it was killed"
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert folders(cache_dir) == [] and list(cache_dir.glob(".*.tmp-*"))  # only the hidden half-built folder

    def fast(row):
        return np.full((1, 4, 4), 9, np.uint8), None

    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        built = image_cache.load("disk", "slow train", [(str(p),) for p in files], fast, (1, 4, 4), cache_dir=cache_dir)
    assert " built in " in caplog.text and (built.images == 9).all() and len(built) == 160
    assert len(folders(cache_dir)) == 1 and not list(cache_dir.glob(".*.tmp-*"))  # the killed build's left removed


def test_a_segmentation_folder_caches_images_and_masks(tmp_path, caplog):
    make_folder(tmp_path / "cells", sizes=(("train", 10), ("test", 4)), side=24)
    options = {"name": "segfolder", "channels": 3, "image_size": 16, "class_names": ["background", "a", "b", "c"]}

    def data(kind):
        module = SegFolderData(root=str(tmp_path / "cells"), cache=kind, cache_dir=str(tmp_path / "cache"), **options)
        module.setup("fit")
        return module

    plain = data("none")
    with caplog.at_level(logging.INFO, logger="cnncli.data.cache"):
        runs = [data("ram"), data("disk"), data("disk")]
    assert caplog.text.count(" built in ") == 3 and caplog.text.count(" images and masks read from ") == 3
    for module in runs:
        assert module.normalization == plain.normalization
        for split in SPLITS:
            assert torch.equal(module.splits[split].images, plain.splits[split].images)
            assert torch.equal(module.splits[split].masks, plain.splits[split].masks)


def test_cli_train_with_a_disk_cache_builds_it_beside_the_outputs(tmp_path):
    root = tmp_path / "data"
    make_split(root, {"a": 10, "b": 14}, size=(40, 30))
    run = tmp_path / "run"
    result = cnncli(
        "train", "data=imagefolder", f"data.root={root}", "data.image_size=16", "data.cache=disk", "model=simple_cnn",
        "trainer.max_epochs=1", f"hydra.run.dir={run}", *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data.cache=disk: imagefolder train, 18 images x 3x16x16 = 13.5 KiB in" in result.stdout
    assert result.stdout.count(" built in ") == 3
    caches = folders(tmp_path / "outputs" / "cache")  # under the working directory's outputs/, not the run's
    assert [name.rsplit("-", 1)[0] for name in caches] == [f"imagefolder-{s}-3x16x16" for s in ("test", "train", "val")]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    # stored absolute, as data.root: an eval from another folder reads the same cache
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["cache_dir"] == str(tmp_path / "outputs" / "cache")
