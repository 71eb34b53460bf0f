"""Run folders: how runs are found, read, labelled and summed up, in one place (leaderboard, compare, tune,
train, and every command that writes beside a checkpoint).

A run folder is what `cnncli train` writes (config.yaml, .hydra/overrides.yaml, checkpoints/, metrics.csv,
curves.png, summary.json). summary.json is written at the end of a run, also of one that failed or was
pruned; .hydra/overrides.yaml at its start, so a run stopped before its end is still found. Only json, csv
and yaml are read here: no torch, no Lightning.
"""

import csv
import fcntl
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from cnncli.errors import UserError

SUMMARY = "summary.json"
OVERRIDES = Path(".hydra") / "overrides.yaml"
RANGE_TEST_JOB = "lr_find"  # conf/lr_find.yaml's hydra.job.name: its folders hold a range test, not a run
LOCK = ".lock"  # held (flock) by the process writing the folder; the kernel releases it when that process ends


def run_folder(ckpt_path: Path) -> Path:
    """runs/<run>/checkpoints/best.ckpt -> runs/<run>; a checkpoint elsewhere -> its own folder."""
    folder = Path(ckpt_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


# ------------------------------------------------------------------------------------- guarding a run folder

_claimed: dict[Path, tuple] = {}  # run folders this process holds: (open lock file, whether it created them)


def is_run(folder: Path) -> bool:
    """A run's folder, or a sweep's (Hydra's multirun.yaml)."""
    return any((Path(folder) / name).is_file() for name in (SUMMARY, OVERRIDES, "multirun.yaml"))


def claim(folder: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Take a run folder for this process before anything is written into it: locked while the run lasts (a
    second run into it stops in one line), and a folder holding a run is never written over unless the run
    is resumed or `overwrite=true` was given (then its files are removed first). The lock file stays in the
    folder (removing it would let two processes lock two different files)."""
    folder = Path(folder).resolve()
    if folder in _claimed:
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(f"run folder {folder} is a file")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / LOCK, "a+")  # noqa: SIM115 (held open while the run lasts: closing it unlocks)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "another process"
        lock.close()
        raise UserError(
            f"run folder {folder} is in use by another cnncli run ({owner}); choose another hydra.run.dir"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    _claimed[folder] = (lock, created)
    contents = [entry for entry in folder.iterdir() if entry.name != LOCK]
    if not contents or resume:
        return
    if not is_run(folder):
        release(folder)
        raise UserError(f"{folder} is not empty and holds no cnncli run: choose another (or an empty) folder")
    if not overwrite:
        release(folder)
        how = "" if (folder / "multirun.yaml").is_file() else f"resume={folder} continues it; "
        raise UserError(f"{folder} holds a run already: {how}overwrite=true replaces it")
    for entry in contents:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def release(folder: Path, *, discard: bool = False) -> None:
    """Unlock a claimed folder; `discard`: remove it first if this process created it and no training was
    recorded in it (a config error leaves no run folder behind)."""
    folder = Path(folder).resolve()
    if folder not in _claimed:
        return
    lock, created = _claimed.pop(folder)
    if discard and created and not (folder / SUMMARY).exists() and not (folder / "checkpoints").exists():
        _stop_logging_into(folder)
        shutil.rmtree(folder, ignore_errors=True)
    lock.close()


def _stop_logging_into(folder: Path) -> None:
    """Detach the log handlers that write into `folder` (its train.log), which is about to be removed."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(folder):
                logger.removeHandler(handler)
                handler.close()


class RunFolderGuard(Callback):
    """Hydra callback (conf/train.yaml hydra.callbacks): claims the run folder (or a multirun's sweep folder)
    before Hydra writes its .hydra/ files into it. (A DDP rank above 0 runs without it, in rank 0's folder.)"""

    def on_run_start(self, config, **kwargs) -> None:
        self._claim(config.hydra.run.dir, config)

    def on_multirun_start(self, config, **kwargs) -> None:
        self._claim(config.hydra.sweep.dir, config)

    @staticmethod
    def _claim(folder: str, config) -> None:
        try:
            claim(Path(folder), resume=bool(config.get("resume")), overwrite=config.get("overwrite") is True)
        except UserError as e:  # Hydra would print a callback's exception with a traceback
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)


class TerminalLog(logging.StreamHandler):
    """The run's log lines in the terminal (conf/hydra/job_logging/run.yaml): written to sys.stdout as it is
    when each line is logged, so they appear above rich's live progress bar (which swaps sys.stdout for a proxy
    while it is shown) instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def find_runs(path: Path) -> list[Path]:
    """Every run folder at or below `path` (a run, a sweep, a study, a whole outputs/), in natural order:
    2 before 10."""
    path = Path(path)
    marks = [*path.rglob(SUMMARY), *path.rglob(str(OVERRIDES))]
    dirs = {m.parent.parent if m.parent.name == ".hydra" else m.parent for m in marks}
    dirs = {d for d in dirs if not _range_test(d)}

    def natural(run: Path) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(run.relative_to(path)))]

    return sorted(dirs, key=natural)


def _range_test(folder: Path) -> bool:
    """A `cnncli lr-find` folder, told by its Hydra job's name (a train run's own range test shares the run's
    folder and job, and its summary.json)."""
    if (folder / SUMMARY).is_file():
        return False
    try:
        job = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["name"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return False
    return job == RANGE_TEST_JOB


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json; None while the run has none (it is running, or was killed)."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, replaced atomically: a reader never sees half of it."""
    path = Path(run_dir) / SUMMARY
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{SUMMARY}.partial-{os.getpid()}")
    partial.write_text(json.dumps(summary, indent=2))
    os.replace(partial, path)


