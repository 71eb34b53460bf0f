"""cnncli eval: rebuild the network from a checkpoint's stored run, test it, report per-class metrics."""

import json
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from cnncli import config_dir
from cnncli.checkpoint import load_checkpoint, model_state_dict
from cnncli.config import call_target
from cnncli.errors import UserError, reports_user_errors
from cnncli.models import build_model
from cnncli.plots import plot_confusion_matrix


@torch.inference_mode()
def predict(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    logits, labels = zip(*((model(x), y) for x, y in loader))
    return torch.cat(logits), torch.cat(labels)


def evaluate(cfg: DictConfig) -> dict:
    checkpoint = load_checkpoint(cfg.ckpt_path)
    stored = checkpoint["cnncli"]
    run = OmegaConf.create(stored["config"])
    data_cfg = cfg.get("data") or run.data
    if data_cfg.num_classes != run.data.num_classes:
        raise UserError(
            f"data {data_cfg.get('name')!r} has {data_cfg.num_classes} classes; "
            f"the checkpoint's model predicts {run.data.num_classes}"
        )
    # Other data is converted to the channels and size the network was trained on, and normalized with the
    # run's own statistics: evaluation sees exactly what training saw.
    data_cfg = OmegaConf.merge(
        data_cfg,
        {"channels": run.data.channels, "image_size": run.data.image_size, "normalization": stored["normalization"]},
    )
    datamodule = call_target("data", data_cfg)
    datamodule.batch_size = cfg.batch_size
    datamodule.setup("test")
    model = build_model(run.model, trust_code=cfg.trust_model_code)
    model.load_state_dict(model_state_dict(checkpoint))
    logits, labels = predict(model, datamodule.test_dataloader())

    n = run.data.num_classes
    names = list(stored.get("class_names") or range(n))
    per_class = {
        metric: fn(logits, labels, num_classes=n, average=None).tolist()
        for metric, fn in (("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score))
    }
    matrix = multiclass_confusion_matrix(logits, labels, num_classes=n)
    results = {
        "checkpoint": str(cfg.ckpt_path),
        "data": data_cfg.get("name"),
        "samples": len(labels),
        # the loss as training measured it: weighted when the run used class weights
        "test/loss": F.cross_entropy(logits, labels, weight=checkpoint["state_dict"].get("class_weights")).item(),
        "test/acc1": multiclass_accuracy(logits, labels, num_classes=n, top_k=1, average="micro").item(),
        "test/acc5": multiclass_accuracy(logits, labels, num_classes=n, top_k=min(5, n), average="micro").item(),
        "per_class": {str(name): {m: per_class[m][i] for m in per_class} | {"support": int(matrix[i].sum())}
                      for i, name in enumerate(names)},
        "confusion_matrix": matrix.tolist(),
    }
    out = Path(cfg.out) if cfg.out else _run_folder(Path(cfg.ckpt_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    plot_confusion_matrix(matrix.numpy(), [str(x) for x in names], out / "confusion_matrix.png")
    _print(results, out)
    return results


def _run_folder(ckpt_path: Path) -> Path:
    """runs/<run>/checkpoints/best.ckpt -> runs/<run>; a checkpoint elsewhere -> its own folder."""
    folder = ckpt_path.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def _print(results: dict, out: Path) -> None:
    console = Console()
    overall = Table(title=f"test split of {results['data']} ({results['samples']} images)")
    for column in ("loss", "top-1", "top-5"):
        overall.add_column(column, justify="right")
    overall.add_row(*(f"{results[k]:.4f}" for k in ("test/loss", "test/acc1", "test/acc5")))
    console.print(overall)
    classes = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        classes.add_column(column, justify="right")
    for name, m in results["per_class"].items():
        classes.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(classes)
    console.print(f"wrote {out / 'eval.json'} and {out / 'confusion_matrix.png'}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
