"""Segmentation, the task (cnncli/tasks/segmentation.py): its metrics against hand-counted cases, its losses,
the crop for the paper U-Net, the refusals of a model and data of different tasks, the shapes data set,
and the README's promise: `cnncli train model=unet` reaches mean IoU >= 0.85 on the shapes test split."""

import json
import math

import pytest
import torch
from conftest import cnncli_here
from hydra import compose, initialize_config_dir

from cnncli import config_dir
from cnncli.errors import ConfigError
from cnncli.tasks import check_model_fits, task_of
from cnncli.tasks.segmentation import ConfusionTotals, check_config, crop_to, dice_loss, predicted_classes, scores


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_scores_from_a_hand_counted_confusion_matrix():
    # rows: true class, columns: predicted. class 0: 8 hits, class 1: 3 hits, 1 pixel of 1 called 0, 2 of 0 called 1
    confusion = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    result = scores(confusion)
    assert result["acc"].item() == pytest.approx(11 / 14)
    assert result["iou"][0].item() == pytest.approx(8 / (8 + 2 + 1))
    assert result["iou"][1].item() == pytest.approx(3 / (3 + 1 + 2))
    assert math.isnan(result["iou"][2].item())  # no pixel of class 2 anywhere: no IoU, left out of the mean
    assert result["dice"][1].item() == pytest.approx(2 * 3 / (4 + 5))


def test_epoch_totals_ignore_the_void_label_and_match_the_scores():
    totals = ConfusionTotals(num_classes=2, ignore_index=255)
    masks = torch.tensor([[[0, 0], [1, 255]]])
    logits = torch.tensor([[[[5.0, -1], [5, 5]], [[0.0, 3], [9, 0]]]])  # predicts [[0, 1], [1, 0]]
    totals.add(torch.tensor(0.5), logits, masks)
    totals.flush()
    metrics = totals.compute()
    # 3 counted pixels: (0->0), (0->1), (1->1); the void one predicted 0 counts for nothing
    assert metrics["acc"].item() == pytest.approx(2 / 3)
    assert metrics["miou"].item() == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics["loss"].item() == pytest.approx(0.5)


def test_predicted_classes_is_argmax_over_the_class_axis():
    logits = torch.randn(3, 5, 7, 9)
    assert torch.equal(predicted_classes(logits), logits.argmax(1))


def test_dice_loss_is_zero_for_a_perfect_prediction_and_ignores_void():
    masks = torch.tensor([[[0, 1], [1, 255]]])
    perfect = torch.nn.functional.one_hot(masks.clamp(max=1), 2).permute(0, 3, 1, 2).float() * 100
    assert dice_loss(perfect, masks, 255).item() == pytest.approx(0, abs=1e-6)
    wrong = -perfect
    assert dice_loss(wrong, masks, 255).item() > 0.6


def test_the_mask_is_cropped_to_a_smaller_output():
    masks = torch.arange(36).view(1, 6, 6)
    cropped = crop_to(masks, torch.empty(1, 3, 2, 2))
    assert cropped.tolist() == [[[14, 15], [20, 21]]]