def record_failure(run_dir: Path, error: BaseException, history: list[dict] | None = None) -> dict:
    """summary.json for a run that raised, so the leaderboard lists it with the error's last line (and the
    epochs it completed, when it got that far)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    summary = {"status": "failed", "run_dir": str(run_dir), "error": lines[-1]}
    if history:
        summary.update(epochs=len(history), history=history)
    write_summary(run_dir, summary)
    return summary


def stored_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides the run was started with, all of them (resume replays them)."""
    path = Path(run_dir) / OVERRIDES
    return [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else []


def write_overrides(run_dir: Path, overrides: list[str]) -> None:
    """.hydra/overrides.yaml for a run started without Hydra's own run (a cnncli tune trial)."""
    path = Path(run_dir) / OVERRIDES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(overrides))


def overrides(run_dir: Path) -> list[str]:
    """The overrides without hydra.* (where the run wrote, not what it ran)."""
    return [o for o in stored_overrides(run_dir) if not o.lstrip("+~").startswith("hydra")]


def shared_overrides(runs: list[Path]) -> list[str]:
    """The overrides every one of several runs has (shown once: a sweep's table shows what varies)."""
    lists = [overrides(run) for run in runs]
    return [o for o in lists[0] if all(o in other for other in lists)] if len(lists) > 1 else []


def labels(runs: list[Path]) -> list[str]:
    """Each run's overrides that not every run shares; the folder name where that leaves nothing or repeats."""
    shared = set(shared_overrides(runs))
    texts = [" ".join(o for o in overrides(run) if o not in shared) for run in runs]
    return [f"{text} ({run.name})" if texts.count(text) > 1 else text or run.name for text, run in zip(texts, runs)]


def history(run_dir: Path) -> list[dict]:
    """The run's epoch rows: summary.json's, or for a run without one what its metrics.csv has logged so far
    (train, val and test are logged on separate lines there)."""
    summary = read_summary(run_dir) or {}
    if summary.get("history"):
        return summary["history"]
    epochs: dict[int, dict] = {}
    if (Path(run_dir) / "metrics.csv").is_file():
        with open(Path(run_dir) / "metrics.csv") as f:
            for line in csv.DictReader(f):
                if line.get("epoch") and not line.get("test/loss"):
                    epoch = int(float(line["epoch"]))
                    epochs.setdefault(epoch, {"epoch": epoch}).update({k: float(v) for k, v in line.items() if v})
    return [epochs[e] for e in sorted(epochs)]


def summarize(run_dir: Path, cfg, history: list[dict], checkpoint, early_stopping, params: int, wall_time_s: float,
              test: dict, interrupted: bool, threads: dict | None = None) -> dict:  # fmt: skip
    """summary.json of a run that trained: final, best (by the checkpoint callback's monitored metric) and test
    metrics, the epoch rows, and where the best weights are."""
    return {
        "status": "interrupted" if interrupted else "completed",
        "run_dir": str(run_dir),
        "model": cfg.model._target_,
        "data": cfg.data.get("name"),
        "params": params,
        "epochs": len(history),
        "wall_time_s": round(wall_time_s, 2),
        "threads": threads,  # the CPU threads and why (cnncli.trainer.choose_threads)
        "best_checkpoint": checkpoint.best_model_path if checkpoint else "",
        "best": best_row(history, checkpoint),
        "final": history[-1] if history else {},
        "test": test,
        # the epoch early stopping ended the run at (null: it ran to max_epochs or was interrupted)
        "stopped_early_at": early_stopping.stopped_epoch if early_stopping and early_stopping.stopped_epoch else None,
        "history": history,  # one row per epoch: train/val loss and metrics, lr
    }


def best_row(rows: list[dict], checkpoint) -> dict:
    """The epoch the checkpoint callback judged best (by its monitored metric)."""
    if not rows or checkpoint is None or checkpoint.monitor is None:
        return {}
    scored = [row for row in rows if checkpoint.monitor in row]
    if not scored:
        return {}
    pick = min if checkpoint.mode == "min" else max
    return pick(scored, key=lambda row: row[checkpoint.monitor])
