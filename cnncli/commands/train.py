"""cnncli train: compose model, data, optimizer, ... into a Lightning run; write everything it used and
produced to its run folder (config.yaml, checkpoints/, metrics.csv, curves.png, summary.json)."""

import json
import logging
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from cnncli import __version__, config_dir
from cnncli.augment import build_augmentation
from cnncli.classifier import ImageClassifier
from cnncli.config import call_target, validate_train_config
from cnncli.errors import ConfigError, reports_user_errors
from cnncli.models import build_model
from cnncli.plots import plot_curves

# Lightning hints that are noise here: in-memory batches need no worker processes, and the run folder
# holds config.yaml before the CSV logger writes beside it.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*exists and is not empty.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def _build(group: str, cfg: DictConfig, skip: tuple[str, ...] = ()) -> list:
    """Lightning callbacks or loggers from `{name: {_target_: ..., ...} | null}`."""
    return [
        call_target(f"{group}.{name}", options)
        for name, options in cfg.items()
        if options is not None and name not in skip
    ]


def train(cfg: DictConfig) -> dict:
    validate_train_config(cfg)
    if cfg.data.get("root"):  # stored absolute, so the checkpoint can be evaluated from any folder
        cfg.data.root = str(Path(cfg.data.root).resolve())
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    augment = build_augmentation(cfg.augmentation, cfg.data.image_size)
    datamodule = call_target("data", cfg.data, augment=augment)
    model = build_model(cfg.model)
    datamodule.setup("fit")
    run_config = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(run_config))
    classifier = ImageClassifier(
        model,
        num_classes=cfg.data.num_classes,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        label_smoothing=cfg.label_smoothing,
        class_weights=datamodule.class_weights,
        metadata={
            "config": run_config,
            "class_names": datamodule.class_names,
            "normalization": datamodule.normalization,
            "cnncli_version": __version__,
        },
    )
    progress_bar = cfg.trainer.get("enable_progress_bar", True)
    try:
        trainer = L.Trainer(
            **cfg.trainer,
            # trainer.enable_progress_bar=false turns the progress bar callback off too
            callbacks=_build("callbacks", cfg.callbacks, skip=() if progress_bar else ("progress_bar",)),
            logger=_build("logger", cfg.logger) or False,
            default_root_dir=run_dir,
        )
    except (TypeError, ValueError, MisconfigurationException) as e:
        raise ConfigError("trainer", str(e).splitlines()[0]) from None

    started = time.perf_counter()
    trainer.fit(classifier, datamodule=datamodule)
    checkpoint, early_stopping = trainer.checkpoint_callback, trainer.early_stopping_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    test = {}
    if cfg.test and not trainer.interrupted:
        (results,) = trainer.test(classifier, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test = {k: float(v) for k, v in results.items()}

    summary = {
        "status": "interrupted" if trainer.interrupted else "completed",
        "run_dir": str(run_dir),
        "model": cfg.model._target_,
        "data": cfg.data.get("name"),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(classifier.history),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "best_checkpoint": best_path,
        "best": _best_row(classifier.history, checkpoint),
        "final": classifier.history[-1] if classifier.history else {},
        "test": test,
        # the epoch early stopping ended the run at (null: it ran to max_epochs or was interrupted)
        "stopped_early_at": early_stopping.stopped_epoch if early_stopping and early_stopping.stopped_epoch else None,
        "history": classifier.history,  # one row per epoch: train/val loss, acc1, acc5, lr
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if classifier.history:
        plot_curves(classifier.history, run_dir / "curves.png")
    _print_summary(summary)
    return summary


def _best_row(rows: list[dict], checkpoint) -> dict:
    """The epoch the checkpoint callback judged best (by its monitored metric)."""
    if not rows or checkpoint is None or checkpoint.monitor is None:
        return {}
    scored = [row for row in rows if checkpoint.monitor in row]
    if not scored:
        return {}
    pick = min if checkpoint.mode == "min" else max
    return pick(scored, key=lambda row: row[checkpoint.monitor])


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['model'].rsplit('.', 1)[-1]} on {summary['data']}: {summary['status']}")
    table.add_column("metric")
    for column in ("final epoch", "best epoch", "test (best ckpt)"):
        table.add_column(column, justify="right")
    final, best, test = summary["final"], summary["best"], summary["test"]
    table.add_row("epoch", str(final.get("epoch", "")), str(best.get("epoch", "")), "")
    for metric in ("loss", "acc1", "acc5"):
        cells = [row.get(f"{split}/{metric}") for row, split in ((final, "val"), (best, "val"), (test, "test"))]
        table.add_row(f"{metric} (val / test)", *("" if c is None else f"{c:.4f}" for c in cells))
    console = Console()
    console.print(table)
    console.print(f"best checkpoint: {summary['best_checkpoint'] or '(none saved)'}")
    console.print(f"run folder: {summary['run_dir']}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@reports_user_errors
def run(cfg: DictConfig) -> None:
    """The Hydra task: one run (called once per job in a multirun)."""
    train(cfg)


def main() -> None:
    run()
