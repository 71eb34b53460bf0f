"""The pictures of a run, drawn with matplotlib (no display needed): training curves, confusion matrix,
grids of images (worst test errors, feature maps, filters) and the val curves of several runs."""

import math
import textwrap
from pathlib import Path

import matplotlib

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
) -> Figure:
    """Loss, top-1 (and top-5) for train and val by epoch, and the learning rate; the best epoch and the
    epoch early stopping ended the run are marked on every panel."""
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    epochs = [row["epoch"] for row in history]
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
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
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


def plot_confusion_matrix(matrix, class_names: list[str], path: Path) -> Figure:
    """Counts and row-normalized (recall) confusion matrices side by side."""
    counts = matrix.astype(int)
    normalized = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    n = len(class_names)
    size = min(4 + 0.45 * n, 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, title, fmt in (
        (axes[0], counts, "counts", "d"),
        (axes[1], normalized, "normalized by true class", ".2f"),
    ):
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        ax.set_xticklabels(class_names, rotation=90 if n > 10 else 0)
        ax.set_yticklabels(class_names)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    color = "white" if values[i, j] > values.max() / 2 else "black"
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    return _save(fig, path)


def plot_image_grid(
    images,
    titles: list[str],
    path: Path,
    title: str = "",
    scale_each: bool = False,
    columns: int = 8,
    cmap: str = "gray",
) -> Figure:
    """A grid of images, each [H, W] (drawn with `cmap`) or [H, W, 3] (colour), titled. Pixel values are
    in [0, 1], or with `scale_each` stretched per image from its own minimum to maximum (feature maps,
    kernels: what matters is the pattern, not the absolute level)."""
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    title_lines = max(name.count("\n") + 1 for name in titles)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.6 * columns, (1.55 + 0.15 * title_lines) * rows + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, name in zip(axes.flat, images, titles):
        low, high = (float(image.min()), float(image.max())) if scale_each else (0.0, 1.0)
        if scale_each and image.ndim == 3:  # colour: stretch all three channels together
            image, low, high = (image - low) / max(high - low, 1e-12), 0.0, 1.0
        ax.imshow(image, cmap=cmap, vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
        ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_runs(runs: list[dict], path: Path) -> Figure:
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
        ax_acc.plot(epochs, [row.get("val/acc1") for row in rows], "o-", markersize=3, color=line.get_color())
        for best in (row for row in rows if row["epoch"] == run.get("best_epoch")):
            ax_loss.plot(best["epoch"], best["val/loss"], "*", markersize=12, color=line.get_color())
            ax_acc.plot(best["epoch"], best.get("val/acc1"), "*", markersize=12, color=line.get_color())
    ax_loss.set(title="val loss (star: each run's best epoch)", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="val top-1 accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / (4.5 + legend_height), 1, 1))
    return _save(fig, path)
