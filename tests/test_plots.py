"""The plots of a run: curves.png (best epoch and early stop marked, learning rate), eval's errors.png of the
worst-classified test images, and `cnncli compare` overlaying the val curves of several runs."""

import json

import numpy as np
import pytest
from conftest import cnncli, cnncli_here
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from cnncli.plots import plot_confusion_matrix, plot_curves, plot_worst_classified


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


def test_the_loss_axis_names_label_smoothing_when_the_run_used_it(tmp_path):
    fig = plot_curves(history(3), tmp_path / "curves.png", label_smoothing=0.1)
    assert fig.axes[0].get_ylabel() == "cross-entropy (label smoothing 0.1)"
    assert plot_curves(history(3), tmp_path / "plain.png", label_smoothing=0.0).axes[0].get_ylabel() == "cross-entropy"
    # as train draws it: the value read from the run's config.yaml beside curves.png
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 42\nlabel_smoothing: 0.05\n")
    assert plot_curves(history(3), run / "curves.png").axes[0].get_ylabel() == "cross-entropy (label smoothing 0.05)"


def test_errors_png_marks_misclassified_images_apart_from_correct_unsure_ones(tmp_path):
    worst = [
        {"index": 0, "true": 3, "predicted": 8, "p_true": 0.05, "p_predicted": 0.91},
        {"index": 1, "true": 5, "predicted": 5, "p_true": 0.42, "p_predicted": 0.42},
    ]
    pictures = [np.full((8, 8), 0.5), np.zeros((8, 8))]
    fig = plot_worst_classified(pictures, worst, list("0123456789"), tmp_path / "errors.png")
    wrong, unsure = fig.axes[:2]
    assert wrong.get_title() == "true 3 -> pred 8 (0.91)\np(3) = 0.05"
    assert unsure.get_title() == "correct 5 (0.42)\nlow confidence"
    red, blue = (0.839, 0.153, 0.157), (0.122, 0.467, 0.706)  # matplotlib's tab:red and tab:blue
    assert wrong.title.get_color() == "tab:red" and unsure.title.get_color() == "tab:blue"
    assert all(spine.get_edgecolor()[:3] == pytest.approx(red, abs=1e-3) for spine in wrong.spines.values())
    assert all(spine.get_edgecolor()[:3] == pytest.approx(blue, abs=1e-3) for spine in unsure.spines.values())
    assert "1 misclassified" in fig._suptitle.get_text() and "1 correct with low confidence" in fig._suptitle.get_text()
    pixels = np.asarray(Image.open(tmp_path / "errors.png").convert("RGB"), dtype=int)
    is_red = (abs(pixels - [214, 39, 40]).sum(axis=2) < 60).sum()
    is_blue = (abs(pixels - [31, 119, 180]).sum(axis=2) < 60).sum()
    assert is_red > 200 and is_blue > 200  # the frames and titles are drawn


@pytest.mark.parametrize("n", [10, 60])
def test_confusion_matrix_has_a_title_and_readable_cell_numbers(n, tmp_path):
    rng = np.random.default_rng(0)
    # a dark diagonal, a few light confusions (the cells' widest numbers: 3 digits, 0.xx), most cells empty
    matrix = np.diag(np.full(n, 300)) + (rng.random((n, n)) < 0.1) * rng.integers(1, 5, (n, n))
    title = "lenet5 on digits: test top-1 0.9740 (270 images)"
    fig = plot_confusion_matrix(matrix, [str(i) for i in range(n)], tmp_path / "cm.png", title=title)
    assert fig._suptitle.get_text() == title
    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure was closed once saved
    for ax in fig.axes[:2]:  # the two panels (their colour bars come after)
        texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
        assert set(texts) == set(zip(*matrix.nonzero()))  # a number in every cell that has images, no other
        cell = ax.get_window_extent(renderer).width / n
        light = next(cell for cell in texts if cell[0] != cell[1])
        assert texts[0, 0].get_color() == "white" and texts[light].get_color() == "black"  # dark / light cells
        size = texts[0, 0].get_fontsize()
        assert size >= (9 if n == 10 else 5)
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            assert box.width < cell and box.height < cell  # every number inside its cell
    assert Image.open(tmp_path / "cm.png").size[0] > 0


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


# ---- bad values of the picture commands: one line each, nothing drawn ---------------------------------
@pytest.mark.parametrize("count, shown", [("0", "0"), ("-4", "-4"), ("2.5", "2.5"), ("abc", "'abc'"), ("null", "None")])
def test_data_show_refuses_a_count_below_one(count, shown, tmp_path):
    result = cnncli_here("data", "show", f"count={count}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: count: must be an integer >= 1 (the images in the grid), got {shown}"
    assert list(tmp_path.iterdir()) == []


def picture_errors(tmp_path, out) -> list:
    """`data show` and `compare` with out=OUT: their exit code and one error line each."""
    results = [
        cnncli_here("data", "show", f"out={out}", cwd=tmp_path),
        cnncli_here("compare", "x", f"out={out}", cwd=tmp_path),
    ]
    for result in results:
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    return [(result.returncode, result.stderr.strip()) for result in results]


def test_data_show_and_compare_refuse_an_out_that_is_no_picture_file(tmp_path):
    expected = "error: out: must be a picture file ending in .png, .jpg, .jpeg, .pdf or .svg, got 'x.txt'"
    assert picture_errors(tmp_path, "x.txt") == [(2, expected)] * 2
    (tmp_path / "notes.txt").write_text("keep me")
    below = tmp_path / "notes.txt" / "grid.png"
    expected = f"error: out={below}: {tmp_path / 'notes.txt'} is a file, not a folder"
    assert picture_errors(tmp_path, below) == [(1, expected)] * 2
    (tmp_path / "folder.png").mkdir()
    assert (
        picture_errors(tmp_path, tmp_path / "folder.png")
        == [(1, f"error: out={tmp_path / 'folder.png'}: is a folder")] * 2
    )
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png", "notes.txt"]
