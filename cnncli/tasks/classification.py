"""Image classification, the task: the LightningModule (any nn.Module of the zoo, trained with cross-entropy,
measured by top-1/top-5), its epoch metrics, and how a run of it is reported (the summary table, curves.png).
A sibling task (segmentation) sits beside this file with its own module, metrics and plots, and shares the
trainer (cnncli/trainer.py), data, run folders (cnncli/runs.py), checkpoints and export."""

import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from cnncli import checkpoint as ckpt
from cnncli.errors import ConfigError, UserError
from cnncli.optim import Optimization
from cnncli.plots import plot_curves

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers (Szegedy et al. 2014)
SPLITS = ("train", "val", "test")
METRICS = ("loss", "acc1", "acc5")  # logged per split and epoch as train/loss, val/acc1, ...
log = logging.getLogger("cnncli")  # the terminal and train.log (conf/hydra/job_logging/run.yaml)


class EpochTotals:
    """A split's sums over an epoch: cross-entropy x images, top-1 and top-5 hits, images. A step only keeps its
    detached loss, logits and labels; they are added up every few dozen steps in a handful of whole-tensor
    operations (a dozen small operations on every step cost ~0.2 ms, 3-4% of a LeNet-5 step on a CPU). The
    sums stay on the CPU in float64. Top-5 is clipped to the number of classes, so a 2-class data set still
    has a (trivial) top-5."""

    FLUSH_STEPS, FLUSH_LOGITS = 50, 2**22  # add up after this many steps, or this many pending logits

    def __init__(self, num_classes: int):
        self.num_classes, self.top_k = num_classes, min(5, num_classes)
        self.reset()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.pending.append((loss.detach(), logits.detach(), labels))
        self.pending_logits += logits.numel()
        if len(self.pending) >= self.FLUSH_STEPS or self.pending_logits >= self.FLUSH_LOGITS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        losses, logits, labels = zip(*self.pending)
        sizes = torch.tensor([len(y) for y in labels], dtype=torch.float32, device=losses[0].device)
        logits, labels = torch.cat(logits), torch.cat(labels)
        hits = logits.topk(self.top_k, dim=1).indices == labels[:, None]
        sums = torch.stack(
            [
                (torch.stack(losses).float() * sizes).sum(),
                hits[:, 0].sum().float(),
                hits.any(dim=1).sum().float(),
                sizes.sum(),
            ]
        )
        self.sums += sums.cpu().double()  # float32 counts are exact up to 2**24 images per flush
        self.pending, self.pending_logits = [], 0

    def compute(self, sums: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """loss, acc1, acc5 from `sums` (default: this process's; under DDP the module passes all ranks')."""
        loss_sum, top1, top5, images = (self.sums if sums is None else sums).float()
        images = images.clamp(min=1)
        return {"loss": loss_sum / images, "acc1": top1 / images, "acc5": top5 / images}

    def reset(self) -> None:
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.pending_logits = 0
        self.sums = torch.zeros(4, dtype=torch.float64)  # loss x images, top-1 hits, top-5 hits, images


class NonFiniteLoss(UserError):
    """The training loss became nan or inf: the run stops before the weights are saved."""


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimization: Optimization,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        metadata: dict | None = None,
        channels_last: bool = False,
        head: list[str] = (),
    ):
        super().__init__()
        self.model = model
        self.optimization = optimization  # the optimizer and schedule factories (conf/optimizer, conf/scheduler)
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights)
        self.metadata = metadata or {}  # run config, class names, normalization: stored in every checkpoint
        self.head = list(head)  # the model's head layers (its card): optimizer.backbone_lr_mult
        self.channels_last = channels_last  # feed NHWC batches (the weights are converted by cnncli train)
        # Loss, top-1 and top-5 accumulate over an epoch and are logged once at its end: a self.log per step
        # costs more than LeNet-5's forward pass
        self.totals = {split: EpochTotals(num_classes) for split in SPLITS}
        self.history: list[dict] = []  # one row of epoch metrics per training epoch: curves.png, summary.json
        self._val_epoch: tuple[int, dict] | None = None
        self._epoch_started = 0.0
        # a list while a learning-rate range test drives it (cnncli/lr_finder.py): each step's loss is kept, a
        # non-finite loss ends the test (not the process), and no epoch lines are reported
        self.range_losses: list[float] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = self.model(images)
        logits, aux_logits = (outputs[0], outputs[1:]) if isinstance(outputs, (tuple, list)) else (outputs, ())
        loss = F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self.totals[split].add(loss, logits, labels)
        if aux_logits:
            loss = loss + AUX_LOSS_WEIGHT * sum(F.cross_entropy(aux, labels) for aux in aux_logits if aux is not None)
        l1 = self.optimization.l1
        if l1 and split == "train":
            loss = loss + l1 * sum(p.abs().sum() for name, p in self.model.named_parameters() if "weight" in name)
        return loss

    def _log_epoch(self, split: str) -> dict[str, float]:
        """Log the split's epoch metrics (cross-entropy as in the loss, top-1, top-5) and start afresh."""
        totals = self.totals[split]
        totals.flush()
        sums = totals.sums
        if self.trainer.world_size > 1:  # DDP: every rank's sums (each image counted once: see data/memory.py)
            sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()
        values = {f"{split}/{name}": value for name, value in totals.compute(sums).items()}
        totals.reset()
        self.log_dict(values, prog_bar=split == "val")
        return {k: float(v) for k, v in values.items()}

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        # Stop before the optimizer steps on it: the weights (and the checkpoints written at epoch ends) stay
        # finite. One read of the loss per step; on a GPU it waits for the step's kernels (a sync).
        value = loss.item()
        if self.range_losses is not None:
            self.range_losses.append(value)
        if not math.isfinite(value):
            if self.range_losses is not None:  # the rate is past divergence: the test ends, the optimizer rests
                self.trainer.should_stop = True
                return None
            checkpoint = self.trainer.checkpoint_callback
            last = checkpoint.last_model_path if checkpoint else ""
            kept = f"its last good checkpoint is {last}" if last and Path(last).is_file() else "no checkpoint was saved"
            raise NonFiniteLoss(
                f"loss is {value} at epoch {self.current_epoch}, step {self.global_step} (batch {batch_idx} of "
                f"the epoch); the run stopped, {kept}. Lower optimizer.lr, set trainer.gradient_clip_val or check "
                "the data"
            )
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self._val_epoch = (self.current_epoch, values)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        # Validation of this epoch has run by now (Lightning validates before the train epoch ends).
        row = {"epoch": self.current_epoch, **self._log_epoch("train")}
        if self._val_epoch and self._val_epoch[0] == self.current_epoch:
            row.update(self._val_epoch[1])
        row["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.history.append(row)
        if self.trainer.is_global_zero and self.range_losses is None:
            self.report(row, time.perf_counter() - self._epoch_started)

    def report(self, row: dict, seconds: float) -> None:
        """The epoch's line in the terminal and train.log, and a warning when the network is not learning."""
        log.info(epoch_line(row, self.trainer.max_epochs, seconds))
        if warning := chance_warning(self.history, self.totals["val"].num_classes):
            log.warning(warning)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        ckpt.store(checkpoint, self.metadata, self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is None or self._trainer.state.fn != TrainerFn.FITTING:
            return  # trainer.test(ckpt_path=best) after the fit takes the weights, not the history
        self.history = ckpt.restore(checkpoint)

    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        return self.optimization.configure(self.model.named_parameters(), self.head, steps)


def build_module(
    cfg: DictConfig, model: nn.Module, datamodule, metadata: dict, head: list[str], optimization: Optimization
) -> "ImageClassifier":
    """The LightningModule of a run config: its loss options, optimizer and schedule, class weights."""
    return ImageClassifier(
        model,
        num_classes=cfg.data.num_classes,
        optimization=optimization,
        label_smoothing=cfg.label_smoothing,
        class_weights=datamodule.class_weights,
        metadata=metadata,
        channels_last=cfg.channels_last,
        head=head,
    )


def check_config(cfg: DictConfig) -> None:
    """The loss, and the metric names that early stopping, the checkpoint and a plateau schedule watch must
    be ones this task logs (else Lightning fails at the end of the first epoch, with no checkpoint)."""
    if cfg.get("loss", "ce") != "ce":
        raise ConfigError("loss", f"{cfg.loss!r}: a classifier trains with ce (cross-entropy); dice is segmentation's")
    from cnncli.tasks import check_monitors

    check_monitors(cfg, METRICS)


def epoch_line(row: dict, max_epochs: int, seconds: float) -> str:
    """One line per epoch, as Keras prints it: epoch, train loss / top-1, val loss / top-1, lr, time."""
    parts = [f"epoch {row['epoch']}/{max_epochs - 1}"]
    for split in ("train", "val"):
        if f"{split}/loss" in row:
            parts.append(f"{split} loss {row[f'{split}/loss']:.4f} top-1 {100 * row[f'{split}/acc1']:.2f}%")
    parts += [f"lr {row['lr']:.3g}", f"{seconds:.1f} s"]
    return "  ".join(parts)


def describe_run(cfg: DictConfig, model: nn.Module, datamodule, run_dir) -> None:
    """What was built, at the start of the run's log, and a warning where the run is unlikely to learn: a batch
    larger than the training split, a network far larger than its data (trained from scratch)."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = {split: len(dataset) for split, dataset in getattr(datamodule, "splits", {}).items()}
    images = ", ".join(f"{n} {split}" for split, n in sizes.items())
    name, data = cfg.model._target_.rsplit(".", 1)[-1], cfg.data.get("name")
    log.info(
        f"run {run_dir}: {name} ({params:,} parameters, {trainable:,} trainable) on {data} ({images} images of "
        f"{cfg.data.channels}x{cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.num_classes} classes), "
        f"batch {cfg.data.batch_size}, at most {cfg.trainer.max_epochs} epochs"
    )
    train_images = sizes.get("train", 0)
    if train_images and cfg.data.batch_size > train_images:
        log.warning(
            f"warning: data.batch_size={cfg.data.batch_size} is larger than the {train_images} training images: "
            "one step per epoch"
        )
    from_scratch = not (cfg.model.get("pretrained") or cfg.model.get("weights"))
    if train_images and from_scratch and trainable > PARAMS_PER_IMAGE * train_images:
        log.warning(
            f"warning: {name} has {trainable:,} trainable parameters for {train_images:,} training images "
            f"({trainable // train_images:,} per image): from scratch it may not learn at all, and each "
            f"checkpoint holds about {ckpt_megabytes(trainable, cfg)} MB; a smaller model or model.pretrained=true "
            "fits this data better"
        )


PARAMS_PER_IMAGE = 1000  # LeNet-5 on digits has 49; VGG-16 on digits 107,000, and it stays at chance
CHANCE_EPOCHS = 3  # validation epochs at chance level before the run says so


def chance_warning(history: list[dict], num_classes: int) -> str | None:
    """Said once, after the first CHANCE_EPOCHS epochs, if their val top-1 never rose above chance (1 / classes,
    with a margin): the network is not learning."""
    rows = [row for row in history if "val/acc1" in row]
    chance = 1 / num_classes
    if len(rows) != CHANCE_EPOCHS or any(row["val/acc1"] > 1.2 * chance for row in rows):
        return None
    return (
        f"warning: val top-1 has stayed at chance ({100 * chance:.0f}%) for {CHANCE_EPOCHS} epochs: the network is "
        "not learning; try a lower optimizer.lr or a smaller model"
    )


def ckpt_megabytes(params: int, cfg: DictConfig) -> int:
    """float32 weights plus the optimizer's state (Adam keeps two values per weight, SGD with momentum one)."""
    name = str(cfg.optimizer.get("_target_", "")).lower()
    copies = 3 if "adam" in name else 2 if cfg.optimizer.get("momentum") else 1
    return round(params * 4 * copies / 2**20)


def plot_run(summary: dict, path, num_classes: int) -> None:
    """curves.png: loss, top-1 (top-5 above 5 classes), the best epoch and the early stop marked."""
    if summary.get("history"):
        plot_curves(summary["history"], path, best_epoch=summary.get("best", {}).get("epoch"),
                    stopped_early_at=summary.get("stopped_early_at"), top5=num_classes > 5)  # fmt: skip


def print_summary(summary: dict, metrics: dict[str, str] | None = None) -> None:
    """The run's table: each metric (`metrics`: key -> label) at the final and best epochs (val) and on test."""
    metrics = metrics or {"loss": "loss", "acc1": "acc1", "acc5": "acc5"}
    table = Table(title=f"{summary['model'].rsplit('.', 1)[-1]} on {summary['data']}: {summary['status']}")
    table.add_column("metric")
    for column in ("final epoch", "best epoch", "test (best ckpt)"):
        table.add_column(column, justify="right")
    final, best, test = summary["final"], summary["best"], summary["test"]
    table.add_row("epoch", str(final.get("epoch", "")), str(best.get("epoch", "")), "")
    for metric, label in metrics.items():
        cells = [row.get(f"{split}/{metric}") for row, split in ((final, "val"), (best, "val"), (test, "test"))]
        table.add_row(f"{label} (val / test)", *("" if c is None else f"{c:.4f}" for c in cells))
    console = Console()
    console.print(table)
    console.print(f"best checkpoint: {summary['best_checkpoint'] or '(none saved)'}")
    console.print(f"run folder: {summary['run_dir']}")
