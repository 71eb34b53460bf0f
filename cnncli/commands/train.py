"""cnncli train: compose model, data, optimizer, ... into a Lightning run; write everything it used and
produced to its run folder (config.yaml, checkpoints/, metrics.csv, curves.png, summary.json)."""

import csv
import importlib.util
import logging
import signal
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from cnncli import checkpoint as ckpt
from cnncli import config_dir
from cnncli.augment import build_augmentation
from cnncli.checkpoint import AtomicCheckpointIO, Checkpoint
from cnncli.classifier import ImageClassifier, NonFiniteLoss
from cnncli.config import call_target, validate_train_config
from cnncli.errors import ConfigError, UserError, check_choice, reports_user_errors
from cnncli.models import build_model, model_parts
from cnncli.plots import plot_curves
from cnncli.runs import read_summary, record_failure, write_summary

# Lightning hints that are noise here: in-memory batches need no worker processes, and the run folder
# holds config.yaml before the CSV logger writes beside it.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*exists and is not empty.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
# Under DDP: the logged epoch metrics are sums already added up across the ranks (classifier._log_epoch).
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
warnings.filterwarnings("ignore", ".*it is recommended to use `Trainer.devices=1, num_nodes=1.*")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def _build(group: str, cfg: DictConfig, skip: tuple[str, ...] = ()) -> list:
    """Lightning callbacks or loggers from `{name: {_target_: ..., ...} | null}`."""
    return [
        call_target(f"{group}.{name}", options)
        for name, options in cfg.items()
        if options is not None and name not in skip
    ]


def train(cfg: DictConfig, callbacks: tuple = ()) -> dict:
    """One run into the Hydra output folder; `callbacks` join the configured ones (cnncli tune's pruning)."""
    validate_train_config(cfg)
    if cfg.data.get("root"):  # stored absolute, so the checkpoint can be evaluated from any folder
        cfg.data.root = str(Path(cfg.data.root).resolve())
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _check_speed_options(cfg)
    resume = _resume_checkpoint(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    augment = build_augmentation(cfg.augmentation, cfg.data.image_size)
    datamodule = call_target("data", cfg.data, augment=augment)
    model = build_model(cfg.model)
    datamodule.setup("fit")
    run_config = OmegaConf.to_container(cfg, resolve=True)
    is_rank_zero = rank_zero_only.rank == 0  # under DDP only rank 0 writes files (Lightning: checkpoints, logs)
    if is_rank_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(run_config))
    if cfg.channels_last:  # NHWC weights; the classifier converts each batch to match
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:  # in place: the state_dict keys stay those of the plain model
        model.compile(**({} if cfg.compile is True else {"backend": cfg.compile}))
    classifier = ImageClassifier(
        model,
        num_classes=cfg.data.num_classes,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        label_smoothing=cfg.label_smoothing,
        class_weights=datamodule.class_weights,
        metadata=ckpt.metadata(run_config, datamodule.class_names, datamodule.normalization),
        channels_last=cfg.channels_last,
        head=model_parts(run_config["model"], model).head,
    )
    progress_bar = cfg.trainer.get("enable_progress_bar", True)
    try:
        trainer = L.Trainer(
            **cfg.trainer,
            # trainer.enable_progress_bar=false turns the progress bar callback off too
            callbacks=[*_build("callbacks", cfg.callbacks, skip=() if progress_bar else ("progress_bar",)), *callbacks],
            logger=_build_loggers(cfg.logger) or False,
            default_root_dir=run_dir,
            plugins=[AtomicCheckpointIO()],
        )
    except (TypeError, ValueError, MisconfigurationException) as e:
        raise ConfigError("trainer", str(e).splitlines()[0]) from None
    if resume and is_rank_zero:
        _keep_metrics_csv(trainer, resume)
    if trainer.world_size > 1:
        _relaunchable_argv()

    for logger in trainer.loggers:  # the trackers get what was run and how big it is
        logger.log_hyperparams({**run_config, "params": sum(p.numel() for p in model.parameters())})
    started = time.perf_counter()
    try:
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=resume)
    except SystemExit:  # how Lightning ends a fit stopped by SIGTERM (SIGTERMException) or Ctrl-C (exit 1)
        if not trainer.interrupted:
            raise
    except NonFiniteLoss as e:  # the run folder still says what happened and shows the epochs completed
        if is_rank_zero:
            record_failure(run_dir, e, classifier.history)
            if classifier.history:
                plot_curves(classifier.history, run_dir / "curves.png", top5=cfg.data.num_classes > 5)
        raise
    checkpoint, early_stopping = trainer.checkpoint_callback, trainer.early_stopping_callback
    # read now: testing the best checkpoint below restores the callbacks' state saved with it
    stopped_early_at = early_stopping.stopped_epoch if early_stopping and early_stopping.stopped_epoch else None
    best_path = checkpoint.best_model_path if checkpoint else ""
    last_path = checkpoint.last_model_path if checkpoint else ""
    for logger in trainer.loggers:  # and where its weights are
        logger.log_hyperparams({"best_checkpoint": best_path, "last_checkpoint": last_path})
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
        "stopped_early_at": stopped_early_at,
        "history": classifier.history,  # one row per epoch: train/val loss, acc1, acc5, lr
    }
    if not is_rank_zero:
        return summary
    write_summary(run_dir, summary)
    if classifier.history:
        plot_curves(
            classifier.history,
            run_dir / "curves.png",
            best_epoch=summary["best"].get("epoch"),
            stopped_early_at=summary["stopped_early_at"],
            top5=cfg.data.num_classes > 5,
        )
    _print_summary(summary)
    if trainer.interrupted:
        raise _interrupted(trainer, classifier.history, run_dir)
    return summary


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
PRECISION_ALIASES = ("32", "16", "bf16", "64")  # Lightning's short names


