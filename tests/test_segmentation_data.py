"""Segmentation data: folders of images and masks (cnncli/data/segfolder.py) with their one-line errors,
augmentation that moves a mask with its image, and `cnncli data show` of masks."""

import json

import numpy as np
import pytest
import torch
from conftest import QUIET, cnncli, cnncli_here
from omegaconf import OmegaConf
from PIL import Image
from torchvision import tv_tensors

from cnncli.augment import build_augmentation
from cnncli.data.segfolder import SegFolderData
from cnncli.data.shapes import draw
from cnncli.errors import ConfigError, UserError

NAMES = ["background", "circle", "square", "triangle"]


def make_folder(root, sizes=(("train", 24), ("test", 6)), side=40, rgb_masks=False, seed=0):
    rng = np.random.default_rng(seed)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    for split, count in sizes:
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = draw(rng, side, 3)
            Image.fromarray(image.transpose(1, 2, 0)).save(root / split / "images" / f"{i}.png")
            saved = Image.fromarray(palette[mask]) if rgb_masks else Image.fromarray(mask)
            saved.save(root / split / "masks" / f"{i}.png")
    return palette.tolist()


def data(root, **options) -> SegFolderData:
    options = {"name": "segfolder", "channels": 3, "image_size": 32, "class_names": NAMES, **options}
    module = SegFolderData(root=str(root), **options)
    module.setup("fit")
    return module


def test_a_folder_loads_with_carved_val_and_resized_masks(tmp_path):
    make_folder(tmp_path)
    module = data(tmp_path)
    sizes = {split: len(dataset) for split, dataset in module.splits.items()}
    assert sizes == {"train": 21, "val": 3, "test": 6}  # val carved from the 24 training images, test kept
    images, masks = next(iter(module.train_dataloader()))
    assert images.shape[1:] == (3, 32, 32) and masks.shape[1:] == (32, 32) and masks.dtype == torch.int64
    assert set(module.splits["train"].masks.unique().tolist()) <= {0, 1, 2, 3}  # nearest: no blended ids
    assert module.num_classes == 4 and module.palette[1] == [128, 0, 0]  # VOC's colours by default


def test_rgb_masks_are_mapped_by_the_palette(tmp_path):
    palette = make_folder(tmp_path, rgb_masks=True)
    index = tmp_path / "index"
    make_folder(index)
    mapped, plain = data(tmp_path, palette=palette), data(index)
    assert torch.equal(mapped.splits["test"].masks, plain.splits["test"].masks)
    with pytest.raises(UserError, match=r"0\.png: an RGB mask; set data.palette"):
        data(tmp_path)
    wrong = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [9, 9, 9]]
    with pytest.raises(UserError, match=r"the colour \[0, 0, 255\] is not in data.palette"):
        data(tmp_path, palette=wrong)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_mask", r"train/images/3.png: no mask; expected .*train/masks/3.png"),
        ("mask_size", r"train/masks/3.png: the mask is 20x20 pixels, its image .*3.png 40x40"),
        ("class_id", r"train/masks/3.png: holds class id 7, but data.class_names names 4 classes"),
    ],
)
def test_a_mask_that_does_not_fit_is_one_line_naming_the_file(tmp_path, damage, message):
    make_folder(tmp_path)
    mask = tmp_path / "train" / "masks" / "3.png"
    if damage == "missing_mask":
        mask.unlink()
    elif damage == "mask_size":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)
    else:
        values = np.asarray(Image.open(mask)).copy()
        values[0, 0] = 7
        Image.fromarray(values).save(mask)
    with pytest.raises(UserError, match=message):
        data(tmp_path)


def test_carved_splits_are_fixed_by_split_seed(tmp_path):
    make_folder(tmp_path, sizes=(("train", 24),))
    first, again, other = data(tmp_path), data(tmp_path), data(tmp_path, split_seed=1)
    assert {split: len(d) for split, d in first.splits.items()} == {"train": 18, "val": 3, "test": 3}
    for split in ("train", "val", "test"):
        assert torch.equal(first.splits[split].images, again.splits[split].images)
    assert not torch.equal(first.splits["val"].images, other.splits["val"].images)


