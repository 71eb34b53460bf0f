"""Resuming a run: `cnncli train resume=RUN_DIR|last` continues a run in its own folder from
checkpoints/last.ckpt, with its own overrides (the ones given now win), its epoch rows, metrics.csv and
random state. A run folder is untrusted data: its stored overrides may not name code.
(torch and Lightning are imported by the functions that need them: `cnncli train` reads its command line
with this module before anything heavy loads.)"""

import csv
from pathlib import Path

from omegaconf import DictConfig

from cnncli import runs
from cnncli.errors import ConfigError, UserError


def override_key(argument: str) -> str:
    return argument.split("=", 1)[0].lstrip("+~")


def resume_arguments(args: list[str]) -> list[str]:
    """`resume=RUN_DIR` (or `resume=last`: the newest run under outputs/train/) becomes the run's own
    overrides (RUN_DIR/.hydra/overrides.yaml), then those given now, which win (`trainer.max_epochs=20`
    extends a run), then `hydra.run.dir=RUN_DIR`: the run continues in its folder with its config; its
    .hydra/overrides.yaml is replaced only when the resumed run starts."""
    resume = [arg.split("=", 1)[1] for arg in args if override_key(arg) == "resume"]
    if not resume or resume[-1] in ("", "null"):
        return args
    if "-m" in args or "--multirun" in args:
        raise ConfigError("resume", "continues one run; it cannot be combined with -m/--multirun")
    run_dir = _find_run(resume[-1])
    given = [arg for arg in args if override_key(arg) not in ("resume", "hydra.run.dir")]
    keys = {"resume", "hydra.run.dir", *map(override_key, given)}
    original = [o for o in runs.stored_overrides(run_dir) if override_key(o) not in keys]
    if not any(override_key(arg) == "trust_model_code" and arg.endswith("=true") for arg in args):
        for override in original:
            _check_stored_override(override, run_dir)
    # Hydra would write .hydra/ before the run starts, so a refused resume would leave its overrides as the
    # run's: cnncli train writes them once the resumed run has passed its checks (runs.write_overrides)
    return [*original, *given, f"hydra.run.dir='{run_dir}'", "hydra.output_subdir=null", f"resume='{run_dir}'"]


def _check_stored_override(override: str, run_dir: Path) -> None:
    """A run folder is untrusted data too: its stored overrides may pick config options and set values, but
    not name code (`_target_`, `_partial_`, `_args_` ...) nor reach into Hydra (its callbacks, its search
    path for config files, its logging config, whose factories are code too)."""
    key = override_key(override)
    if key.startswith("hydra") or any(part.startswith("_") for part in key.replace("/", ".").split(".")):
        raise UserError(
            f"resume: refused for safety: {run_dir}/.hydra/overrides.yaml sets {key}, which can name code to "
            "run; pass trust_model_code=true only if you trust where this run folder came from"
        )


def _find_run(value: str) -> Path:
    if value == "last":
        lasts = sorted(Path("outputs/train").glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not lasts:
            raise UserError("resume=last: no run with checkpoints/last.ckpt under outputs/train/ in this folder")
        run_dir = lasts[-1].parent.parent.resolve()
    else:
        run_dir = Path(value).expanduser().resolve()
    for needed in (runs.OVERRIDES, "checkpoints/last.ckpt"):
        if not (run_dir / needed).is_file():
            raise UserError(f"resume={value}: {run_dir / needed} not found (resume takes a cnncli train run folder)")
    from cnncli.checkpoint import Checkpoint  # torch: only when there is a run to resume

    Checkpoint(run_dir / "checkpoints" / "last.ckpt")  # a truncated file stops here, before Hydra writes
    return run_dir


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """checkpoints/last.ckpt of the run being resumed (main() has pointed Hydra's run folder at it)."""
    if not cfg.get("resume"):
        return None
    if Path(cfg.resume).resolve() != run_dir.resolve():
        raise ConfigError("resume", f"continues a run in its own folder {cfg.resume}, but this run writes to {run_dir}")
    last = run_dir / "checkpoints" / "last.ckpt"
    _check_schedule_length(cfg, last)
    return str(last)


def _check_schedule_length(cfg: DictConfig, last: Path) -> None:
    """A one-cycle schedule is planned for the run's steps (OneCycleLR's total_steps, restored from the
    checkpoint): more epochs would step it past its end, where torch raises after the first new epoch."""
    from cnncli.checkpoint import Checkpoint

    stored = Checkpoint(last).run_config
    planned = stored.get("trainer", {}).get("max_epochs")
    one_cycle = str(stored.get("scheduler", {}).get("_target_", "")).endswith("OneCycleLR")
    if one_cycle and planned is not None and cfg.trainer.max_epochs != planned:
        raise ConfigError(
            "trainer.max_epochs",
            f"the run's one-cycle schedule was planned for its {planned} epochs and cannot be stretched to "
            f"{cfg.trainer.max_epochs}: resume with trainer.max_epochs={planned}, or start a new run",
        )


def keep_metrics_csv(trainer, checkpoint_path: str) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts: write back the rows of the
    epochs the checkpoint holds, so the resumed run appends to them and each epoch is there once."""
    from lightning.pytorch.loggers import CSVLogger

    from cnncli.checkpoint import Checkpoint

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
