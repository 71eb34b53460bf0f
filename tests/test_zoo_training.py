"""`cnncli train model=<any> data=digits trainer.fast_dev_run=true`, in-process for speed: every model of
the zoo that accepts 32x32 digits (a segmentation model: its default data, the shapes) takes a real
training step (forward, loss, backward, optimizer step) and a validation step through the same
LightningModule and Trainer settings as `cnncli train`."""

import warnings

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from cnncli import config_dir
from cnncli.config import call_target
from cnncli.errors import ConfigError
from cnncli.models import build_model
from cnncli.optim import optimization
from cnncli.tasks import task_of
from cnncli.tasks.classification import ImageClassifier
from cnncli.tasks.segmentation import SegmentationModule

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out

MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
warnings.filterwarnings("ignore", ".*does not have many workers.*")


@pytest.mark.parametrize("name", MODELS)
def test_one_training_step_on_digits(name, tmp_path):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", "data.batch_size=4"])  # the model's default data
    segmentation = task_of(cfg) == "segmentation"  # a segmentation model: shapes, else digits
    if not segmentation:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={name}", "data=digits", "data.batch_size=4"])
    try:
        model = build_model(cfg.model)
    except ConfigError as error:  # refused before training, with the minimum size (tested in test_models.py)
        assert error.key == "model.image_size"
        return
    data = call_target("data", cfg.data)
    data.setup("fit")
    before = [p.detach().clone() for p in model.parameters()]
    # a head that starts at zero (ViT's) passes no gradient down on the first step: a second step trains the rest
    steps = 2 if any(not p.any() for p in model.parameters() if p.dim() > 1) else 1
    module = SegmentationModule if segmentation else ImageClassifier
    classifier = module(model, num_classes=cfg.data.num_classes, optimization=optimization(cfg))
    trainer = L.Trainer(
        fast_dev_run=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(classifier, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert ("val/miou" if segmentation else "val/acc1") in trainer.callback_metrics
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed >= len(before) // 2  # the optimizer step moved the weights
