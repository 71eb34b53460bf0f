"""The LightningModule: any nn.Module from the zoo, trained with cross-entropy, measured by top-1/top-5."""

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cnncli.optim import build_optimizer, build_scheduler

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers (Szegedy et al. 2014)


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
        self.metrics = nn.ModuleDict({f"{s}_metrics": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch, split: str) -> torch.Tensor:
        images, labels = batch
        outputs = self.model(images)
        logits, aux_logits = (outputs[0], outputs[1:]) if isinstance(outputs, (tuple, list)) else (outputs, ())
        loss = F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        if aux_logits:
            loss = loss + AUX_LOSS_WEIGHT * sum(F.cross_entropy(aux, labels) for aux in aux_logits if aux is not None)
        if self.l1 and split == "train":
            loss = loss + self.l1 * sum(p.abs().sum() for name, p in self.model.named_parameters() if "weight" in name)
        metrics = self.metrics[f"{split}_metrics"]
        metrics.update(logits.detach(), labels)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split != "train", batch_size=len(labels))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cnncli"] = self.metadata

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), self.optimizer_cfg)
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer
