"""The Lightning Trainer a run config describes: its callbacks and loggers, checked speed options
(precision, channels_last, compile), the CPU threads a run uses, and how a signal ends a run."""

import logging
import os
import signal
import statistics
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch import nn

from cnncli.checkpoint import AtomicCheckpointIO
from cnncli.config import call_target
from cnncli.errors import ConfigError, UserError, check_choice

# Lightning hints that are noise here: in-memory batches need no worker processes, and the run folder
# holds config.yaml before the CSV logger writes beside it.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*exists and is not empty.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
# Under DDP: the logged epoch metrics are sums already added up across the ranks (the task's _log_epoch).
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
warnings.filterwarnings("ignore", ".*it is recommended to use `Trainer.devices=1, num_nodes=1.*")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
PRECISION_ALIASES = ("32", "16", "bf16", "64")  # Lightning's short names


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: tuple = ()) -> L.Trainer:
    """`callbacks` join the configured ones (cnncli tune's pruning)."""
    progress_bar = cfg.trainer.get("enable_progress_bar", True)
    try:
        return L.Trainer(
            **{key: value for key, value in cfg.trainer.items() if key != "threads"},  # threads: choose_threads
            # trainer.enable_progress_bar=false turns the progress bar callback off too
            callbacks=[*_build("callbacks", cfg.callbacks, skip=() if progress_bar else ("progress_bar",)), *callbacks],
            logger=_build_loggers(cfg.logger) or False,
            default_root_dir=run_dir,
            plugins=[AtomicCheckpointIO()],
        )
    except (TypeError, ValueError, MisconfigurationException) as e:
        raise ConfigError("trainer", str(e).splitlines()[0]) from None


def _build(group: str, cfg: DictConfig, skip: tuple[str, ...] = ()) -> list:
    """Lightning callbacks or loggers from `{name: {_target_: ..., ...} | null}`."""
    return [
        call_target(f"{group}.{name}", options)
        for name, options in cfg.items()
        if options is not None and name not in skip
    ]


def _build_loggers(cfg: DictConfig) -> list:
    """The configured loggers; a tracker whose package is missing stops the run with the extra to install."""
    loggers = []
    for name, options in cfg.items():
        try:
            loggers += _build("logger", {name: options})
        except ImportError:
            raise UserError(f'logger.{name}: its package is not installed; pip install "cnncli[track]"') from None
    return loggers


def check_speed_options(cfg: DictConfig) -> None:
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


def prepare_model(cfg: DictConfig, model: nn.Module) -> nn.Module:
    """The speed options applied to the network: NHWC weights (the task converts each batch to match), and
    torch.compile in place (the state_dict keys stay those of the plain model)."""
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile(**({} if cfg.compile is True else {"backend": cfg.compile}))
    return model


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with `last.ckpt` written at the end of every epoch. Lightning (2.6) writes
    `last` only after a top-k save, i.e. when the monitored metric improved: a run killed after epochs without
    improvement would resume from the best epoch and train the later ones again."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def _save_last_every_epoch(self, trainer) -> None:
        # skipped when this step was saved already (a top-k save writes last too), in the sanity check, ...
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the user's choice for torch's thread pool


