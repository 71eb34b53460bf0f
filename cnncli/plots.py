"""The pictures of a run, drawn with matplotlib (no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and top-1 accuracy for train and val, by epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [row["epoch"] for row in history]
    for split in ("train", "val"):
        ax_loss.plot(epochs, [row.get(f"{split}/loss") for row in history], marker="o", label=split)
        ax_acc.plot(epochs, [row.get(f"{split}/acc1") for row in history], marker="o", label=split)
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="top-1 accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(matrix, class_names: list[str], path: Path) -> None:
    """Counts and row-normalized (recall) confusion matrices side by side."""
    counts = matrix.astype(int)
    normalized = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    n = len(class_names)
    size = min(4 + 0.45 * n, 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalized, "normalized by true class", ".2f")):
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
