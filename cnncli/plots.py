"""The pictures of a run, drawn with matplotlib (no display needed): training curves, confusion matrix,
grids of images (worst test errors, feature maps, filters) and the val curves of several runs."""

import math
import textwrap
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(fig: Figure, path: Path) -> Figure:
    """Write the PNG at a fixed size (no tight bounding box: the same plot always has the same pixels)."""
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def plot_curves(
    history: list[dict],
    path: Path,
    best_epoch: int | None = None,
    stopped_early_at: int | None = None,
    top5: bool = True,
    label_smoothing: float | None = None,
    metrics: list[tuple[str, str, str]] | None = None,
    loss_name: str | None = None,
) -> Figure:
    """Loss, top-1 (and top-5) for train and val by epoch, and the learning rate; the best epoch and the
    epoch early stopping ended the run are marked on every panel. The loss axis names label smoothing when
    the run trained with it (its loss is then higher than plain cross-entropy); None: read it from the run's
    config.yaml beside `path`, which train writes before training. `metrics` (key, name, line style) and
    `loss_name`: another task's (segmentation: mean IoU and pixel accuracy)."""
    if label_smoothing is None and loss_name is None:
        label_smoothing = run_label_smoothing(Path(path).parent)
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    epochs = [row["epoch"] for row in history]
    if metrics is None:
        metrics = [("acc1", "top-1", "-")] + ([("acc5", "top-5", ":")] if top5 else [])
    for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
        ax_loss.plot(epochs, [row.get(f"{split}/loss") for row in history], "o-", color=color, label=split)
        for key, name, style in metrics:
            ax_acc.plot(
                epochs,
                [row.get(f"{split}/{key}") for row in history],
                style,
                marker="o",
                markersize=3,
                color=color,
                label=f"{split} {name}",
            )
    ax_lr.plot(epochs, [row.get("lr") for row in history], "o-", color="tab:green", label="learning rate")
    rates = [row["lr"] for row in history if row.get("lr")]
    if rates and max(rates) > 10 * min(rates):  # a schedule that decays by decades reads better on a log axis
        ax_lr.set_yscale("log")
    if loss_name is None:
        loss_name = f"cross-entropy (label smoothing {label_smoothing:g})" if label_smoothing else "cross-entropy"
    ax_loss.set(title="loss", xlabel="epoch", ylabel=loss_name)
    accuracy = "accuracy" if metrics[0][0] == "acc1" else " / ".join(name for _, name, _ in metrics)
    ax_acc.set(title=accuracy, xlabel="epoch", ylabel=accuracy)
    ax_lr.set(title="learning rate", xlabel="epoch", ylabel="learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="black", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        if stopped_early_at is not None:
            ax.axvline(
                stopped_early_at,
                color="tab:red",
                linestyle=":",
                linewidth=1.5,
                label=f"early stop at epoch {stopped_early_at}",
            )
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    # fixed margins for this fixed-size figure: what tight_layout finds, without its 0.07 s a run
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.12, top=0.93, wspace=0.26)
    return _save(fig, path)


def run_label_smoothing(run_dir: Path) -> float:
    """The label smoothing a run trained with, from its config.yaml (0 when there is none to read)."""
    try:
        value = (yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}).get("label_smoothing")
    except (OSError, yaml.YAMLError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0


# cell numbers below this size (points) are not readable at the saved 100 dpi: the colours alone are drawn
MIN_CELL_FONT = 5


def cell_font_size(cell_points: float, longest: int) -> float:
    """The font size (points) that fits `longest` characters in a square cell: digits are about 0.6 em wide;
    at most 0.55 of the cell high, and never above 12."""
    return min(12.0, 0.85 * cell_points / (0.6 * max(longest, 1)), 0.55 * cell_points)


def plot_confusion_matrix(matrix, class_names: list[str], path: Path, title: str = "") -> Figure:
    """Counts and row-normalized (recall) confusion matrices side by side, under `title` (model, data,
    accuracy). Each cell's number is sized to fit its cell (left out where it could not be read) and drawn
    white on dark cells, black on light ones; cells no image fell into stay blank."""
    counts = matrix.astype(int)
    normalized = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    n = len(class_names)
    size = min(4 + 0.45 * n, 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size + (0.4 if title else 0)))
    panels = ((axes[0], counts, "counts", "d"), (axes[1], normalized, "normalized by true class", ".2f"))
    images = []
    for ax, values, name, _ in panels:
        images.append(ax.imshow(values, cmap="Blues"))
        fig.colorbar(images[-1], ax=ax, fraction=0.046)
        ax.set(title=name, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        ax.set_xticklabels(class_names, rotation=90 if n > 10 else 0)
        ax.set_yticklabels(class_names)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    for (ax, values, _, fmt), image in zip(panels, images):
        # the cells' size is known once the layout is done: the numbers are fitted to it
        cell_points = ax.get_window_extent().width / n * 72 / fig.dpi
        texts = [[format(values[i, j], fmt) for j in range(n)] for i in range(n)]
        fontsize = cell_font_size(cell_points, max(len(t) for row in texts for t in row))
        if fontsize < MIN_CELL_FONT:
            continue
        rgb = image.cmap(image.norm(values))[..., :3]
        light = rgb @ [0.299, 0.587, 0.114] > 0.5  # each cell's luminance: black text on light, white on dark
        for i, j in zip(*counts.nonzero()):  # an empty cell stays blank: the confusions that happen stand out
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=fontsize,
                    color="black" if light[i, j] else "white")  # fmt: skip
    return _save(fig, path)


def plot_image_grid(
    images,
    titles: list[str],
    path: Path,
    title: str = "",
    scale_each: bool = False,
    columns: int = 8,
    cmap: str = "gray",
    colors: list[str | None] | None = None,
) -> Figure:
    """A grid of images, each [H, W] (drawn with `cmap`) or [H, W, 3] (colour), titled. Pixel values are
    in [0, 1], or with `scale_each` stretched per image from its own minimum to maximum (feature maps,
    kernels: what matters is the pattern, not the absolute level). `colors`: per image, a colour for its
    title and a frame around it (None: neither)."""
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    title_lines = max(name.count("\n") + 1 for name in titles)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.6 * columns, (1.55 + 0.15 * title_lines) * rows + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, name, color in zip(axes.flat, images, titles, colors or [None] * len(images)):
        low, high = (float(image.min()), float(image.max())) if scale_each else (0.0, 1.0)
        if scale_each and image.ndim == 3:  # colour: stretch all three channels together
            image, low, high = (image - low) / max(high - low, 1e-12), 0.0, 1.0
        ax.imshow(image, cmap=cmap, vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
        ax.set_title(name, fontsize=8, color=color or "black")
        if color:  # a frame: the axes back on, without ticks, its spines in the colour
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color=color, linewidth=3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# errors.png: a misclassified image, and a correct one that still got a low probability for its class
WRONG_COLOR, LOW_CONFIDENCE_COLOR = "tab:red", "tab:blue"


def plot_worst_classified(pictures, worst: list[dict], names: list[str], path: Path) -> Figure:
    """errors.png: test images given the lowest probability of their true class (`worst`: eval's rows of
    index, true, predicted, p_true, p_predicted). Those misclassified are framed and titled in red, "true 3 ->
    pred 8 (0.91)"; those classified right, only with low confidence, in blue, "correct 3 (0.42)"."""
    titles, colors = [], []
    for row in worst:
        true, predicted = names[row["true"]], names[row["predicted"]]
        if row["true"] != row["predicted"]:
            titles.append(
                f"true {true} -> pred {predicted} ({row['p_predicted']:.2f})\np({true}) = {row['p_true']:.2f}"
            )
            colors.append(WRONG_COLOR)
        else:
            titles.append(f"correct {true} ({row['p_true']:.2f})\nlow confidence")
            colors.append(LOW_CONFIDENCE_COLOR)
    wrong = colors.count(WRONG_COLOR)
    title = (
        f"the {len(worst)} test images with the lowest probability of their true class: "
        f"{wrong} misclassified (red: true -> predicted (its probability)), "
        f"{len(worst) - wrong} correct with low confidence (blue)"
    )
    return plot_image_grid(pictures, titles, path, title=title, colors=colors)


def plot_segmentation_grid(rows: list[tuple], class_names: list[str], palette: list[list[int]], path: Path,
                           title: str = "") -> Figure:  # fmt: skip
    """masks.png of cnncli eval: one row per test image, (picture, true mask, predicted mask, row title), the
    masks already coloured [H, W, 3] in [0, 1]; a legend of the class colours below."""
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows) + 0.9), squeeze=False)
    for (picture, true, predicted, name), ax_row in zip(rows, axes):
        for ax, image, column in zip(ax_row, (picture, true, predicted), ("image", "true mask", "predicted mask")):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}\n{column}" if column == "image" else column, fontsize=8)
    handles = [Patch(color=[c / 255 for c in colour], label=n) for n, colour in zip(class_names, palette)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    height = 2.4 * len(rows) + 0.9
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1 - 0.35 / height))
    return _save(fig, path)


def plot_runs(runs: list[dict], path: Path, metric: str = "acc1", metric_name: str = "top-1 accuracy") -> Figure:
    """The val loss and val top-1 of several runs by epoch, one colour per run: `runs` holds
    {"label": legend text, "history": summary.json's per-epoch rows, "best_epoch": the checkpointed epoch};
    each run's best epoch is starred."""
    columns = 1 if max(len(run["label"]) for run in runs) > 50 else min(len(runs), 3)
    legend_height = 0.25 * math.ceil(len(runs) / columns) + 0.2  # inches below the plots
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5 + legend_height))
    for run in runs:
        rows = [row for row in run["history"] if "val/loss" in row]
        epochs = [row["epoch"] for row in rows]
        label = textwrap.shorten(run["label"], 150)
        (line,) = ax_loss.plot(epochs, [row["val/loss"] for row in rows], "o-", markersize=3, label=label)
        ax_acc.plot(epochs, [row.get(f"val/{metric}") for row in rows], "o-", markersize=3, color=line.get_color())
        for best in (row for row in rows if row["epoch"] == run.get("best_epoch")):
            ax_loss.plot(best["epoch"], best["val/loss"], "*", markersize=12, color=line.get_color())
            ax_acc.plot(best["epoch"], best.get(f"val/{metric}"), "*", markersize=12, color=line.get_color())
    ax_loss.set(title="val loss (star: each run's best epoch)", xlabel="epoch", ylabel="loss")
    ax_acc.set(title=f"val {metric_name}", xlabel="epoch", ylabel=metric_name)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (4.5 + legend_height), 1, 1))
    return _save(fig, path)
