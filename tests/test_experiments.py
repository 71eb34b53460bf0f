"""The course's labs as one-line experiments (conf/experiment/*.yaml): each composes into a valid run, and
each trains for a few batches on generated files in its data set's real format, through the CLI."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUIET, cnncli
from formats import make_split, write_cifar, write_mnist, write_pets, write_signs
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cnncli import config_dir
from cnncli.config import validate_train_config
from cnncli.models import build_model
from cnncli.optim import optimization

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out

EXPERIMENTS = sorted(path.stem for path in (config_dir() / "experiment").glob("*.yaml"))
# what each lab is: model builder, data module, torch's optimizer and schedule (the header comment says why)
LABS = {
    "digits_quick": ("lenet.lenet5", "digits.DigitsDataModule", "Adam", None),
    "lenet5_mnist": ("lenet.lenet5", "mnist.MNISTData", "Adam", "CosineAnnealingLR"),
    "mlp_fashion_mnist": ("mlp.mlp", "mnist.FashionMNISTData", "Adam", None),
    "alexnet_chestxray": ("alexnet.alexnet", "folder.ImageFolderData", "Adam", "ReduceLROnPlateau"),
    "simple_cnn_signs": ("simple_cnn.simple_cnn", "hdf5.HDF5Data", "SGD", None),
    "vgg16_finetune": ("vgg.vgg16", "folder.ImageFolderData", "SGD", None),
    "nin_cifar10": ("nin.nin", "cifar.CIFAR10Data", "SGD", "MultiStepLR"),
    "resnet20_cifar10": ("resnet.resnet20", "cifar.CIFAR10Data", "SGD", "MultiStepLR"),
    "unet_shapes": ("unet.unet", "shapes.ShapesData", "Adam", "OneCycleLR"),
    "unet_pets": ("unet.unet", "segmentation_sets.PetsData", "Adam", "OneCycleLR"),
}
SEGMENTATION = {"unet_shapes", "unet_pets"}  # their network scores every pixel
# Every request goes to a closed local port: a download attempt would fail at once.
OFFLINE = {key: "http://127.0.0.1:9" for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_the_labs_are_all_there():
    assert EXPERIMENTS == sorted(LABS)


@pytest.mark.parametrize("name", sorted(LABS))
def test_experiment_composes_into_a_valid_run_and_states_its_result(name):
    text = (config_dir() / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    header = text[: text.index("defaults:")]
    assert "cnncli train experiment=" + name in header  # how to run it
    assert "\n# Result: " in header  # what the lab (or paper) reports, or why it is not measured here
    cfg = composed(f"experiment={name}")
    if cfg.data.num_classes is None:  # an image folder's classes are its class folders: 3 of them, say
        cfg = composed(f"experiment={name}", "data.num_classes=3")
    model, data, optimizer, scheduler = LABS[name]
    assert (cfg.model._target_, cfg.data._target_) == (f"cnncli.models.{model}", f"cnncli.data.{data}")
    assert cfg.optimizer._target_ == f"torch.optim.{optimizer}"
    assert cfg.scheduler.get("_target_") == (scheduler and f"torch.optim.lr_scheduler.{scheduler}")
    validate_train_config(cfg)
    optimization(cfg)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("pretrained", None)  # no download here: the builder alone, on the meta device
    with torch.device("meta"):
        net = build_model(model_cfg)
        logits = net(torch.empty(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size))
    size, classes = cfg.data.image_size, cfg.data.num_classes
    assert logits.shape == ((2, classes, size, size) if name in SEGMENTATION else (2, classes))


def test_the_lenet5_lab_decays_its_rate_and_distorts_its_images():
    """LeCun et al.'s two aids, for >= 99.0% on MNIST in 20 epochs: a rate decreasing to 0 at the last epoch,
    and random affine distortions of the training images (the network stays the course's LeNet-5)."""
    from cnncli.augment import build_augmentation

    cfg = composed("experiment=lenet5_mnist")
    assert (cfg.model.variant, cfg.data.image_size, cfg.trainer.max_epochs) == ("modern", 32, 20)
    assert (cfg.scheduler.T_max, cfg.scheduler.eta_min, cfg.callbacks.early_stopping) == (20, 0.0, None)
    (affine,) = build_augmentation(cfg.augmentation, 32).transforms
    assert (affine.degrees, affine.translate, affine.scale, affine.shear) == ([-10.0, 10.0], (0.1, 0.1), (0.9, 1.1),
                                                                           [-10.0, 10.0])  # fmt: skip
    assert "expected >= 99.0% test top-1 on MNIST" in (config_dir() / "experiment" / "lenet5_mnist.yaml").read_text()


def test_the_papers_schedules_are_kept():
    resnet = composed("experiment=resnet20_cifar10")
    assert list(resnet.scheduler.milestones) == [91, 136] and resnet.trainer.max_epochs == 182
    assert resnet.optimizer.weight_decay == 1e-4 and resnet.augmentation.name == "cifar"
    assert resnet.callbacks.early_stopping is None
    xray = composed("experiment=alexnet_chestxray")
    assert xray.model.batch_norm is True and xray.data.class_weights == "auto" and xray.data.image_size == 227


def test_digits_quick_is_the_default_run_and_reaches_its_stated_accuracy(default_run):
    """`cnncli train experiment=digits_quick` composes exactly the config of plain `cnncli train`, so the
    README's default run (the session fixture) is a digits_quick run: its accuracy is the lab's."""
    assert composed("experiment=digits_quick") == composed()
    header = (config_dir() / "experiment" / "digits_quick.yaml").read_text()
    assert ">= 96% test top-1" in header
    summary = json.loads((default_run / "summary.json").read_text())
    assert summary["test"]["test/acc1"] >= 0.96


def test_unet_shapes_is_the_default_unet_run_and_reaches_its_stated_mean_iou(unet_run):
    assert composed("experiment=unet_shapes") == composed("model=unet")
    header = (config_dir() / "experiment" / "unet_shapes.yaml").read_text()
    assert ">= 0.85 test mean IoU" in header
    summary = json.loads((unet_run / "summary.json").read_text())
    assert summary["test"]["test/miou"] >= 0.85


def test_every_lab_trains_a_few_batches_on_files_of_its_format(tmp_path):
    """One multirun over the labs (`++data.root`: the sweep composes the default config first, digits, which
    has no root), on one data folder holding every format: MNIST and Fashion-MNIST IDX files,
    CIFAR-10 batches, the hand-signs .h5 files, the Oxford-IIIT Pet trimaps, and a chest X-ray style split
    folder (also the image folder of the VGG16 fine-tuning lab, which runs on random weights here: no
    download)."""
    root = tmp_path / "data"
    write_mnist(root, "MNIST")
    write_mnist(root, "FashionMNIST")
    write_cifar(root)
    write_signs(root)
    write_pets(root)
    make_split(root / "train", {"NORMAL": 6, "PNEUMONIA": 10}, mix=True, size=(90, 80))
    make_split(root / "test", {"NORMAL": 2, "PNEUMONIA": 2}, mix=True, size=(90, 80))
    # the default runs cover these: digits_quick is `cnncli train`, unet_shapes `cnncli train model=unet`
    labs = [name for name in sorted(LABS) if name not in ("digits_quick", "unet_shapes")]
    sweep = tmp_path / "sweep"
    result = cnncli(
        "train",
        "-m",
        f"experiment={','.join(labs)}",
        f"++data.root={root}",
        f"hydra.sweep.dir={sweep}",
        "data.batch_size=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "model.pretrained=false",
        *QUIET,
        cwd=tmp_path,
        env=OFFLINE,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = {}
    for run in sweep.iterdir():
        if (run / ".hydra").is_dir():
            overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
            experiment = next(o.split("=", 1)[1] for o in overrides if o.startswith("experiment="))
            runs[experiment] = json.loads((run / "summary.json").read_text())
    assert sorted(runs) == labs
    for name, summary in runs.items():
        assert summary["status"] == "completed", name
        assert summary["model"] == f"cnncli.models.{LABS[name][0]}", name
        metric = "test/miou" if name in SEGMENTATION else "test/acc1"
        assert summary["epochs"] == 1 and 0 <= summary["test"][metric] <= 1, name
        assert Path(summary["best_checkpoint"]).is_file(), name
