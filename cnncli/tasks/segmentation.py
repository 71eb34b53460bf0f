"""Semantic segmentation, the task: a score map per class for every pixel (U-Net, FCN, DeepLab), trained with
per-pixel cross-entropy, Dice or both, measured by pixel accuracy, mean IoU and mean Dice from one pixel
confusion matrix per split and epoch (torchmetrics counts it). The training loop, its checks and the
checkpoint's contents are classification's (ImageClassifier); only the loss, the metrics and the reports
differ. A mask pixel equal to `data.ignore_index` counts in no loss and no metric.

A network whose output is smaller than its input (U-Net's paper variant: 572 -> 388) is scored on the
centre of the mask, cropped to the output (the overlap-tile layout of the paper's Fig. 2)."""

import logging

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from cnncli.errors import ConfigError, UserError, check_choice
from cnncli.optim import Optimization
from cnncli.plots import plot_curves
from cnncli.tasks import classification
from cnncli.tasks.classification import ImageClassifier, NonFiniteLoss, ckpt_megabytes

__all__ = ["NonFiniteLoss", "SegmentationModule", "build_module"]

METRICS = ("loss", "acc", "miou", "mdice")  # logged per split and epoch: val/loss, val/miou (pixel acc: acc)
LOSSES = ("ce", "dice", "ce+dice")
LOSS_NAMES = {"ce": "cross-entropy per pixel", "dice": "1 - soft Dice", "ce+dice": "cross-entropy + (1 - soft Dice)"}
log = logging.getLogger("cnncli")


