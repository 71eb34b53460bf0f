"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's lr_find): `cnncli lr-find`
(cnncli/commands/lr_find.py) and `cnncli train optimizer.lr=auto`.

The run config's network, data and optimizer train for `lr_find.num_training` batches while the rate grows
exponentially from `lr_find.min_lr` to `lr_find.max_lr`. Lightning's Tuner.lr_find drives the test (the rate
schedule, the device and precision, the starting weights restored after, the stop once the loss passes
`early_stop_threshold` x its lowest); the curve and the suggestion are computed here from each step's loss,
which the task's module records during the test, for two reasons measured on LeNet-5 and the digits:
Lightning's smoothing counts one step ahead in its bias correction (its first point read 1.16 for a loss of
2.30, still 9% low at step 10), and its suggestion, the steepest slope against the rate itself, weights each
slope by 1/rate, so the flat noise of the smallest rates outweighs the real descent. Here: an exponential
moving average (beta 0.98) with the standard bias correction, and the suggestion at the steepest fall of
that curve against log(rate), the axis of the plot (fastai's "steep"), before the loss's lowest point.

A curve that offers no such point is an error, never a silent number:
- diverging: the loss only rises from the start: even min_lr is too high;
- flat: the loss moves by less than FLAT of its value over the whole range: nothing learns at these rates
  (frozen layers, a range far too low).
Writes lr_find.png (loss against the rate, log scale, the suggestion marked) and lr_find.json, also when it
fails, so the curve that made it fail can be seen.
"""

import json
import logging
import math
import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnncli.config import check_number
from cnncli.errors import ConfigError, UserError

log = logging.getLogger("cnncli")

RESULT = "lr_find.json"
PLOT = "lr_find.png"
SKIP_BEGIN = 10  # the first steps are not candidates: the average has seen too few losses
FLAT = 0.02  # a loss that changes less than this share of its value over the range: flat
BETA = 0.98  # the moving average's weight of the past (fastai's and Lightning's)


class RangeTestFailed(UserError):
    """The curve gives no rate to choose; its picture and numbers were written (the run folder is kept)."""


def record_failure(run_dir: Path, error: Exception) -> None:
    """A job of an lr-find sweep that stopped before its test wrote lr_find.json: its error there."""
    path = Path(run_dir) / RESULT
    if not path.exists():
        path.write_text(json.dumps({"suggestion": None, "error": str(error)}, indent=2))


def check(cfg: DictConfig) -> None:
    options = cfg.lr_find
    check_number(cfg, "lr_find.min_lr", 0, open_low=True)
    check_number(cfg, "lr_find.max_lr", 0, open_low=True)
    if options.min_lr is None or options.max_lr is None or options.max_lr <= options.min_lr:
        raise ConfigError("lr_find.max_lr", f"must be above lr_find.min_lr={options.min_lr}, got {options.max_lr}")
    check_number(cfg, "lr_find.num_training", 2 * SKIP_BEGIN, integer=True)
    check_number(cfg, "lr_find.early_stop_threshold", 1, open_low=True)


def recorded(run_dir: Path) -> dict | None:
    """What an earlier range test of this run found (a resumed `optimizer.lr=auto` run keeps its rate)."""
    try:
        found = json.loads((Path(run_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return summary(found) if isinstance(found, dict) and isinstance(found.get("suggestion"), float) else None


def summary(found: dict) -> dict:
    """What summary.json keeps of a range test: the suggestion and its settings, not the curve."""
    return {k: v for k, v in found.items() if k not in ("lr", "loss")} | {"plot": PLOT}


def find_lr(cfg: DictConfig, out_dir: Path | None) -> dict:
    """The range test of a run config; its findings (suggestion, the curve) written to out_dir (None: a DDP
    rank above 0 writes nothing). Sets nothing in cfg: the caller decides what the suggestion becomes."""
    check(cfg)
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    from cnncli import optim
    from cnncli.tasks import build_run

    options = cfg.lr_find
    search = optim.with_lr(cfg, options.min_lr)  # the optimizer is built at min_lr; the test sets each step's rate
    datamodule, _, module, threads = build_run(search, optim.optimization(search))
    threads.untimed()
    module.range_losses = []
    with tempfile.TemporaryDirectory() as root:  # Lightning saves the starting weights there and restores them
        trainer = L.Trainer(
            accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, precision=cfg.trainer.get("precision"),
            gradient_clip_val=cfg.trainer.get("gradient_clip_val"), logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root,
            max_steps=options.num_training,  # the test's own step count ends it
        )  # fmt: skip
        finder = Tuner(trainer).lr_find(
            module, datamodule=datamodule, min_lr=float(options.min_lr), max_lr=float(options.max_lr),
            num_training=options.num_training, mode="exponential", early_stop_threshold=options.early_stop_threshold,
            update_attr=False,
        )  # fmt: skip
    raw = module.range_losses  # one per batch; Lightning logged the rate of each at its start
    lrs = [float(x) for x in finder.results["lr"][: len(raw)]]
    losses = smooth(raw[: len(lrs)])
    found = {
        "suggestion": None, "lowest_loss_lr": None, "min_lr": float(options.min_lr), "max_lr": float(options.max_lr),
        "num_training": options.num_training, "steps": len(lrs),
        "method": "exponential range test (Lightning's Tuner.lr_find); loss: moving average, beta 0.98, bias-"
                  "corrected; suggestion: its steepest fall against log(rate), before its lowest point",
        "lr": lrs, "loss": losses, "raw_loss": raw[: len(lrs)],
    }  # fmt: skip
    problem = judge(lrs, losses, options)
    finite = [(i, loss) for i, loss in enumerate(losses) if i >= SKIP_BEGIN and math.isfinite(loss)]
    if finite:
        found["lowest_loss_lr"] = lrs[min(finite, key=lambda point: point[1])[0]]
    if problem is None:
        found["suggestion"] = steepest(lrs, losses)
    if out_dir is not None:
        (Path(out_dir) / RESULT).write_text(json.dumps(found, indent=2))
        plot(found, Path(out_dir) / PLOT, title(cfg))
    if problem is not None:
        where = f"; the curve: {Path(out_dir) / PLOT}" if out_dir is not None else ""
        raise RangeTestFailed(f"lr-find: {problem}{where}")
    log.info(
        f"lr-find: suggested learning rate {found['suggestion']:.3g} (the loss falls fastest there; lowest at "
        f"{found['lowest_loss_lr']:.3g}), from {len(lrs)} steps between {options.min_lr:g} and {options.max_lr:g}"
    )
    return summary(found)


def smooth(raw: list[float]) -> list[float]:
    """The exponential moving average of the losses, bias-corrected (Adam's correction: the average of the
    first n losses weighs them as if n were many); from a non-finite loss on, nan."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(raw, start=1):
        if not math.isfinite(loss) or (smoothed and not math.isfinite(smoothed[-1])):
            smoothed.append(float("nan"))
            continue
        average = BETA * average + (1 - BETA) * loss
        smoothed.append(average / (1 - BETA**step))
    return smoothed


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the smoothed loss falls fastest against log(rate), from step SKIP_BEGIN to before the
    loss's lowest point (past it, the curve's steepest parts are its divergence)."""
    finite = [i for i in range(SKIP_BEGIN, len(losses)) if math.isfinite(losses[i])]
    lowest = min(finite, key=lambda i: losses[i])
    candidates = [i for i in finite if i < lowest] or [lowest]  # at the lowest point the loss no longer falls

    def slope(i: int) -> float:  # central differences; one-sided at the ends
        a, b = max(i - 1, finite[0]), min(i + 1, lowest)
        return (losses[b] - losses[a]) / (math.log(lrs[b]) - math.log(lrs[a])) if b > a else 0.0

    return lrs[min(candidates, key=slope)]


def judge(lrs: list[float], losses: list[float], options) -> str | None:
    """Why the curve gives no rate to choose (None: it does). Its first SKIP_BEGIN points are left out: the
    average has seen too few losses there."""
    finite = [loss for loss in losses[SKIP_BEGIN:] if math.isfinite(loss)]
    span = f"between {options.min_lr:g} and {options.max_lr:g}"
    if len(finite) < 3:
        stopped = lrs[min(len(lrs) - 1, SKIP_BEGIN + len(finite))]
        return (
            f"the loss diverged within {SKIP_BEGIN + len(finite)} steps, at rate {stopped:.3g}: too few points to "
            f"choose from; lower lr_find.min_lr (now {options.min_lr:g})"
        )
    start, lowest = finite[0], min(finite)
    if max(finite) - lowest < FLAT * abs(start):
        return (
            f"the loss stayed within {FLAT:.0%} of {start:.4g} over {len(finite)} steps {span}: the network does not "
            "learn at these rates (frozen layers? raise lr_find.max_lr), so no rate is suggested"
        )
    if lowest > start - FLAT * abs(start):
        return (
            f"the loss only rose from {start:.4g} (rate {lrs[SKIP_BEGIN]:.3g}) as the rate grew: even these rates are "
            f"too high for it; lower lr_find.min_lr (now {options.min_lr:g})"
        )
    return None


def title(cfg: DictConfig) -> str:
    optimizer = str(cfg.optimizer.get("_target_", "")).rpartition(".")[2]
    model = str(cfg.model.get("_target_", "")).rpartition(".")[2]
    return (
        f"learning-rate range test: {model} on {cfg.data.get('name', 'data')}, {optimizer}, batch {cfg.data.batch_size}"
    )


def plot(found: dict, path: Path, heading: str) -> None:
    from cnncli.plots import _save, plt

    fig, ax = plt.subplots(figsize=(8, 5))
    lrs, losses = found["lr"][SKIP_BEGIN:], found["loss"][SKIP_BEGIN:]  # the smoothing's biased start left out
    ax.plot(lrs, losses, color="tab:blue", label=f"training loss, smoothed (from step {SKIP_BEGIN})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    finite = [loss for loss in losses if math.isfinite(loss)]
    if finite:  # the divergence at the end would squash the rest of the curve
        low, first = min(finite), finite[0]
        ax.set_ylim(low - 0.05 * abs(first - low) - 1e-3, max(first, low) + 0.5 * abs(first - low) + 1e-3)
    if found["suggestion"] is not None and lrs:
        at = min(range(len(lrs)), key=lambda i: abs(lrs[i] - found["suggestion"]))
        ax.axvline(found["suggestion"], color="tab:red", linestyle="--", linewidth=1)
        ax.plot([lrs[at]], [losses[at]], "o", color="tab:red", label=f"suggested: {found['suggestion']:.3g}")
    if found["lowest_loss_lr"] is not None:
        ax.axvline(found["lowest_loss_lr"], color="gray", linestyle=":", linewidth=1,
                   label=f"lowest loss: {found['lowest_loss_lr']:.3g}")  # fmt: skip
    ax.set_title(heading, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, path)


class SweepSuggestions(Callback):
    """Hydra callback (conf/lr_find.yaml): at the end of `cnncli lr-find -m`, each job's suggestion in one
    table (printed, and lr_find.csv in the sweep folder); exit 1 when a job failed."""

    def on_multirun_end(self, config, **kwargs) -> None:
        import csv

        from cnncli import runs

        sweep = Path(config.hydra.sweep.dir)
        jobs = sorted(
            (p.parent for p in sweep.glob(f"*/{RESULT}")), key=lambda p: int(p.name) if p.name.isdigit() else 0
        )
        rows = []
        for job, label in zip(jobs, runs.labels(jobs)):
            found = json.loads((job / RESULT).read_text())
            rows.append({"job": label, "suggestion": found.get("suggestion"),
                         "lowest_loss_lr": found.get("lowest_loss_lr"), "error": found.get("error", "")})  # fmt: skip
        with open(sweep / "lr_find.csv", "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["job", "suggestion", "lowest_loss_lr", "error"])
            writer.writeheader()
            writer.writerows(rows)
        width = max((len(row["job"]) for row in rows), default=3)
        print(f"\n{'job':<{width}}  suggested lr  lowest loss at")
        for row in rows:
            if row["suggestion"] is None:
                print(f"{row['job']:<{width}}  failed: {row['error']}")
            else:
                print(f"{row['job']:<{width}}  {row['suggestion']:<12.3g}  {row['lowest_loss_lr']:.3g}")
        print(f"{sweep / 'lr_find.csv'}")
        failed = [row for row in rows if row["suggestion"] is None]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} range tests failed", file=sys.stderr)
            sys.exit(1)