def test_jpeg_images_larger_than_image_size_keep_their_masks(tmp_path):
    """JPEGs are decoded at a reduced scale for a small image_size: the mask is compared with the file's size."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 1), ("test", 1)):
        for kind in ("images", "masks"):
            (tmp_path / split / kind).mkdir(parents=True)
        for i in range(count):
            image, mask = draw(rng, 200, 3)
            Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / split / "images" / f"{i}.jpg")
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"{i}.png")
    module = data(tmp_path)
    assert module.splits["train"].images.shape == (4, 3, 32, 32) and module.splits["test"].masks.shape == (1, 32, 32)


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("no_images_folder", UserError, r": no train/images folder \(expected <root>/train/images/"),
        ("root_is_a_file", UserError, r"data.root: not a folder: "),
        ("num_classes", ConfigError, r"num_classes: is 3, but class_names has 4 names"),
        ("one_name", ConfigError, r"class_names: required: two or more names"),
    ],
)
def test_a_folder_or_classes_that_do_not_fit_are_one_line(tmp_path, case, error, message):
    make_folder(tmp_path / "data", sizes=(("train", 4),))
    root, options = tmp_path / "data", {}
    if case == "no_images_folder":
        (root / "train" / "images").rename(root / "train" / "pictures")
    elif case == "root_is_a_file":
        root = root / "train" / "masks" / "0.png"
    elif case == "num_classes":
        options = {"num_classes": 3}
    else:
        options = {"class_names": ["background"]}
    with pytest.raises(error, match=message) as raised:
        data(root, **options)
    assert "\n" not in str(raised.value)


def test_the_ignore_index_is_no_class(tmp_path):
    make_folder(tmp_path)
    mask = tmp_path / "train" / "masks" / "0.png"
    values = np.asarray(Image.open(mask)).copy()
    values[:4] = 255  # a void border
    Image.fromarray(values).save(mask)
    module = data(tmp_path, class_weights="auto")
    assert (module.splits["train"].masks == 255).any() and module.class_weights.shape == (4,)


def test_a_segmentation_folder_trains_end_to_end_and_errors_are_one_line(tmp_path):
    make_folder(tmp_path / "data")
    run = tmp_path / "run"
    result = cnncli(
        "train", "model=unet", "data=segfolder", f"data.root={tmp_path / 'data'}",
        "data.class_names=[" + ",".join(NAMES) + "]", "data.image_size=32", "model.base_channels=4",
        "model.depth=2", "trainer.max_epochs=1",
        f"hydra.run.dir={run}", *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"] == "segfolder" and 0 <= summary["test"]["test/miou"] <= 1
    config = OmegaConf.load(run / "config.yaml")
    assert config.data.num_classes == 4  # filled in from class_names
    missing = cnncli_here("train", "model=unet", "data=segfolder", f"data.root={tmp_path / 'nothing'}",
                          "data.class_names=[a,b]", f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith(
        "error: data.root: no such folder"
    )
    unnamed = cnncli_here("train", "model=unet", "data=segfolder", f"data.root={tmp_path / 'data'}",
                          f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)  # fmt: skip
    assert unnamed.returncode == 2 and "data.class_names: required" in unnamed.stderr
    assert not (tmp_path / "refused").exists()


def test_augmentation_moves_the_mask_with_its_image():
    """A square drawn white in the image and as class 1 in the mask: after a random affine, crop and flip the
    mask's class-1 pixels are the image's bright ones; invented pixels are ignore_index in the mask."""
    cfg = OmegaConf.create({"random_resized_crop": [0.5, 1.0], "rotate": 30, "translate": 0.2, "hflip": 0.5,
                            "color_jitter": {"brightness": 0.3}, "random_erasing": 0.0})  # fmt: skip
    augment = build_augmentation(cfg, 32, ignore_index=255)
    image = torch.zeros(3, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.uint8)
    image[:, 4:20, 8:18], mask[4:20, 8:18] = 1.0, 1
    torch.manual_seed(0)
    for _ in range(10):
        moved, moved_mask = augment(image, tv_tensors.Mask(mask))
        assert set(moved_mask.unique().tolist()) <= {0, 1, 255}
        inside = moved_mask == 1
        assert inside.any()
        assert moved[0][inside].mean() > 0.6 and moved[0][moved_mask == 0].mean() < 0.1
    erase = build_augmentation(OmegaConf.create({"random_erasing": 1.0}), 32, ignore_index=255)
    erased, kept = erase(image, tv_tensors.Mask(mask))
    assert torch.equal(kept.as_subclass(torch.Tensor), mask) and not torch.equal(erased, image)  # the image only
    pad = build_augmentation(OmegaConf.create({"crop_padding": 8}), 32, ignore_index=255)
    lit = image.clone().clamp_(min=0.5)  # no pixel of the image is 0: only the padding is
    for _ in range(5):
        padded, padded_mask = pad(lit, tv_tensors.Mask(mask))
        invented = (padded == 0).all(0)
        assert invented.any() and torch.equal(padded_mask == 255, invented)  # the padding is ignore_index


def test_the_strong_preset_moves_the_mask_with_its_image():
    """conf/augmentation/strong.yaml as train composes it (resized crop, flip, colour jitter; its random erasing
    is checked above): a pattern drawn bright in the image and as class 1 in the mask stays where the mask says."""
    from hydra import compose, initialize_config_dir

    from cnncli import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", ["augmentation=strong", "augmentation.random_erasing=0"])
    augment = build_augmentation(cfg.augmentation, 64, ignore_index=255)
    image, mask = torch.zeros(3, 64, 64), torch.zeros(64, 64, dtype=torch.uint8)
    image[:, 12:28, 8:56], mask[12:28, 8:56] = 1.0, 1  # a bar, and an off-centre block: no symmetry
    image[:, 40:60, 36:48], mask[40:60, 36:48] = 1.0, 1
    torch.manual_seed(0)
    aligned, unmoved = [], []
    for _ in range(20):
        moved, moved_mask = augment(image, tv_tensors.Mask(mask))
        moved_mask = moved_mask.as_subclass(torch.Tensor)
        assert set(moved_mask.unique().tolist()) <= {0, 1}  # a crop invents no pixel; nearest blends no id
        bright = moved.mean(0) > 0.25
        aligned.append(((bright & (moved_mask == 1)).sum() / (bright | (moved_mask == 1)).sum()).item())
        unmoved.append(((bright & (mask == 1)).sum() / (bright | (mask == 1)).sum()).item())
    assert min(aligned) > 0.8  # IoU of the image's bright pixels with the moved mask: only edges blend
    assert sum(unmoved) / len(unmoved) < 0.7  # the unmoved mask would not fit: the check tells them apart


def test_data_show_draws_masks_beside_their_images(tmp_path):
    """Each image | its mask over it, four pairs a row (3.2 x 2.0 inches per pair at 100 dpi, 0.6 for the
    title and legend); the legend's swatches are the data module's palette, one per class name."""
    result = cnncli_here("data", "show", "data=shapes", "count=4", "data.train_size=8", f"out={tmp_path / 'm.png'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "m.png").size == (1280, 260)  # one row of four pairs
    make_folder(tmp_path / "data", sizes=(("train", 8),))
    palette = [[0, 0, 0], [250, 10, 20], [10, 250, 30], [40, 20, 250]]
    result = cnncli_here("data", "show", "data=segfolder", f"data.root={tmp_path / 'data'}", "count=6",
                         "data.class_names=[" + ",".join(NAMES) + "]", f"data.palette={json.dumps(palette)}",
                         "augmentation=strong", f"out={tmp_path / 's.png'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    picture = Image.open(tmp_path / "s.png").convert("RGB")
    assert picture.size == (1280, 460)  # six pairs: two rows
    pixels = np.asarray(picture).reshape(-1, 3)
    for colour in palette[1:]:
        assert (pixels == colour).all(1).sum() >= 100  # its legend swatch, in the palette's exact colour


def test_pets_in_torchvisions_layout_load_with_the_border_ignored_and_offline_is_one_line(tmp_path):
    from formats import write_pets

    from cnncli.data.segmentation_sets import PetsData

    trimaps = write_pets(tmp_path)
    pets = PetsData(root=str(tmp_path), download=False, name="pets", channels=3, image_size=40, num_classes=2,
                    val_fraction=0.25)  # fmt: skip
    pets.setup("fit")
    assert {split: len(d) for split, d in pets.splits.items()} == {"train": 9, "val": 3, "test": 4}
    assert pets.class_names == ["background", "pet"]
    for i, mask in enumerate(pets.splits["test"].masks):  # test.txt's order; 40 px: no resizing
        trimap = torch.from_numpy(trimaps[f"Abyssinian_test_{i}"])
        expected = torch.full_like(mask, 255).masked_fill_(trimap == 1, 1).masked_fill_(trimap == 2, 0)
        assert torch.equal(mask, expected)  # 1 pet -> 1, 2 background -> 0, 3 border -> 255
    result = cnncli_here("train", "model=unet", "data=pets", f"data.root={tmp_path / 'none'}", "data.download=false",
                         f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and not (tmp_path / "refused").exists()
    folder = tmp_path / "none" / "oxford-iiit-pet"
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: Oxford-IIIT Pet files not found in {folder}: images, annotations/trimaps, "
        "annotations/trainval.txt, annotations/test.txt (data.download=false). "
        "Fetch https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz"
    )
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()  # a partial copy: the missing file named
    with pytest.raises(UserError, match=r"files not found in .*oxford-iiit-pet: annotations/test.txt \(data.download"):
        PetsData(root=str(tmp_path), download=False, name="pets", channels=3, image_size=40, num_classes=2).setup()


def write_voc(root, sizes=(("train", 6), ("val", 3)), side=36) -> dict:
    """The PASCAL VOC 2012 layout torchvision's VOCSegmentation reads: VOCdevkit/VOC2012/JPEGImages/<id>.jpg,
    SegmentationClass/<id>.png (palette PNGs: index = class id, 255 void round each object) and
    ImageSets/Segmentation/<split>.txt. Returns the masks by id."""
    from cnncli.data.masks import default_palette

    folder = root / "VOCdevkit" / "VOC2012"
    for name in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    rng, masks, palette = np.random.default_rng(0), {}, sum(default_palette(256), [])
    for split, count in sizes:
        ids = [f"2007_{split}_{i:03d}" for i in range(count)]
        for name in ids:
            mask = np.zeros((side, side), np.uint8)
            top, left, label = *rng.integers(4, side - 16, 2), int(rng.integers(1, 21))
            mask[top - 1 : top + 13, left - 1 : left + 13] = 255  # the void rim
            mask[top : top + 12, left : left + 12] = label
            image = rng.integers(0, 60, (side, side, 3)) + 150 * (mask == label)[..., None]
            Image.fromarray(image.astype(np.uint8)).save(folder / "JPEGImages" / f"{name}.jpg")
            indexed = Image.fromarray(mask)
            indexed.putpalette(palette)
            indexed.save(folder / "SegmentationClass" / f"{name}.png")
            masks[name] = mask
        (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return masks


def test_voc_in_torchvisions_layout_keeps_void_and_offline_is_one_line(tmp_path):
    from cnncli.data.segmentation_sets import VOCData

    masks = write_voc(tmp_path)
    voc = VOCData(root=str(tmp_path), download=False, name="voc", channels=3, image_size=36, num_classes=21,
                  val_fraction=0.34)  # fmt: skip
    voc.setup("fit")
    assert {split: len(d) for split, d in voc.splits.items()} == {"train": 4, "val": 2, "test": 3}
    assert len(voc.class_names) == 21 and voc.class_names[15] == "person"
    for i, mask in enumerate(voc.splits["test"].masks):  # VOC's val is the test split, in val.txt's order
        assert torch.equal(mask, torch.from_numpy(masks[f"2007_val_{i:03d}"]))  # ids and 255 void as stored
    result = cnncli_here("train", "model=unet", "data=voc", f"data.root={tmp_path / 'none'}", "data.download=false",
                         f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and not (tmp_path / "refused").exists()
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"error: PASCAL VOC 2012 files not found in {tmp_path / 'none' / 'VOCdevkit' / 'VOC2012'}: JPEGImages, "
        "SegmentationClass, ImageSets/Segmentation/train.txt, ImageSets/Segmentation/val.txt (data.download=false)"
    )
    assert not any(line.startswith("Traceback") for line in lines)