def crop_to(masks: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The centre of the masks, as large as the network's output (the paper U-Net's valid convolutions)."""
    height, width = logits.shape[-2:]
    if masks.shape[-2:] == (height, width):
        return masks
    top, left = (masks.shape[-2] - height) // 2, (masks.shape[-1] - width) // 2
    return masks[..., top : top + height, left : left + width]


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """The class of every pixel, [N, K, H, W] -> [N, H, W]. max(1).indices, not argmax(1): on the CPU torch's
    argmax over a strided channel axis took 7 ms for 16 x 4 x 48 x 48 scores (12% of a small U-Net's step),
    max 0.26 ms."""
    return logits.max(1).indices


def scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixel accuracy, and IoU and Dice per class, from a confusion matrix (rows: true class, columns:
    predicted). A class with no pixel in the truth nor the prediction has no IoU (nan) and is left out
    of the means."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    truth, predicted = confusion.sum(1), confusion.sum(0)
    union = truth + predicted - hits
    iou = torch.where(union > 0, hits / union.clamp(min=1), torch.nan)
    dice = torch.where(union > 0, 2 * hits / (truth + predicted).clamp(min=1), torch.nan)
    return {"acc": hits.sum() / confusion.sum().clamp(min=1), "iou": iou, "dice": dice}


class ConfusionTotals:
    """A split's sums over an epoch: cross-entropy x pixels, counted pixels and the pixel confusion matrix
    (num_classes x num_classes), on the CPU in float64 (exact counts up to 2**53 pixels)."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor) -> None:
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        predicted = predicted_classes(logits.detach())
        confusion = multiclass_confusion_matrix(
            predicted, masks, self.num_classes, ignore_index=self.ignore_index, validate_args=False
        )
        pixels = (masks != self.ignore_index).sum()
        loss_sum = loss.detach().float() * pixels
        self.pending.append(torch.cat([confusion.flatten().float(), loss_sum[None], pixels[None]]))

    def flush(self) -> None:
        if self.pending:
            self.sums += torch.stack(self.pending).sum(0).cpu().double()
            self.pending = []

    def compute(self, sums: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        sums = self.sums if sums is None else sums
        k = self.num_classes
        confusion, (loss_sum, pixels) = sums[: k * k].view(k, k), sums[k * k :]
        result = scores(confusion)
        return {
            "loss": (loss_sum / pixels.clamp(min=1)).float(),
            "acc": result["acc"].float(),
            "miou": result["iou"].nanmean().float(),
            "mdice": result["dice"].nanmean().float(),
        }

    def reset(self) -> None:
        self.pending: list[torch.Tensor] = []
        self.sums = torch.zeros(self.num_classes**2 + 2, dtype=torch.float64)


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 - the soft Dice coefficient (Milletari et al. 2016), averaged over the classes present in the batch's
    masks; ignored pixels count for nothing."""
    valid = (masks != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    target = F.one_hot(masks.masked_fill(~valid[:, 0], 0), logits.shape[1]).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    overlap, total = (probs * target).sum(dims), (probs + target).sum(dims)
    present = target.sum(dims) > 0
    dice = (2 * overlap + 1) / (total + 1)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def pixel_loss(logits, masks, loss: str, class_weights: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """The run's loss (`loss`: ce, dice or ce+dice) of a batch."""
    total = 0
    if loss in ("ce", "ce+dice"):
        total = F.cross_entropy(logits, masks, weight=class_weights, ignore_index=ignore_index)
    if loss in ("dice", "ce+dice"):
        total = total + dice_loss(logits, masks, ignore_index)
    return total


class SegmentationModule(ImageClassifier):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimization: Optimization,
        loss: str = "ce",
        ignore_index: int = 255,
        class_weights: torch.Tensor | None = None,
        metadata: dict | None = None,
        channels_last: bool = False,
        head: list[str] = (),
    ):
        super().__init__(model, num_classes, optimization, 0.0, class_weights, metadata, channels_last, head)
        self.loss, self.ignore_index = loss, ignore_index
        self.totals = {split: ConfusionTotals(num_classes, ignore_index) for split in self.totals}

    def _step(self, batch, split: str) -> torch.Tensor:
        images, masks = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.model(images)
        masks = crop_to(masks, logits)
        loss = self.pixel_loss(logits, masks)
        self.totals[split].add(loss, logits, masks)
        l1 = self.optimization.l1
        if l1 and split == "train":
            loss = loss + l1 * sum(p.abs().sum() for name, p in self.model.named_parameters() if "weight" in name)
        return loss

    def pixel_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return pixel_loss(logits, masks, self.loss, self.class_weights, self.ignore_index)

    def report(self, row: dict, seconds: float) -> None:
        log.info(epoch_line(row, self.trainer.max_epochs, seconds))


def build_module(
    cfg: DictConfig, model: nn.Module, datamodule, metadata: dict, head: list[str], optimization: Optimization
) -> SegmentationModule:
    return SegmentationModule(
        model,
        num_classes=cfg.data.num_classes,
        optimization=optimization,
        loss=cfg.loss,
        ignore_index=datamodule.ignore_index,
        class_weights=datamodule.class_weights,
        metadata=metadata,
        channels_last=cfg.channels_last,
        head=head,
    )


def check_config(cfg: DictConfig) -> None:
    """The loss and the metric names early stopping, the checkpoint and a plateau schedule watch."""
    check_choice("loss", cfg.loss, LOSSES)
    if cfg.label_smoothing:
        raise ConfigError("label_smoothing", "is a classification option; segmentation takes loss=ce|dice|ce+dice")
    from cnncli.tasks import check_monitors

    check_monitors(cfg, METRICS)


def epoch_line(row: dict, max_epochs: int, seconds: float) -> str:
    parts = [f"epoch {row['epoch']}/{max_epochs - 1}"]
    for split in ("train", "val"):
        if f"{split}/loss" in row:
            parts.append(
                f"{split} loss {row[f'{split}/loss']:.4f} pixel acc {100 * row[f'{split}/acc']:.2f}% "
                f"mIoU {row[f'{split}/miou']:.4f}"
            )
    parts += [f"lr {row['lr']:.3g}", f"{seconds:.1f} s"]
    return "  ".join(parts)


def describe_run(cfg: DictConfig, model: nn.Module, datamodule, run_dir) -> None:
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = ", ".join(f"{len(dataset)} {split}" for split, dataset in datamodule.splits.items())
    name = cfg.model._target_.rsplit(".", 1)[-1]
    log.info(
        f"run {run_dir}: {name} ({params:,} parameters, {trainable:,} trainable) segmenting {cfg.data.get('name')} "
        f"({sizes} images of {cfg.data.channels}x{cfg.data.image_size}x{cfg.data.image_size} with masks, "
        f"{cfg.data.num_classes} classes), loss {cfg.loss}, batch {cfg.data.batch_size}, at most "
        f"{cfg.trainer.max_epochs} epochs; checkpoints hold about {ckpt_megabytes(trainable, cfg)} MB"
    )


def plot_run(summary: dict, path, num_classes: int) -> None:
    """curves.png: loss, and mean IoU / pixel accuracy on the second axis."""
    if summary.get("history"):
        plot_curves(summary["history"], path, best_epoch=summary.get("best", {}).get("epoch"),
                    stopped_early_at=summary.get("stopped_early_at"),
                    metrics=[("miou", "mean IoU", "-"), ("acc", "pixel accuracy", ":")],
                    loss_name=LOSS_NAMES[summary.get("loss", "ce")])  # fmt: skip


def print_summary(summary: dict) -> None:
    names = {"loss": "loss", "acc": "pixel accuracy", "miou": "mean IoU", "mdice": "mean Dice"}
    classification.print_summary(summary, names)


# ------------------------------------------------------------------------------------------- cnncli eval


def evaluate(model: nn.Module, loader, checkpoint) -> tuple[dict, list[dict]]:
    """The test split through the network, as the run's test measured it: loss, pixel accuracy, mean IoU and
    Dice (from the summed confusion matrix, so exactly the run's whatever the batch size; a Dice term of the
    loss is per batch), IoU and Dice per class, the confusion matrix; and each image's own mean IoU."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    k, ignore = checkpoint.num_classes, checkpoint.ignore_index
    loss_name = checkpoint.run_config.get("loss", "ce")
    totals, per_image, index = ConfusionTotals(k, ignore), [], 0
    model.eval()
    with torch.inference_mode():
        for images, masks in loader:
            logits = model(images)
            if not logits.isfinite().all():
                raise UserError(
                    f"{checkpoint.path}: the network's outputs are not finite (nan or inf): its weights overflow"
                )
            masks = crop_to(masks, logits)
            totals.add(pixel_loss(logits, masks, loss_name, checkpoint.class_weights, ignore), logits, masks)
            predicted = predicted_classes(logits)
            for one_predicted, one_mask in zip(predicted, masks):
                confusion = multiclass_confusion_matrix(one_predicted, one_mask, k, ignore_index=ignore)
                per_image.append({"index": index, "miou": float(scores(confusion)["iou"].nanmean())})
                index += 1
    totals.flush()
    metrics = totals.compute()
    confusion = totals.sums[: k * k].view(k, k)
    per_class = scores(confusion)
    results = {f"test/{name}": float(value) for name, value in metrics.items()}
    results["per_class"] = {
        name: {"iou": float(per_class["iou"][i]), "dice": float(per_class["dice"][i]),
               "pixels": int(confusion[i].sum())}
        for i, name in enumerate(checkpoint.class_names)
    }  # fmt: skip
    results["confusion_matrix"] = confusion.long().tolist()
    return results, per_image


def colour_masks(masks, palette: list[list[int]], ignore_index: int):
    """Masks [..., H, W] of class ids -> RGB [..., H, W, 3] in [0, 1] (ignored pixels white)."""
    colours = torch.tensor([*palette, *[[255, 255, 255]] * (256 - len(palette))], dtype=torch.float32) / 255
    return colours[masks.long().clamp(0, 255)]


def print_evaluation(results: dict, data_name: str, written: list) -> None:
    console = Console()
    overall = Table(title=f"test split of {data_name} ({results['samples']} images)")
    for column in ("loss", "pixel accuracy", "mean IoU", "mean Dice"):
        overall.add_column(column, justify="right")
    overall.add_row(*(f"{results[k]:.4f}" for k in ("test/loss", "test/acc", "test/miou", "test/mdice")))
    console.print(overall)
    classes = Table(title="per class")
    for column in ("class", "IoU", "Dice", "pixels"):
        classes.add_column(column, justify="right")
    for name, m in results["per_class"].items():
        classes.add_row(name, f"{m['iou']:.4f}", f"{m['dice']:.4f}", f"{m['pixels']:,}")
    console.print(classes)
    console.print(f"wrote {', '.join(map(str, written))}", soft_wrap=True, highlight=False)
