"""cnncli eval and predict of a paper-variant U-Net, whose output (20x20) is the centre of its input (60x60):
eval scores the centre of each mask and reproduces the run's test figures at any batch size, and draws the
centre of the image beside the masks; predict writes the centre's mask and overlay, from the checkpoint and
from its ONNX export (without torch); a checkpoint of one task on data of the other is refused before the
data is built. tests/test_segmentation_commands.py runs the same commands on the README's padded U-Net."""

import csv
import json

import numpy as np
import pytest
from conftest import QUIET, cnncli, cnncli_here, cnncli_imports
from PIL import Image

from cnncli.data.shapes import draw

SIDE, OUT, TEST_IMAGES = 60, 20, 8  # depth 2, valid convolutions: 60 -> 20
CLASSES = ["background", "circle", "square", "triangle"]
VOC_COLOURS = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # the shapes' palette: VOC's first four colours


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """A small paper-variant U-Net trained 3 epochs on 60x60 shapes (8 s): masks of several classes."""
    cwd = tmp_path_factory.mktemp("paper_unet")
    result = cnncli(
        "train", "model=unet", "model.variant=paper", "model.base_channels=8", "model.depth=2",
        "data.train_size=64", "data.val_size=8", f"data.test_size={TEST_IMAGES}", f"data.image_size={SIDE}",
        "trainer.max_epochs=3", f"hydra.run.dir={cwd / 'run'}", *QUIET, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd / "run"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Two shapes images of the run's size and one larger (predict resizes it), as PNG files."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(7)
    for name, side in (("a", SIDE), ("b", SIDE), ("c", 90)):
        image, _ = draw(rng, side, 3)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{name}.png")
    return folder


def test_eval_scores_the_centre_reproduces_the_run_and_draws_the_centre(paper_run, tmp_path, monkeypatch):
    import torch

    from cnncli import plots
    from cnncli.checkpoint import Checkpoint
    from cnncli.tasks.segmentation import colour_masks

    drawn = []
    plot_segmentation_grid = plots.plot_segmentation_grid

    def keep(rows, *args, **kwargs):  # the rows masks.png is drawn from
        drawn.extend(rows)
        return plot_segmentation_grid(rows, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_segmentation_grid", keep)
    ckpt = paper_run / "checkpoints" / "best.ckpt"
    result = cnncli_here("eval", f"ckpt_path={ckpt}", f"out={tmp_path}", "batch_size=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    run = json.loads((paper_run / "summary.json").read_text())["test"]
    for metric in ("acc", "miou", "mdice"):  # one summed confusion matrix: the run's figures, batch 3 or 16
        assert report[f"test/{metric}"] == run[f"test/{metric}"], metric
    assert report["test/loss"] == pytest.approx(run["test/loss"], rel=0.05)  # its Dice term is per batch
    per_class = report["per_class"]
    assert list(per_class) == CLASSES
    assert sum(row["pixels"] for row in per_class.values()) == TEST_IMAGES * OUT * OUT  # the centres only
    assert np.nanmean([row["iou"] for row in per_class.values()]) == pytest.approx(report["test/miou"], abs=1e-6)
    assert np.nanmean([row["dice"] for row in per_class.values()]) == pytest.approx(report["test/mdice"], abs=1e-6)
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (4, 4) and confusion.sum() == TEST_IMAGES * OUT * OUT
    assert [int(row.sum()) for row in confusion] == [row["pixels"] for row in per_class.values()]
    for line in ("mean IoU", "mean Dice", "per class", "triangle", "masks.png"):
        assert line in result.stdout, line

    worst, best = report["worst"], report["best"]
    assert len(worst) == len(best) == 4 and {r["index"] for r in worst + best} == set(range(TEST_IMAGES))
    ious = [r["miou"] for r in worst + best[::-1]]
    assert ious == sorted(ious)
    assert [title for *_, title in drawn] == [
        f"{label}: image {r['index']}, IoU {r['miou']:.3f}" for label, rows in (("worst", worst), ("best", best))
        for r in rows
    ]  # fmt: skip
    checkpoint = Checkpoint(ckpt)
    data = checkpoint.datamodule(False)
    data.setup("test")
    dataset = data.test_dataloader().dataset
    mean, std = (torch.tensor(checkpoint.normalization[k]).view(-1, 1, 1) for k in ("mean", "std"))
    centre = slice((SIDE - OUT) // 2, (SIDE + OUT) // 2)
    for (picture, true, predicted, _), row in zip(drawn, worst + best):
        image, mask = dataset[row["index"]]
        assert picture.shape == true.shape == predicted.shape == (OUT, OUT, 3)
        assert np.allclose(true, colour_masks(mask[centre, centre], checkpoint.palette, 255).numpy())
        assert np.allclose(picture, (image * std + mean).clamp(0, 1)[:, centre, centre].permute(1, 2, 0).numpy())
    for picture in ("masks.png", "confusion_matrix.png"):
        assert Image.open(tmp_path / picture).size[0] > 500, picture


def test_eval_masks_is_a_count(paper_run, tmp_path):
    ckpt = paper_run / "checkpoints" / "best.ckpt"
    result = cnncli_here("eval", f"ckpt_path={ckpt}", "masks=-1", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: masks: must be an integer >= 0, got -1"]
    result = cnncli_here("eval", f"ckpt_path={ckpt}", "masks=0", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "eval.json").is_file() and not (tmp_path / "masks.png").exists()


def test_a_checkpoint_on_data_of_the_other_task_is_refused_before_the_data_is_built(paper_run, short_run, tmp_path):
    """segfolder without data.root would fail on its root: the task is refused first, from the data config."""
    unet, classifier = (run / "checkpoints" / "best.ckpt" for run in (paper_run, short_run))
    for ckpt, data, line in (
        (unet, "digits", "is a segmentation checkpoint (a class per pixel), but data=digits is a classification "
                         "data set: it needs a classification checkpoint"),
        (classifier, "segfolder", "is a classification checkpoint (a class per image), but data=segfolder is a "
                                  "segmentation data set: it needs a segmentation checkpoint"),
    ):  # fmt: skip
        result = cnncli_here("eval", f"ckpt_path={ckpt}", f"data={data}", f"out={tmp_path}", cwd=tmp_path)
        assert result.returncode == 1, data
        (message,) = result.stderr.strip().splitlines()
        assert message == f"error: {ckpt} {line}"
    assert list(tmp_path.iterdir()) == []


def test_predict_writes_the_centres_mask_and_overlay_and_lists_an_unreadable_file(paper_run, pictures, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    masks = tmp_path / "masks"
    ckpt, inputs = paper_run / "checkpoints" / "best.ckpt", f"inputs=[{pictures},{tmp_path / 'notes.png'}]"
    result = cnncli_here(
        "predict", f"ckpt_path={ckpt}", inputs, f"masks_dir={masks}", f"output={tmp_path / 'pred.csv'}", cwd=tmp_path
    )
    assert result.returncode == 1  # the readable images are predicted, the unreadable one named
    assert "not predicted unreadable image file" in result.stdout and "notes.png" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 4 files could not be read (listed above)"
    with open(tmp_path / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(CLASSES) and [r["class"] for r in rows[:4]] == CLASSES
    palette = np.array(VOC_COLOURS, dtype=float).reshape(4, 3)
    centre = slice((SIDE - OUT) // 2, (SIDE + OUT) // 2)
    for name in ("a", "b", "c"):
        mask = Image.open(masks / f"{name}_mask.png")
        assert mask.mode == "P" and mask.size == (OUT, OUT) and mask.getpalette()[:12] == VOC_COLOURS
        ids = np.asarray(mask)
        assert ids.max() < len(CLASSES)
        mine = [r for r in rows if r["path"] == str(pictures / f"{name}.png")]
        counts = np.bincount(ids.ravel(), minlength=len(CLASSES))
        assert [float(r["pixel_fraction"]) for r in mine] == pytest.approx(counts / OUT**2, abs=1e-6)
        assert {r["mask"] for r in mine} == {str(masks / f"{name}_mask.png")}
        overlay = np.asarray(Image.open(masks / f"{name}_overlay.png"), dtype=float)
        assert overlay.shape == (OUT, OUT, 3)
        if name == "c":
            continue  # resized: its pixels are not the file's
        image = np.asarray(Image.open(pictures / f"{name}.png"), dtype=float)[centre, centre]
        # the centre of the file's pixels; a class drawn black (background) leaves them, the others half their colour
        expected = np.where((ids == 0)[..., None], image, (palette[ids] + image) / 2)
        assert np.abs(overlay - expected).max() <= 1
    assert "pixels" in result.stdout and str(masks / "a_overlay.png") in result.stdout


def test_predict_refuses_two_images_that_would_write_one_mask(paper_run, pictures, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes((pictures / "a.png").read_bytes())
    masks = tmp_path / "masks"
    ckpt, inputs = paper_run / "checkpoints" / "best.ckpt", f"inputs=[{pictures / 'a.png'},{tmp_path / 'sub'}]"
    result = cnncli_here("predict", f"ckpt_path={ckpt}", inputs, f"masks_dir={masks}", cwd=tmp_path)
    assert result.returncode == 1
    first, second = pictures / "a.png", tmp_path / "sub" / "a.png"
    assert result.stderr.strip().splitlines() == [
        f"error: {first} and {second} would both be written as {masks / 'a'}_mask.png: predict them in separate "
        "runs (another masks_dir) or rename one"
    ]
    assert not masks.exists()


def test_predict_from_the_onnx_export_writes_the_same_masks_without_torch(paper_run, pictures, tmp_path):
    ckpt, onnx = paper_run / "checkpoints" / "best.ckpt", tmp_path / "unet.onnx"
    result = cnncli_here("export", f"ckpt_path={ckpt}", "format=onnx", f"out={onnx}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = cnncli_here("predict", f"ckpt_path={ckpt}", f"inputs=[{pictures}]", f"masks_dir={tmp_path / 'ckpt'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = f"masks_dir={tmp_path / 'onnx'}", f"output={tmp_path / 'onnx.csv'}"
    result, imported = cnncli_imports("predict", f"model_file={onnx}", f"inputs=[{pictures}]", *outputs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch" not in imported and "onnxruntime" in imported
    for name in ("a", "b", "c"):
        from_onnx, from_checkpoint = (Image.open(tmp_path / where / f"{name}_mask.png") for where in ("onnx", "ckpt"))
        assert from_onnx.mode == "P" and from_onnx.getpalette()[:12] == VOC_COLOURS
        assert (np.asarray(from_onnx) == np.asarray(from_checkpoint)).mean() > 0.99, name
    with open(tmp_path / "onnx.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(CLASSES)
    for name in ("a", "b", "c"):
        shares = [float(r["pixel_fraction"]) for r in rows if r["path"].endswith(f"{name}.png")]
        assert sum(shares) == pytest.approx(1, abs=1e-5)