def _check_speed_options(cfg: DictConfig) -> None:
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision not in PRECISIONS + PRECISION_ALIASES:
        raise ConfigError("trainer.precision", f"{precision!r} is not one of: {', '.join(PRECISIONS)}")
    accelerator = cfg.trainer.get("accelerator", "auto")
    on_cpu = (
        accelerator == "cpu"
        or accelerator == "auto"
        and not (torch.cuda.is_available() or torch.backends.mps.is_available())
    )
    if precision in ("16", "16-mixed") and on_cpu:  # Lightning would quietly switch to bf16-mixed
        raise ConfigError("trainer.precision", "16-mixed needs a GPU; on CPU use bf16-mixed or 32-true")
    check_choice("channels_last", cfg.channels_last, (True, False))
    if not isinstance(cfg.compile, bool) and cfg.compile not in torch.compiler.list_backends(exclude_tags=()):
        backends = ", ".join([*torch.compiler.list_backends(), "aot_eager", "eager"])
        raise ConfigError("compile", f"{cfg.compile!r} is not true, false or a torch.compile backend ({backends})")


def _resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """checkpoints/last.ckpt of the run being resumed (main() has pointed Hydra's run folder at it)."""
    if not cfg.get("resume"):
        return None
    if Path(cfg.resume).resolve() != run_dir.resolve():
        raise ConfigError("resume", f"continues a run in its own folder {cfg.resume}, but this run writes to {run_dir}")
    return str(run_dir / "checkpoints" / "last.ckpt")