def test_a_model_and_data_of_different_tasks_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unet is a segmentation model .*data=digits is a classification"):
        check_model_fits("cnncli.models.unet.unet", "classification", "digits")
    with pytest.raises(ConfigError, match="lenet5 is a classification model .*choose a segmentation model \\(.*unet"):
        check_model_fits("cnncli.models.lenet.lenet5", "segmentation", "shapes")
    result = cnncli_here("train", "model=lenet5", "data=shapes", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model: lenet5 is a classification model")
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder


def test_loss_and_monitor_options_are_checked_per_task():
    cfg = composed("model=unet", "loss=focal")
    with pytest.raises(ConfigError, match="loss"):
        check_config(cfg)
    with pytest.raises(ConfigError, match="val/acc1.*choose from: .*val/miou"):
        check_config(composed("model=unet", "callbacks.early_stopping.monitor=val/acc1"))
    with pytest.raises(ConfigError, match="label_smoothing"):
        check_config(composed("model=unet", "label_smoothing=0.1"))
    from cnncli.tasks import classification

    with pytest.raises(ConfigError, match="dice is segmentation's"):
        classification.check_config(composed("loss=dice"))


def test_the_task_is_the_data_sets():
    assert task_of(composed()) == "classification"
    assert task_of(composed("model=unet")) == "segmentation"
    cfg = composed("model=unet")
    assert cfg.data.name == "shapes" and cfg.loss == "ce+dice" and cfg.scheduler._target_.endswith("OneCycleLR")
    # the command line still wins over the model's default data and recipe
    cfg = composed("model=unet", "data=digits", "loss=ce", "scheduler=none")
    assert cfg.data.name == "digits" and cfg.loss == "ce" and cfg.scheduler.get("_target_") is None


def test_shapes_are_deterministic_and_their_masks_match_the_drawing():
    from cnncli.data.shapes import ShapesData

    def made(**options):
        data = ShapesData(name="shapes", channels=3, image_size=32, train_size=6, val_size=2, test_size=2, **options)
        return data.load()

    first, again, other = made(), made(), made(seed=1)
    assert torch.equal(first["train"][0], again["train"][0]) and torch.equal(first["train"][1], again["train"][1])
    assert not torch.equal(first["train"][0], other["train"][0])
    images, masks = first["train"]
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8 and masks.shape == (6, 32, 32)
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3} and (masks > 0).any(dim=(1, 2)).all()  # a shape in each
    # a shape is one flat colour (plus noise): its pixels' spread is far below the background's swing
    for image, mask in zip(images.float(), masks):
        kind = int(mask.max())
        assert image[:, mask == kind].std(dim=1).max() < 20
    with pytest.raises(ConfigError, match="shapes has 4 classes"):
        ShapesData(name="shapes", channels=3, image_size=32, num_classes=3)


def test_cnncli_train_model_unet_reaches_its_promised_mean_iou(unet_run):
    """README: `cnncli train model=unet` reaches mean IoU >= 0.85 on the shapes test split in about a minute."""
    summary = json.loads((unet_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == "segmentation"
    assert summary["test"]["test/miou"] >= 0.85
    assert summary["wall_time_s"] < 150  # "about a minute" on 2 cores (47 s measured), with room for a busy CI
    assert (unet_run / "curves.png").is_file() and (unet_run / "checkpoints" / "best.ckpt").is_file()
    log = (unet_run / "train.log").read_text()
    assert "segmenting shapes" in log and "mIoU" in log


def test_torchvisions_segmentation_baselines_load_their_coco_weights_into_all_but_the_head(tmp_path, monkeypatch):
    """model.pretrained=true for fcn_resnet50: torchvision's COCO/VOC weights file (a stand-in with the real
    file's name and keys, aux head included, placed in the hub cache: no download) fills every layer but the
    final 1x1 conv, which is made for the data's 4 classes; without the file, one line says where to put it."""
    import torchvision

    from cnncli.errors import UserError
    from cnncli.models import build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    options = {"_target_": "cnncli.models.fcn.fcn_resnet50", "in_channels": 3, "num_classes": 4, "image_size": 64,
               "pretrained": True}  # fmt: skip
    with pytest.raises(UserError, match="cannot download .*fcn_resnet50_coco-1167a1af.pth.*offline, put that file"):
        build_model(options)
    coco = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)  # the failed download made it
    torch.save(coco.state_dict(), tmp_path / "hub" / "checkpoints" / "fcn_resnet50_coco-1167a1af.pth")
    model = build_model(options)
    assert torch.equal(model.backbone.layer4[0].conv2.weight, coco.backbone.layer4[0].conv2.weight)
    assert torch.equal(model.classifier[0].weight, coco.classifier[0].weight)  # the decoder transfers too
    assert model.classifier[4].weight.shape[0] == 4  # the head: the data's classes, fresh
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 4, 64, 64)
