"""The plots of a run: curves.png (best epoch and early stop marked, learning rate), eval's errors.png of the
worst-classified test images, and `cnncli compare` overlaying the val curves of several runs."""

import json

import numpy as np
import pytest
from conftest import cnncli, cnncli_here
from PIL import Image

from cnncli.plots import plot_curves


def history(epochs: int, lr_decay: float = 0.1) -> list[dict]:
    """Per-epoch rows as train.py writes them into summary.json, with a falling loss and a decaying rate."""
    return [
        {
            "epoch": e,
            "train/loss": 2 / (e + 1),
            "train/acc1": 0.5 + e / 40,
            "train/acc5": 0.9,
            "val/loss": 2.2 / (e + 1),
            "val/acc1": 0.45 + e / 40,
            "val/acc5": 0.88,
            "lr": 0.1 * lr_decay**e,
        }
        for e in range(epochs)
    ]


def legend_texts(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_curves_mark_the_best_epoch_and_the_early_stop_and_show_the_learning_rate(tmp_path):
    fig = plot_curves(history(8), tmp_path / "curves.png", best_epoch=4, stopped_early_at=7, top5=True)
    _, accuracy, lr = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    for ax in fig.axes:
        assert {"best epoch 4", "early stop at epoch 7"} <= set(legend_texts(ax))
    assert {"train top-1", "val top-1", "train top-5", "val top-5"} <= set(legend_texts(accuracy))
    assert lr.get_yscale() == "log"  # 0.1 ... 1e-8: decades apart
    assert list(lr.lines[0].get_ydata()) == pytest.approx([0.1 * 0.1**e for e in range(8)])
    assert Image.open(tmp_path / "curves.png").size == (1500, 400)

    fig = plot_curves(history(3, lr_decay=1), tmp_path / "plain.png", top5=False)
    assert not any("top-5" in text for text in legend_texts(fig.axes[1]))
    assert not any("best" in text or "early" in text for text in legend_texts(fig.axes[0]))
    assert fig.axes[2].get_yscale() == "linear"


def test_train_draws_the_curves_of_its_summary_with_best_epoch_and_early_stop(short_run, tmp_path):
    # redrawn from summary.json with the arguments train must have passed: the same pixels
    summary = json.loads((short_run / "summary.json").read_text())
    plot_curves(
        summary["history"],
        tmp_path / "curves.png",
        best_epoch=summary["best"]["epoch"],
        stopped_early_at=summary["stopped_early_at"],
        top5=True,
    )
    drawn = np.asarray(Image.open(short_run / "curves.png"))
    assert drawn.shape[:2] == (400, 1500)
    assert np.array_equal(drawn, np.asarray(Image.open(tmp_path / "curves.png")))


@pytest.mark.slow
def test_eval_errors_draws_the_worst_classified_test_images(short_run, tmp_path):
    result = cnncli(
        "eval", f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}", "errors=16", f"out={tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    worst = evaluation["worst"]
    assert len(worst) == 16
    assert [w["p_true"] for w in worst] == sorted(w["p_true"] for w in worst)  # worst first
    assert worst[0]["predicted"] != worst[0]["true"] and worst[0]["p_true"] < 0.5
    errors = round((1 - evaluation["test/acc1"]) * evaluation["samples"])
    misclassified = sum(w["predicted"] != w["true"] for w in worst)
    assert misclassified >= min(errors, 16) - 2  # nearly all of them wrong (a right one can have p < 0.5)
    image = Image.open(tmp_path / "errors.png")
    assert image.size == (1280, 420)  # 16 images: two rows of 8, two-line titles
    assert (np.asarray(image.convert("L")) < 250).mean() > 0.3
    assert "errors.png" in result.stdout


@pytest.fixture
def sweep(tmp_path):
    """Two runs of a sweep as train writes them (summary.json, .hydra/overrides.yaml), without training."""
    for n, (model, loss) in enumerate((("lenet5", 0.5), ("mlp", 0.9))):
        run = tmp_path / "sweep" / str(n)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n- trainer.max_epochs=3\n")
        rows = [{"epoch": e, "val/loss": loss / (e + 1), "val/acc1": 0.8 - loss / (e + 2)} for e in range(3)]
        summary = {"history": rows, "best": rows[-1], "epochs": 3, "test": {"test/acc1": 0.9}}
        (run / "summary.json").write_text(json.dumps(summary))
    return tmp_path / "sweep"


def test_compare_overlays_a_sweep_labelled_by_what_differs(sweep, tmp_path):
    result = cnncli("compare", str(sweep), f"out={tmp_path / 'compare.png'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model=lenet5" in result.stdout and "model=mlp" in result.stdout
    assert "trainer.max_epochs" not in result.stdout  # shared by every run: not a label
    image = Image.open(tmp_path / "compare.png")
    assert image.size == (1300, 495)  # two panels, a one-row legend below
    assert f"wrote {tmp_path / 'compare.png'}" in result.stdout


def test_compare_with_a_real_run_and_a_folder_that_is_not_one(sweep, short_run, tmp_path):
    result = cnncli("compare", str(sweep / "1"), str(short_run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "compare.png").is_file()  # the default name, in the working directory
    test_accuracy = json.loads((short_run / "summary.json").read_text())["test"]["test/acc1"]
    assert f"{test_accuracy:.4f}" in result.stdout and "model=mlp" in result.stdout
    # (a folder with runs anywhere below it is a sweep of them, as for the leaderboard: cnncli/runs.py)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("not a run")
    result = cnncli_here("compare", str(sweep), str(notes), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {notes} is not a run folder of cnncli train (no summary.json), nor a sweep of them"
    )
