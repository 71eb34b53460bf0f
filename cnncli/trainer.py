"""The Lightning Trainer a run config describes: its callbacks and loggers, checked speed options
(precision, channels_last, compile), and how a signal ends a run."""

import logging
import signal
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
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
            **cfg.trainer,
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


class Interrupted(UserError):
    """SIGINT or SIGTERM: the run stopped at the end of a batch; exit code 128 + the signal number."""


def interrupted(trainer: L.Trainer, history: list[dict], run_dir: Path) -> Interrupted:
    signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
    saved = f"checkpoints/last.ckpt holds epoch {history[-1]['epoch']}" if history else "no epoch was completed"
    error = Interrupted(
        f"interrupted by {signum.name} in epoch {trainer.current_epoch} (step {trainer.global_step}); {saved}; "
        f"continue with: cnncli train resume={run_dir}"
    )
    error.exit_code = 128 + signum
    return error