class ThreadChoice(L.Callback):
    """The CPU threads of a run, set on purpose; `result` says how many and why (summary.json `threads`).

    `trainer.threads: N` is used as given, and OMP_NUM_THREADS / MKL_NUM_THREADS are respected. With `auto`
    the first training steps are timed (from one step's end to the next: data, forward, backward, optimizer,
    logging) with 1, 2, 4, ... threads up to the cores left to this process (DataLoader workers take theirs),
    taking turns, `steps` each (a count 2x slower than the best after a step, 1.5x after two, is dropped); the fewest
    threads within 10% of the fastest median are kept for the rest of the run. For the small networks of the
    course one thread wins: more only add synchronization to thousands of tiny operations, and on a busy
    machine they wait for cores another process holds. GPU runs and DDP (Lightning sets each rank's threads)
    keep torch's. Float sums depend on the thread count, so a run that is timed may differ from another of the
    same seed in its last digits; `trainer.deterministic=true` uses the cores left, untimed."""

    def __init__(self, cfg: DictConfig, workers: int, steps: int = 5):
        setting = cfg.trainer.get("threads", "auto")
        variable = next((name for name in THREAD_VARIABLES if os.environ.get(name)), None)
        self.candidates, self.times, self.steps = [], {}, steps
        if setting != "auto":
            torch.set_num_threads(setting)
            self.result = {"threads": setting, "chosen_by": "trainer.threads"}
        elif variable:
            self.result = {"threads": torch.get_num_threads(), "chosen_by": f"{variable}={os.environ[variable]}"}
        elif not _single_cpu_process(cfg):
            self.result = {"threads": torch.get_num_threads(), "chosen_by": "torch (a GPU or DDP run)"}
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            most = max(1, cores - workers)
            self.result = {"cores": cores, "workers": workers}
            if cfg.trainer.get("deterministic"):  # timing could pick another count next run, and sums change with it
                torch.set_num_threads(most)
                self.result |= {"threads": most, "chosen_by": "trainer.deterministic: the cores left, not timed"}
            else:
                self.candidates = sorted({1, most, *(2**k for k in range(1, most.bit_length()) if 2**k < most)})
                self.times = {n: [] for n in self.candidates}
                self.result |= {"threads": 1, "chosen_by": "too few training steps to time"}
                torch.set_num_threads(1)  # the first, untimed step: on one thread, which is never a bad choice
        self.timing, self.last = bool(self.candidates) and len(self.candidates) > 1, None

    def untimed(self) -> None:
        """Work before the timed steps (a learning-rate range test): on the cores this run may use."""
        if self.candidates:
            torch.set_num_threads(max(self.candidates))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not self.timing:
            return
        now = time.perf_counter()
        if self.last is not None:
            self.times[torch.get_num_threads()].append(now - self.last)
        median = {n: statistics.median(times) for n, times in self.times.items() if times}
        # a count 2x slower than the best after one step, or 1.5x after two, is timed no more: on a busy core
        # each of its steps costs several of the others'
        best = min(median.values(), default=0)
        active = [
            n
            for n in self.candidates
            if not self.times[n] or median[n] <= (2 if len(self.times[n]) == 1 else 1.5) * best
        ]
        if all(len(self.times[n]) >= self.steps for n in active):
            step_ms = {n: round(1000 * m, 3) for n, m in median.items()}
            # more threads must earn their keep: the fewest within 10% of the fastest (their cost grows when
            # the machine gets busier, which a few steps do not show)
            threads = min(n for n in step_ms if step_ms[n] <= 1.1 * min(step_ms.values()))
            self.result |= {"threads": threads, "chosen_by": "the fastest of the first steps", "step_ms": step_ms}
            self.timing = False
        else:  # the next candidate, in turns, so a change of load falls on all of them
            threads = min(active, key=lambda n: (len(self.times[n]), n))
        torch.set_num_threads(threads)
        self.last = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.last = None  # validation runs between epochs: not a training step


def _single_cpu_process(cfg: DictConfig) -> bool:
    accelerator, devices = cfg.trainer.get("accelerator", "auto"), cfg.trainer.get("devices", "auto")
    on_cpu = accelerator == "cpu" or accelerator == "auto" and not torch.cuda.is_available()
    return on_cpu and devices in (1, "1", "auto") and cfg.trainer.get("num_nodes", 1) == 1


class Interrupted(UserError):
    """SIGINT or SIGTERM: the run stopped at the end of a batch; exit code 128 + the signal number."""


def interrupted(trainer: L.Trainer, run_dir: Path) -> Interrupted:
    """What the stop left, read from checkpoints/last.ckpt itself, and the command that goes on from there."""
    from cnncli import runs
    from cnncli.checkpoint import Checkpoint

    signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
    last = Path(trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else "")
    epochs = Checkpoint(last).history if last.is_file() else []
    if epochs:
        saved = (
            f"checkpoints/{last.name} holds epoch {epochs[-1]['epoch']}; continue with: cnncli train resume={run_dir}"
        )
    else:
        again = " ".join(runs.overrides(run_dir))
        saved = f"no epoch was completed, so there is nothing to resume; start it again with: cnncli train {again}"
    error = Interrupted(
        f"interrupted by {signum.name} in epoch {trainer.current_epoch} (step {trainer.global_step}); {saved}".rstrip()
    )
    error.exit_code = 128 + signum
    return error
