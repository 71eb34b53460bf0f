"""What a run says when it is unlikely to learn: a batch larger than the training split, a network far
larger than its data, validation accuracy stuck at chance (cnncli/tasks/classification.py)."""

import logging
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from torch import nn

from cnncli.tasks.classification import CHANCE_EPOCHS, chance_warning, describe_run


def config(model: str = "cnncli.models.vgg.vgg16", batch_size: int = 16, **model_options):
    return OmegaConf.create({
        "model": {"_target_": model, **model_options},
        "data": {"name": "digits", "channels": 1, "image_size": 32, "num_classes": 10, "batch_size": batch_size},
        "optimizer": {"_target_": "torch.optim.Adam"},
        "trainer": {"max_epochs": 30},
    })  # fmt: skip


def logged(cfg, model, train_images: int) -> list[str]:
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("cnncli")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        datamodule = SimpleNamespace(splits={"train": range(train_images), "val": range(270)})
        describe_run(cfg, model, datamodule, "outputs/train/run")
    finally:
        logger.removeHandler(handler)
        logger.level = level
    return lines


def test_a_network_far_larger_than_its_data_is_warned_about():
    big = nn.Linear(1300, 1000)  # 1,301,000 parameters: 1,035 per training image
    (line, warning) = logged(config(), big, train_images=1257)
    assert line.startswith("run outputs/train/run: vgg16 (1,301,000 parameters, 1,301,000 trainable) on digits")
    assert warning == (
        "warning: vgg16 has 1,301,000 trainable parameters for 1,257 training images (1,035 per image): from "
        "scratch it may not learn at all, and each checkpoint holds about 15 MB; a smaller model or "
        "model.pretrained=true fits this data better"
    )


def test_no_warning_for_a_network_that_fits_its_data_or_starts_from_weights():
    assert len(logged(config(), nn.Linear(1000, 60), train_images=1257)) == 1  # LeNet-5's size: the run line only
    assert len(logged(config(pretrained=True), nn.Linear(1300, 1000), train_images=1257)) == 1


def test_a_batch_larger_than_the_training_split_is_warned_about():
    lines = logged(config(batch_size=64), nn.Linear(10, 10), train_images=40)
    assert lines[1] == "warning: data.batch_size=64 is larger than the 40 training images: one step per epoch"


@pytest.mark.parametrize(
    "accuracies, warned",
    [([0.1, 0.11, 0.09], True), ([0.1, 0.11, 0.5], False), ([0.1, 0.1], False), ([0.1] * 4, False)],
)
def test_val_accuracy_at_chance_for_the_first_epochs_is_said_once(accuracies, warned):
    history = [{"epoch": e, "val/acc1": a} for e, a in enumerate(accuracies)]
    warning = chance_warning(history, num_classes=10)
    assert (warning is not None) == warned
    if warned:
        assert warning == (
            f"warning: val top-1 has stayed at chance (10%) for {CHANCE_EPOCHS} epochs: the network is not learning; "
            "try a lower optimizer.lr or a smaller model"
        )
