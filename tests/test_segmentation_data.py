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
from cnncli.errors import UserError

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
    _, kept = erase(image, tv_tensors.Mask(mask))
    assert torch.equal(kept.as_subclass(torch.Tensor), mask)  # erasing changes the image only


def test_data_show_draws_masks_beside_their_images(tmp_path):
    result = cnncli_here("data", "show", "data=shapes", "count=4", "data.train_size=8", f"out={tmp_path / 'm.png'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    width, height = Image.open(tmp_path / "m.png").size
    assert width > 2 * height  # four image | mask pairs in one row


def test_pets_in_torchvisions_layout_load_with_the_border_ignored_and_offline_is_one_line(tmp_path):
    from formats import write_pets

    from cnncli.data.segmentation_sets import PetsData

    write_pets(tmp_path)
    pets = PetsData(root=str(tmp_path), download=False, name="pets", channels=3, image_size=32, num_classes=2,
                    val_fraction=0.25)  # fmt: skip
    pets.setup("fit")
    assert {split: len(d) for split, d in pets.splits.items()} == {"train": 9, "val": 3, "test": 4}
    masks = pets.splits["train"].masks
    assert set(masks.unique().tolist()) == {0, 1, 255} and pets.class_names == ["background", "pet"]
    result = cnncli_here("train", "model=unet", "data=pets", f"data.root={tmp_path / 'none'}", "data.download=false",
                         f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and not (tmp_path / "refused").exists()
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: Oxford-IIIT Pet files not found in {tmp_path / 'none' / 'oxford-iiit-pet'} (data.download=false)"
        )
    )
