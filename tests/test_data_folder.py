"""Image folders on disk (cnncli/data/folder.py; conf/data/imagefolder.yaml and chestxray.yaml): layouts,
splits, conversion, statistics, class weights and bad input, on folders generated here. Most checks run
in-process on the composed configs; the CLI runs only where its own behaviour is the point."""

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from conftest import QUIET, cnncli, cnncli_here, train
from formats import make_split
from hydra import compose, initialize_config_dir
from PIL import Image

from cnncli import config_dir
from cnncli.config import call_target
from cnncli.data.folder import ImageFiles
from cnncli.data.images import UnreadableImage
from cnncli.errors import ConfigError, UserError


def datamodule(*overrides, data="imagefolder", augment=None, stage="fit"):
    """The data module as `cnncli train data=... <overrides>` builds it, set up for `stage`."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", "data.num_workers=0", *overrides])
    dm = call_target("data", cfg.data, augment=augment)
    if stage:
        dm.setup(stage)
    return dm


def counts(samples, n=2):
    return torch.bincount(torch.tensor([label for _, label in samples]), minlength=n).tolist()


def one_line_error(result, *words):
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    for word in words:
        assert str(word) in lines[0], lines[0]
    return lines[0]


# ---- layouts and splits -------------------------------------------------------------------------------
def test_split_folders_layout_mixed_formats_and_non_images_ignored(tmp_path):
    root = tmp_path / "pets"
    make_split(root / "train", {"cat": 6, "dog": 8})
    make_split(root / "val", {"cat": 2, "dog": 3})
    make_split(root / "test", {"cat": 3, "dog": 2})
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "labels.csv").write_text("a,b\n")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    dm = datamodule(f"data.root={root}", "data.num_classes=2", "data.image_size=20")
    assert dm.class_names == ["cat", "dog"]
    sizes = {split: counts(dm.splits[split].samples) for split in ("train", "val", "test")}
    assert sizes == {"train": [6, 8], "val": [2, 3], "test": [3, 2]}
    assert not any(p.endswith((".txt", ".csv")) for p, _ in dm.splits["train"].samples)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (14, 3, 20, 20) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 8


def test_no_split_folders_are_split_by_fraction_stratified(tmp_path):
    root = tmp_path / "flat"
    make_split(root, {"a": 10, "b": 20})
    args = (
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=8",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "data.split_seed=3",
    )
    dm = datamodule(*args)
    sizes = {split: counts(dm.splits[split].samples) for split in ("train", "val", "test")}
    assert sizes == {"train": [6, 12], "val": [2, 4], "test": [2, 4]}  # 20% of 30 each, by class
    paths = [{p for p, _ in dm.splits[s].samples} for s in ("train", "val", "test")]
    assert sum(map(len, paths)) == len(set.union(*paths)) == 30
    # eval builds only the test split, with the run's statistics: the same images
    test_only = datamodule(*args, "data.normalization={mean: [0, 0, 0], std: [1, 1, 1]}", stage="test")
    assert set(test_only.splits) == {"test"} and test_only.splits["test"].samples == dm.splits["test"].samples


def test_chestxray_tiny_val_is_merged_into_train_and_a_val_split_carved(tmp_path):
    root = tmp_path / "chest_xray"
    make_split(root / "train", {"NORMAL": 18, "PNEUMONIA": 36}, mix=False)
    make_split(root / "val", {"NORMAL": 1, "PNEUMONIA": 1}, mix=False)
    make_split(root / "test", {"NORMAL": 4, "PNEUMONIA": 4}, mix=False)
    dm = datamodule(f"data.root={root}", "data.image_size=16", data="chestxray")
    assert dm.class_names == ["NORMAL", "PNEUMONIA"]
    # 2 val images < min_val_size 100: pool 19/37 (56), 10% val = 6, stratified 2/4; test folder kept
    sizes = {split: counts(dm.splits[split].samples) for split in ("train", "val", "test")}
    assert sizes == {"train": [17, 33], "val": [2, 4], "test": [4, 4]}
    kept = datamodule(f"data.root={root}", "data.image_size=16", "data.min_val_size=2", data="chestxray")
    assert counts(kept.splits["val"].samples) == [1, 1] and counts(kept.splits["train"].samples) == [18, 36]


# ---- the image pipeline -------------------------------------------------------------------------------
IDENTITY3 = "data.normalization={mean: [0, 0, 0], std: [1, 1, 1]}"


def test_grayscale_to_3_channels_and_rgb_to_1_channel(tmp_path):
    root = tmp_path / "mix"
    make_split(root, {"a": 8, "b": 8})
    rgb = datamodule(f"data.root={root}", "data.num_classes=2", "data.image_size=12", IDENTITY3)
    jpeg = next(i for i, (p, _) in enumerate(rgb.splits["train"].samples) if p.endswith(".jpeg"))
    image, _ = rgb.splits["train"][jpeg]
    assert image.shape == (3, 12, 12) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    one = datamodule(
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=12",
        "data.channels=1",
        "data.normalization={mean: [0], std: [1]}",
    )
    png = next(i for i, (p, _) in enumerate(one.splits["train"].samples) if p.endswith(".png"))
    image, _ = one.splits["train"][png]
    expected = Image.open(one.splits["train"].samples[png][0]).convert("L").resize((12, 12), Image.BILINEAR)
    assert image.shape == (1, 12, 12)
    assert torch.allclose(image[0], torch.from_numpy(np.array(expected)).float() / 255, atol=1 / 255)


def test_resize_stretch_keeps_the_whole_image_center_crop_the_middle(tmp_path):
    root = tmp_path / "wide"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        pixels = np.zeros((40, 120, 3), np.uint8)
        pixels[:, 30:90] = 128  # black | gray | white, the gray wider than the centre square
        pixels[:, 90:] = 255
        for i in range(4):
            Image.fromarray(pixels).save(root / c / f"wide{i}.png")
    args = (
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=15",
        IDENTITY3,
        "data.val_fraction=0.25",
        "data.test_fraction=0.25",
    )
    stretch = datamodule(*args).splits["train"]
    crop = datamodule(*args, "data.resize=center_crop").splits["train"]
    s, c = stretch[0][0], crop[0][0]
    assert s.shape == c.shape == (3, 15, 15)
    assert s[:, :, 0].max() < 0.05 and s[:, :, -1].min() > 0.95  # the black and white ends kept
    assert torch.allclose(c, torch.full_like(c, 128 / 255), atol=1 / 255)  # only the gray middle


def test_class_weights_auto_are_inverse_training_frequencies(tmp_path):
    root = tmp_path / "imbalanced"
    make_split(root / "train", {"NORMAL": 12, "PNEUMONIA": 20}, mix=False, size=(8, 8))
    make_split(root / "val", {"NORMAL": 2, "PNEUMONIA": 2}, mix=False, size=(8, 8))
    make_split(root / "test", {"NORMAL": 2, "PNEUMONIA": 2}, mix=False, size=(8, 8))
    dm = datamodule(f"data.root={root}", "data.image_size=8", "data.min_val_size=0", data="chestxray")
    assert torch.allclose(dm.class_weights, torch.tensor([32 / (2 * 12), 32 / (2 * 20)]))
    assert (
        datamodule(f"data.root={root}", "data.image_size=8", "data.class_weights=null", data="chestxray").class_weights
        is None
    )


def test_normalization_statistics_come_from_the_training_split_only(tmp_path):
    root = tmp_path / "stats"
    make_split(root / "train", {"a": 3, "b": 3}, level=60)
    make_split(root / "val", {"a": 2, "b": 2}, level=200)
    make_split(root / "test", {"a": 2, "b": 2}, level=220)
    dm = datamodule(f"data.root={root}", "data.num_classes=2", "data.image_size=10")

    def stats(samples):
        raw = ImageFiles(samples, 3, 10, "stretch")  # converted and resized, not normalized
        images = torch.stack([raw[i][0] for i in range(len(raw))])
        return images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))

    mean, std = stats(dm.splits["train"].samples)
    assert dm.normalization["mean"] == pytest.approx(mean.tolist(), abs=1e-6)
    assert dm.normalization["std"] == pytest.approx(std.tolist(), abs=1e-6)
    every = stats([s for split in ("train", "val", "test") for s in dm.splits[split].samples])[0]
    assert (every - mean).abs().min() > 0.2  # all images' statistics would be far off
    for split in ("train", "val", "test"):  # the one normalization applied to every split
        assert dm.splits[split].normalize.mean == pytest.approx(mean.tolist(), abs=1e-6)
    train_mean = torch.cat([x for x, _ in dm.train_dataloader()]).mean().item()
    assert abs(train_mean) < 1e-4  # normalized with its own statistics: mean 0
    assert torch.cat([x for x, _ in dm.val_dataloader()]).mean().item() > 2  # much brighter than train


def test_normalization_samples_limits_the_statistics_pass(tmp_path):
    root = tmp_path / "many"
    make_split(root, {"a": 20, "b": 20}, size=(8, 8))
    dm = datamodule(f"data.root={root}", "data.num_classes=2", "data.image_size=8", "data.normalization_samples=5")
    full = datamodule(f"data.root={root}", "data.num_classes=2", "data.image_size=8")
    assert dm.normalization["mean"] != full.normalization["mean"]
    assert dm.splits["train"].samples == full.splits["train"].samples


def test_augment_applies_to_the_training_split_only(tmp_path):
    root = tmp_path / "aug"
    make_split(root, {"a": 10, "b": 10}, size=(8, 8))
    calls = []

    def blackout(image):  # one float image [C, H, W] in [0, 1], as cnncli/augment.py's transforms take it
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        calls.append(1)
        return torch.zeros_like(image)

    dm = datamodule(f"data.root={root}", "data.num_classes=2", "data.image_size=8", IDENTITY3, augment=blackout)
    train = torch.cat([x for x, _ in dm.train_dataloader()])
    assert len(calls) == len(train) == 16 and train.abs().max() == 0
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert torch.cat([x for x, _ in loader]).mean() > 0.3
    assert len(calls) == 16


# ---- bad input, in-process ----------------------------------------------------------------------------
def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_files_are_named_or_skipped_and_counted(tmp_path, caplog):
    root = tmp_path / "bad"
    make_split(root, {"a": 10, "b": 10}, mix=False, size=(64, 64))
    bad = root / "a" / "003.jpeg"
    truncate(bad)
    args = (f"data.root={root}", "data.num_classes=2", "data.image_size=16")
    with pytest.raises(UnreadableImage, match="truncated") as e:
        datamodule(*args)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).endswith("(data.skip_corrupt=true leaves it out)")  # what to do about it
    with caplog.at_level(logging.WARNING, logger="cnncli.data.folder"):
        dm = datamodule(*args, "data.skip_corrupt=true")
    assert "skipped 1 unreadable image file" in caplog.text and str(bad) in caplog.text
    assert sum(len(dm.splits[s]) for s in ("train", "val", "test")) == 19
    # header check: the damage is found by the loader, in a worker process, still one line naming the file
    dm = datamodule(*args, "data.check_images=header", "data.num_workers=1", IDENTITY3)
    message = ""
    for split in ("train", "val", "test"):
        try:
            for _ in getattr(dm, f"{split}_dataloader")():
                pass
        except UnreadableImage as error:  # rebuilt by torch from the worker's traceback text
            message = str(error)
            error.__traceback__ = None  # frees the loader's worker now, not in a later garbage collection
    assert message.startswith(f"unreadable image file {bad}: image file is truncated") and "\n" not in message
    # skip_corrupt leaves out what the setup check found: the message says which check finds this file
    assert message.endswith(
        "(found while loading; data.check_images=full finds such files at setup, and data.skip_corrupt=true "
        "then leaves them out)"
    )


@pytest.mark.parametrize(
    "problem, words",
    [
        ("empty_class", ["empty class folder", "/b"]),
        ("only_text_files", ["empty class folder"]),
        ("no_class_folders", ["no class folders"]),
        ("class_names_mismatch", ["['a', 'b']", "['cat', 'dog']"]),
        ("num_classes_mismatch", ["2 class folders", "data.num_classes=3"]),
        ("one_class_in_test", ["test split", "only class a"]),
        ("unknown_class_in_val", ["['c']", "not among the training classes"]),
        ("val_without_train", ["no train folder"]),
        ("missing_root", ["no such folder"]),
    ],
)
def test_bad_folders_are_one_line_errors_naming_the_path(tmp_path, problem, words):
    root = tmp_path / "data"
    args = [f"data.root={root}", "data.num_classes=2", "data.image_size=8"]
    if problem == "empty_class":
        make_split(root, {"a": 4}, size=(8, 8))
        (root / "b").mkdir()
    elif problem == "only_text_files":
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            (root / c / "readme.txt").write_text("x")
    elif problem == "no_class_folders":
        root.mkdir()
        (root / "image.png").write_text("x")
    elif problem == "class_names_mismatch":
        make_split(root, {"a": 4, "b": 4}, size=(8, 8))
        args.append("data.class_names=[cat, dog]")
    elif problem == "num_classes_mismatch":
        make_split(root, {"a": 4, "b": 4}, size=(8, 8))
        args[1] = "data.num_classes=3"
    elif problem == "one_class_in_test":
        make_split(root / "train", {"a": 4, "b": 4}, size=(8, 8))
        make_split(root / "test", {"a": 4}, size=(8, 8))
        args.append("data.val_fraction=0.25")
    elif problem == "unknown_class_in_val":
        make_split(root / "train", {"a": 4, "b": 4}, size=(8, 8))
        make_split(root / "val", {"a": 2, "c": 2}, size=(8, 8))
    elif problem == "val_without_train":
        make_split(root / "val", {"a": 2, "b": 2}, size=(8, 8))
    with pytest.raises(UserError) as e:
        datamodule(*args)
    message = str(e.value)
    assert "\n" not in message and str(root) in message
    for word in words:
        assert word in message, message


def test_num_classes_and_class_names_are_the_class_folders_known_before_setup(tmp_path):
    names = [f"class_{i}" for i in range(10)]
    make_split(tmp_path / "flat", dict.fromkeys(names, 2), mix=False, size=(8, 8))
    dm = datamodule(f"data.root={tmp_path / 'flat'}", "data.image_size=8", stage=None)
    assert dm.num_classes == 10 and dm.class_names == names  # as torchvision's ImageFolder: sorted folders
    assert dm.samples is None  # only the folders were listed: no file read yet
    make_split(tmp_path / "split" / "train", {"dog": 2, "cat": 2, "emu": 2}, mix=False, size=(8, 8))
    dm = datamodule(f"data.root={tmp_path / 'split'}", "data.image_size=8", stage=None)
    assert dm.num_classes == 3 and dm.class_names == ["cat", "dog", "emu"]
    # set and right: kept
    dm = datamodule(
        f"data.root={tmp_path / 'split'}", "data.num_classes=3", "data.class_names=[cat,dog,emu]", stage=None
    )
    assert dm.num_classes == 3


def test_a_num_classes_that_disagrees_with_the_folders_is_a_config_error(tmp_path):
    root = tmp_path / "digits"
    make_split(root, {str(i): 1 for i in range(10)}, mix=False, size=(8, 8))
    with pytest.raises(ConfigError) as e:
        datamodule(f"data.root={root}", "data.num_classes=2", stage=None)
    assert str(e.value) == (
        f"data.num_classes: {root} has 10 class folders (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), but data.num_classes=2 "
        "(null: as many as the class folders)"
    )
    result = cnncli_here("data", "show", "data=imagefolder", f"data.root={root}", "data.num_classes=2", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == f"error: {e.value}"
    with pytest.raises(ConfigError, match="data.class_names: \\['a', 'b'\\] differ from the class folders"):
        datamodule(f"data.root={root}", "data.class_names=[a,b]", stage=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]  # data show drew nothing


def test_data_show_draws_an_image_folder_without_num_classes(tmp_path):
    make_split(tmp_path / "pets", {"cat": 10, "dog": 10, "emu": 10}, size=(16, 16))
    out = tmp_path / "pets.png"
    result = cnncli_here("data", "show", "data=imagefolder", f"data.root={tmp_path / 'pets'}", "data.image_size=16",
                         "data.num_workers=0", "count=8", f"out={out}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and out.read_bytes().startswith(b"\x89PNG")


# ---- the CLI ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_alexnet_on_a_chest_xray_folder_trains_and_evaluates_per_class(tmp_path):
    root = tmp_path / "chest_xray"
    make_split(root / "train", {"NORMAL": 12, "PNEUMONIA": 20}, mix=False, size=(90, 80))
    make_split(root / "val", {"NORMAL": 1, "PNEUMONIA": 1}, mix=False, size=(90, 80))
    make_split(root / "test", {"NORMAL": 4, "PNEUMONIA": 4}, mix=False, size=(90, 80))
    run = tmp_path / "run"
    summary = train(
        run,
        "model=alexnet",
        "data=chestxray",
        f"data.root={root}",
        "data.image_size=67",
        "trainer.max_epochs=1",
        "data.batch_size=16",
    )
    assert summary["status"] == "completed" and summary["data"] == "chestxray" and summary["epochs"] == 1
    assert "test/acc1" in summary["test"]
    out = tmp_path / "eval"
    result = cnncli("eval", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    per_class = json.loads((out / "eval.json").read_text())["per_class"]
    assert list(per_class) == ["NORMAL", "PNEUMONIA"]
    assert [per_class[c]["support"] for c in per_class] == [4, 4]
    assert "NORMAL" in result.stdout and "PNEUMONIA" in result.stdout


def test_cli_unreadable_file_is_one_line_naming_it(tmp_path):
    root = tmp_path / "data"
    make_split(root, {"a": 10, "b": 10}, size=(16, 16))
    fake = root / "b" / "fake.png"
    fake.write_text("this is text, not a PNG")
    result = cnncli(
        "train",
        "data=imagefolder",
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=16",
        "model=simple_cnn",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET,
        cwd=tmp_path,
    )
    one_line_error(result, fake, "cannot identify image file", "data.skip_corrupt=true leaves it out")


def test_cli_damage_found_by_a_loader_worker_is_one_line_naming_the_file(tmp_path):
    root = tmp_path / "data"
    make_split(root, {"a": 10, "b": 10}, mix=False, size=(64, 64))
    bad = root / "a" / "000.jpeg"
    truncate(bad)
    result = cnncli(
        "train",
        "data=imagefolder",
        f"data.root={root}",
        "data.num_classes=2",
        "data.image_size=16",
        "data.check_images=header",
        "data.normalization={mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}",
        "data.num_workers=2",
        "model=simple_cnn",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET,
        cwd=tmp_path,
    )
    one_line_error(result, bad, "truncated")


def test_cli_skip_corrupt_completes_and_counts_the_skipped_file(tmp_path):
    root = tmp_path / "data"
    make_split(root, {"a": 10, "b": 10}, size=(16, 16))
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    run = tmp_path / "run"
    result = cnncli(
        "train",
        "data=imagefolder",
        f"data.root={root}",  # no data.num_classes: the two class folders
        "data.image_size=16",
        "data.skip_corrupt=true",
        "model=simple_cnn",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
        *QUIET,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 unreadable image file" in result.stdout and "broken.jpg" in result.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    config = yaml.safe_load((run / "config.yaml").read_text())  # what the model was built for, from the folders
    assert config["data"]["num_classes"] == 2 and config["data"]["class_names"] == ["a", "b"]


def test_cli_empty_class_folder_and_missing_root_are_one_line(tmp_path):
    root = tmp_path / "data"
    make_split(root, {"a": 6}, size=(16, 16))
    (root / "b").mkdir()
    common = (
        "data=imagefolder",
        "data.num_classes=2",
        "data.image_size=16",
        "model=simple_cnn",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET,
    )
    one_line_error(cnncli("train", f"data.root={root}", *common, cwd=tmp_path), root / "b", "empty class folder")
    one_line_error(
        cnncli("train", f"data.root={tmp_path / 'nowhere'}", *common, cwd=tmp_path),
        tmp_path / "nowhere",
        "no such folder",
    )


@pytest.mark.parametrize("resize", ["stretch", "center_crop"])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_files_are_read_as_torchvision_transforms_read_them(tmp_path, resize, channels):
    """cnncli/data/images.py reads files with PIL and numpy (so predict from ONNX needs no torch); its pixels
    are torchvision's Resize (+ CenterCrop) -> PILToTensor -> ToDtype(float32, scale=True), bit for bit."""
    import numpy as np
    from torchvision.datasets.folder import IMG_EXTENSIONS
    from torchvision.transforms import v2

    from cnncli.data import images

    assert images.IMAGE_EXTENSIONS == IMG_EXTENSIONS
    rng = np.random.default_rng(0)
    for width, height in ((37, 23), (23, 37), (50, 50), (9, 64)):
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        fit = [v2.Resize((17, 17), antialias=True)]
        if resize == "center_crop":
            fit = [v2.Resize(17, antialias=True), v2.CenterCrop(17)]
        pipeline = v2.Compose([*fit, v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
        expected = pipeline(Image.open(path).convert(images.MODES[channels]))
        assert np.array_equal(images.read(str(path), channels, 17, resize), expected.numpy())