def _keep_metrics_csv(trainer: L.Trainer, checkpoint_path: str) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts: write back the rows of the
    epochs the checkpoint holds, so the resumed run appends to them and each epoch is there once."""
    logger = next((logger for logger in trainer.loggers if isinstance(logger, CSVLogger)), None)
    path = Path(logger.log_dir) / "metrics.csv" if logger else None
    if path is None or not path.is_file():
        return
    checkpoint = Checkpoint(checkpoint_path)
    last_epoch = checkpoint.history[-1]["epoch"] if checkpoint.history else -1
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    kept = [
        row
        for row in rows
        # epoch rows up to the checkpoint's (the test row is written again at the end); rows without an
        # epoch (learning rate) logged before the checkpoint's step
        if (row.get("epoch", last_epoch + 1) <= last_epoch and not any(k.startswith("test/") for k in row))
        or ("epoch" not in row and row.get("step", 0) < checkpoint.global_step)
    ]
    writer = logger.experiment  # created now: this is when it deletes the file
    for row in kept:
        step = int(row.pop("step"))
        if "epoch" in row:
            row["epoch"] = int(row["epoch"])
        writer.log_metrics(row, step)
    writer.save()


def _relaunchable_argv() -> None:
    """Lightning's DDP launcher starts ranks 1.. by running this process's command line again, as
    `python sys.argv[0] sys.argv[1:]` (or `python -m <module> ...`); cnncli's dispatcher made it
    `cnncli train` plus the overrides: put back the script and the subcommand."""
    import __main__

    if sys.argv[1:2] != ["train"]:
        sys.argv = [getattr(__main__, "__file__", None) or sys.argv[0], "train", *sys.argv[1:]]


class Interrupted(UserError):
    """SIGINT or SIGTERM: the run stopped at the end of a batch; exit code 128 + the signal number."""


def _interrupted(trainer: L.Trainer, history: list[dict], run_dir: Path) -> Interrupted:
    signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
    saved = f"checkpoints/last.ckpt holds epoch {history[-1]['epoch']}" if history else "no epoch was completed"
    error = Interrupted(
        f"interrupted by {signum.name} in epoch {trainer.current_epoch} (step {trainer.global_step}); {saved}; "
        f"continue with: cnncli train resume={run_dir}"
    )
    error.exit_code = 128 + signum
    return error


def _build_loggers(cfg: DictConfig) -> list:
    """The configured loggers; a tracker whose package is missing stops the run with the extra to install."""
    loggers = []
    for name, options in cfg.items():
        try:
            loggers += _build("logger", {name: options})
        except ImportError:
            raise UserError(f'logger.{name}: its package is not installed; pip install "cnncli[track]"') from None
    return loggers


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
    """The Hydra task: one run (called once per job in a multirun). In a multirun a run that fails is
    recorded (summary.json: failed, the error's last line) and the sweep goes on; the leaderboard at its
    end lists it and the command exits 1 (cnncli.leaderboard.SweepLeaderboard)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        train(cfg)
        return
    try:
        train(cfg)
    except Exception as e:  # noqa: BLE001 (a sweep records any failed run and goes on, as Hydra would not)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # train() may have recorded the failure already, with more detail
        failure = read_summary(run_dir) or record_failure(run_dir, e)
        print(f"error: run {HydraConfig.get().job.num} failed: {failure['error']}", file=sys.stderr)


@reports_user_errors
def main() -> None:
    """`cnncli train`. Hydra fixes the run folder before the task runs, so `resume=` is turned into a command
    line here, before Hydra parses it."""
    _check_launcher(sys.argv[1:])
    sys.argv = [sys.argv[0], *_resume_arguments(sys.argv[1:])]
    if rank_zero_only.rank > 0:  # a DDP rank started by Lightning: rank 0 alone writes the run's log
        sys.argv.append("hydra/job_logging=disabled")
    run()


def _override_key(argument: str) -> str:
    return argument.split("=", 1)[0].lstrip("+~")


def _check_launcher(args: list[str]) -> None:
    """hydra/launcher=slurm needs a Hydra plugin from an extra; without it Hydra's own error is a page long."""
    launchers = [arg.split("=", 1)[-1] for arg in args if _override_key(arg) == "hydra/launcher"]
    wants_submitit = any("slurm" in name or "submitit" in name for name in launchers)
    if wants_submitit and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        raise UserError('hydra/launcher=slurm needs hydra-submitit-launcher: pip install "cnncli[slurm]"')


def _resume_arguments(args: list[str]) -> list[str]:
    """`resume=RUN_DIR` (or `resume=last`: the newest run under outputs/train/) becomes the run's own
    overrides (RUN_DIR/.hydra/overrides.yaml), then those given now, which win (`trainer.max_epochs=20`
    extends a run), then `hydra.run.dir=RUN_DIR`: the run continues in its folder with its config."""
    resume = [arg.split("=", 1)[1] for arg in args if _override_key(arg) == "resume"]
    if not resume or resume[-1] in ("", "null"):
        return args
    if "-m" in args or "--multirun" in args:
        raise ConfigError("resume", "continues one run; it cannot be combined with -m/--multirun")
    run_dir = _find_run(resume[-1])
    given = [arg for arg in args if _override_key(arg) not in ("resume", "hydra.run.dir")]
    keys = {"resume", "hydra.run.dir", *map(_override_key, given)}
    original = [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml") if _override_key(o) not in keys]
    if not any(_override_key(arg) == "trust_model_code" and arg.endswith("=true") for arg in args):
        for override in original:
            _check_stored_override(override, run_dir)
    return [*original, *given, f"hydra.run.dir='{run_dir}'", f"resume='{run_dir}'"]


def _check_stored_override(override: str, run_dir: Path) -> None:
    """A run folder is untrusted data too: its stored overrides may pick config options and set values, but
    not name code (`_target_`, `_partial_`, `_args_` ...) nor reach into Hydra (its callbacks, its search
    path for config files, its logging config, whose factories are code too)."""
    key = _override_key(override)
    if key.startswith("hydra") or any(part.startswith("_") for part in key.replace("/", ".").split(".")):
        raise UserError(
            f"resume: refused for safety: {run_dir}/.hydra/overrides.yaml sets {key}, which can name code to "
            "run; pass trust_model_code=true only if you trust where this run folder came from"
        )


def _find_run(value: str) -> Path:
    if value == "last":
        runs = sorted(Path("outputs/train").glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UserError("resume=last: no run with checkpoints/last.ckpt under outputs/train/ in this folder")
        run_dir = runs[-1].parent.parent.resolve()
    else:
        run_dir = Path(value).expanduser().resolve()
    for needed in (".hydra/overrides.yaml", "checkpoints/last.ckpt"):
        if not (run_dir / needed).is_file():
            raise UserError(f"resume={value}: {run_dir / needed} not found (resume takes a cnncli train run folder)")
    Checkpoint(run_dir / "checkpoints" / "last.ckpt")  # a truncated file stops here, before Hydra writes
    return run_dir
