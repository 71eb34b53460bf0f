"""The commands on a segmentation run, as a user runs them: eval reproduces the run's test figures, predict
writes masks from the checkpoint and from the exported ONNX file, export verifies; a checkpoint of one task on
data of the other is one line."""

import csv
import json

import numpy as np
import pytest
from conftest import cnncli, cnncli_here
from PIL import Image

from cnncli.data.shapes import draw


@pytest.fixture(scope="module")
def shapes_images(tmp_path_factory):
    """Three shapes images as PNG files, larger than the run's 48x48 (predict resizes them)."""
    folder = tmp_path_factory.mktemp("shapes_images")
    rng = np.random.default_rng(123)
    masks = {}
    for i in range(3):
        image, mask = draw(rng, 48, 3)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"s{i}.png")
        masks[f"s{i}"] = mask
    return folder, masks


def test_eval_reproduces_the_runs_test_figures_and_draws_the_masks(unet_run, tmp_path):
    summary = json.loads((unet_run / "summary.json").read_text())
    result = cnncli_here("eval", f"ckpt_path={unet_run / 'checkpoints' / 'best.ckpt'}", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    for metric in ("acc", "miou", "mdice"):  # counted from the same confusion matrix: exactly the run's
        assert report[f"test/{metric}"] == pytest.approx(summary["test"][f"test/{metric}"], abs=1e-6), metric
    assert report["samples"] == 200 and set(report["per_class"]) == {"background", "circle", "square", "triangle"}
    ious = [row["iou"] for row in report["per_class"].values()]
    assert np.mean(ious) == pytest.approx(report["test/miou"], abs=1e-6)
    assert sum(row["pixels"] for row in report["per_class"].values()) == 200 * 48 * 48
    assert len(report["worst"]) == len(report["best"]) == 4
    assert report["worst"][0]["miou"] <= report["best"][-1]["miou"]
    assert "mean IoU" in result.stdout and "triangle" in result.stdout
    for picture in ("masks.png", "confusion_matrix.png"):
        assert Image.open(tmp_path / picture).size[0] > 500


def test_predict_writes_masks_and_overlays_and_the_exported_onnx_file_agrees(unet_run, shapes_images, tmp_path):
    folder, true_masks = shapes_images
    ckpt = unet_run / "checkpoints" / "best.ckpt"
    result = cnncli(
        "predict", f"ckpt_path={ckpt}", f"inputs=[{folder}]", f"masks_dir={tmp_path / 'masks'}",
        f"output={tmp_path / 'pred.csv'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for stem, true in true_masks.items():
        mask = Image.open(tmp_path / "masks" / f"{stem}_mask.png")
        assert mask.mode == "P" and mask.size == (48, 48)
        assert mask.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # VOC's first colours
        assert (np.asarray(mask) == true).mean() > 0.9  # the trained U-Net's mask is the drawn one, nearly
        assert Image.open(tmp_path / "masks" / f"{stem}_overlay.png").mode == "RGB"
    with open(tmp_path / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 4 and {row["class"] for row in rows} == {"background", "circle", "square", "triangle"}
    for stem in true_masks:
        assert sum(float(r["pixel_fraction"]) for r in rows if r["path"].endswith(f"{stem}.png")) == pytest.approx(1)

    onnx = tmp_path / "unet.onnx"
    result = cnncli("export", f"ckpt_path={ckpt}", "format=onnx", f"out={onnx}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified" in result.stdout
    verify = json.loads(onnx.with_name("unet.onnx.verify.json").read_text())
    assert verify["metadata"]["task"] == "segmentation" and len(verify["metadata"]["palette"]) == 4
    assert verify["verified"] and verify["inputs"]["test"]["top1_agreement"] > 0.999  # of the test pixels
    result = cnncli_here("predict", f"model_file={onnx}", f"inputs=[{folder}]", f"masks_dir={tmp_path / 'onnx'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for stem in true_masks:
        from_checkpoint = np.asarray(Image.open(tmp_path / "masks" / f"{stem}_mask.png"))
        assert (np.asarray(Image.open(tmp_path / "onnx" / f"{stem}_mask.png")) == from_checkpoint).mean() > 0.999


def test_a_checkpoint_on_data_of_the_other_task_is_one_line(unet_run, short_run, tmp_path):
    result = cnncli_here("eval", f"ckpt_path={unet_run / 'checkpoints' / 'best.ckpt'}", "data=digits", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "is a segmentation checkpoint (a class per pixel), but data=digits is a classification "
            "data set: it needs a classification checkpoint"
        )
    )
    result = cnncli_here("eval", f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}", "data=shapes", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "is a classification checkpoint" in result.stderr and "data=shapes is a segmentation data set" in result.stderr
    )
    assert not (tmp_path / "eval.json").exists()


def test_viz_draws_a_unets_feature_maps_and_refuses_the_class_score_modes(unet_run, shapes_images, tmp_path):
    folder, _ = shapes_images
    ckpt = unet_run / "checkpoints" / "best.ckpt"
    result = cnncli_here("viz", "featuremaps", f"ckpt_path={ckpt}", f"image={folder / 's0.png'}", "layer=up.2.up",
                         f"out={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (picture,) = tmp_path.glob("featuremaps_s0_up.2.up*.png")  # the last up-convolution's 16 maps
    assert Image.open(picture).size[0] > 400
    for mode in ("cam", "occlusion", "guided_gradcam"):
        refused = cnncli_here("viz", mode, f"ckpt_path={ckpt}", f"image={folder / 's0.png'}", cwd=tmp_path)
        assert refused.returncode == 1
        assert (
            refused.stderr.strip()
            .splitlines()[-1]
            .endswith(
                "the modes that fit it: featuremaps, filters, deconv, guided"  # a U-Net's ReLUs take the deconvnet
            )
        )


def test_torchscript_and_torch_export_of_a_unet_verify(unet_run, tmp_path):
    ckpt = unet_run / "checkpoints" / "best.ckpt"
    for fmt, suffix in (("torchscript", ".ts"), ("exported_program", ".pt2")):
        out = tmp_path / f"unet{suffix}"
        result = cnncli_here("export", f"ckpt_path={ckpt}", f"format={fmt}", f"out={out}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        verify = json.loads(out.with_name(f"{out.name}.verify.json").read_text())
        assert verify["verified"] and verify["metadata"]["task"] == "segmentation", fmt
        assert verify["inputs"]["test"]["top1_agreement"] > 0.999, fmt


def test_leaderboard_and_compare_show_mean_iou_for_segmentation_runs(unet_run, tmp_path):
    import shutil

    shutil.copytree(unet_run, tmp_path / "runs" / "unet")
    result = cnncli_here("leaderboard", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "runs" / "leaderboard.csv") as f:
        (row,) = list(csv.DictReader(f))
    summary = json.loads((unet_run / "summary.json").read_text())
    assert float(row["test_miou"]) == pytest.approx(summary["test"]["test/miou"])
    assert float(row["best_val_miou"]) == pytest.approx(max(r["val/miou"] for r in summary["history"]))
    assert "test_acc1" not in row  # no classifier among the runs: no top-1 columns
    result = cnncli_here("compare", str(tmp_path / "runs"), f"out={tmp_path / 'c.png'}", cwd=tmp_path)
    assert result.returncode == 0 and "val mIoU" in result.stdout and (tmp_path / "c.png").is_file()
