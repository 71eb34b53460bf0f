"""The LightningModule: any nn.Module from the zoo, trained with cross-entropy, measured by top-1/top-5."""

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cnncli.optim import build_optimizer, build_scheduler

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers (Szegedy et al. 2014)
SPLITS = ("train", "val", "test")


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: DictConfig,
        scheduler: DictConfig,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        metadata: dict | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_cfg, self.scheduler_cfg = optimizer, scheduler
        self.label_smoothing, self.l1 = label_smoothing, optimizer.get("l1", 0.0)
        self.register_buffer("class_weights", class_weights)
        self.metadata = metadata or {}  # run config, class names, normalization: stored in every checkpoint
        # top-5 is clipped to the number of classes, so a 2-class data set still has a (trivial) top-5
        metrics = MetricCollection(
            {
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            }
        )
        # Metrics accumulate over an epoch and are logged once at its end: a self.log per step costs more than
        # LeNet-5's forward pass. torchmetrics also gathers them across processes under DDP.
        # (keys get a suffix: nn.Module has a method named `train`)
        self.metrics = nn.ModuleDict({f"{split}_metrics": metrics.clone(prefix=f"{split}/") for split in SPLITS})
        self.losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in SPLITS})
        self.history: list[dict] = []  # one row of epoch metrics per training epoch: curves.png, summary.json
        self._val_epoch: tuple[int, dict] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        outputs = self.model(images)
        logits, aux_logits = (outputs[0], outputs[1:]) if isinstance(outputs, (tuple, list)) else (outputs, ())
        loss = F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self.losses[f"{split}_loss"].update(loss.detach(), weight=len(labels))
        self.metrics[f"{split}_metrics"].update(logits.detach(), labels)
        if aux_logits:
            loss = loss + AUX_LOSS_WEIGHT * sum(F.cross_entropy(aux, labels) for aux in aux_logits if aux is not None)
        if self.l1 and split == "train":
            loss = loss + self.l1 * sum(p.abs().sum() for name, p in self.model.named_parameters() if "weight" in name)
        return loss

    def _log_epoch(self, split: str) -> dict[str, float]:
        """Log the split's epoch metrics (cross-entropy as in the loss, top-1, top-5) and start afresh."""
        loss, metrics = self.losses[f"{split}_loss"], self.metrics[f"{split}_metrics"]
        values = {f"{split}/loss": loss.compute(), **metrics.compute()}
        loss.reset()
        metrics.reset()
        self.log_dict(values, prog_bar=split == "val")
        return {k: float(v) for k, v in values.items()}

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

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

    def on_train_epoch_end(self) -> None:
        # Validation of this epoch has run by now (Lightning validates before the train epoch ends).
        row = {"epoch": self.current_epoch, **self._log_epoch("train")}
        if self._val_epoch and self._val_epoch[0] == self.current_epoch:
            row.update(self._val_epoch[1])
        row["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.history.append(row)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cnncli"] = self.metadata

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), self.optimizer_cfg)
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer
