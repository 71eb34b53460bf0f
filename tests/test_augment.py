"""Augmentation: each option does what it says, on the training split only; bad values are caught."""

import pytest
import torch
from conftest import cnncli, cnncli_here
from omegaconf import OmegaConf

from cnncli.augment import build_augmentation
from cnncli.data.digits import DigitsDataModule
from cnncli.errors import ConfigError

NONE = OmegaConf.load(__import__("cnncli").config_dir() / "augmentation" / "none.yaml")


def augmentation(**options):
    return OmegaConf.merge(NONE, options)


def test_none_builds_nothing():
    assert build_augmentation(NONE, 32) is None and build_augmentation(None, 32) is None


def test_hflip_with_probability_one_mirrors_the_image():
    image = torch.rand(1, 8, 8)
    assert torch.equal(build_augmentation(augmentation(hflip=1.0), 8)(image), image.flip(-1))


def test_random_erasing_with_probability_one_erases_a_rectangle():
    image = torch.ones(3, 32, 32)
    erased = build_augmentation(augmentation(random_erasing=1.0), 32)(image)
    assert 0 < (erased != 1).float().mean() < 0.5


def test_crop_padding_shifts_by_at_most_the_padding():
    image = torch.zeros(1, 16, 16)
    image[:, 8, 8] = 1.0
    crop = build_augmentation(augmentation(crop_padding=2), 16)
    positions = {tuple((crop(image)[0] == 1).nonzero()[0].tolist()) for _ in range(200) if crop(image).any()}
    assert all(abs(r - 8) <= 2 and abs(c - 8) <= 2 for r, c in positions) and len(positions) > 5


def test_random_resized_crop_and_affine_keep_the_shape():
    image = torch.rand(3, 24, 24)
    for options in (
        {"random_resized_crop": [0.3, 1.0]},
        {"rotate": 30, "translate": 0.2, "scale": [0.8, 1.2]},
        {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}},
    ):
        assert build_augmentation(augmentation(**options), 24)(image).shape == (3, 24, 24)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"hflip": 2}, "augmentation.hflip"),
        ({"rotate": -5}, "augmentation.rotate"),
        ({"crop_padding": -1}, "augmentation.crop_padding"),
        ({"scale": [1.2, 0.8]}, "augmentation.scale"),
        ({"random_resized_crop": [0.0, 1.0]}, "augmentation.random_resized_crop"),
        ({"color_jitter": {"brightness": -1}}, "augmentation.color_jitter"),
        ({"color_jitter": {"sharpness": 2}}, "augmentation.color_jitter"),
    ],
)
def test_bad_values_name_the_key(options, key):
    with pytest.raises(ConfigError) as error:
        build_augmentation(augmentation(**options), 32)
    assert error.value.key == key


def test_only_the_training_split_is_augmented():
    data = DigitsDataModule(
        name="digits",
        channels=1,
        image_size=32,
        num_classes=10,
        class_names=list("0123456789"),
        augment=build_augmentation(augmentation(rotate=30, translate=0.2), 32),
    )
    data.setup()
    indices = list(range(16))
    train_a, train_b = data.splits["train"].__getitems__(indices)[0], data.splits["train"].__getitems__(indices)[0]
    val_a, val_b = data.splits["val"].__getitems__(indices)[0], data.splits["val"].__getitems__(indices)[0]
    assert torch.equal(val_a, val_b)
    assert not torch.equal(train_a, train_b)
    different = [not torch.equal(a, b) for a, b in zip(train_a, train_b)]
    assert sum(different) >= 14  # one random draw per image, not one per batch


@pytest.mark.slow
def test_augmented_training_runs_and_data_show_draws_the_grid(tmp_path):
    result = cnncli("data", "show", "augmentation=basic", "count=12", f"out={tmp_path / 'grid.png'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    png = (tmp_path / "grid.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    from matplotlib.image import imread

    pixels = imread(tmp_path / "grid.png")
    assert pixels.std() > 0.1  # images, not a blank page
    assert cnncli_here("data", "shw", cwd=tmp_path).returncode == 2
