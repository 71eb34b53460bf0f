"""Optimizers and learning-rate schedules, by the `name` in conf/optimizer and conf/scheduler."""

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim import lr_scheduler

from cnncli.errors import ConfigError, check_choice

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
SCHEDULERS = {
    "none": None,
    "step": lr_scheduler.StepLR,
    "exponential": lr_scheduler.ExponentialLR,
    "cosine": lr_scheduler.CosineAnnealingLR,
    "plateau": lr_scheduler.ReduceLROnPlateau,
    "onecycle": lr_scheduler.OneCycleLR,
}


def _options(cfg: DictConfig, group: str, drop: tuple[str, ...]) -> tuple[str, dict]:
    options = OmegaConf.to_container(cfg, resolve=True)
    name = options.pop("name", None)
    check_choice(f"{group}.name", name, OPTIMIZERS if group == "optimizer" else SCHEDULERS)
    return name, {k: v for k, v in options.items() if k not in drop}


def build_optimizer(params, cfg: DictConfig) -> torch.optim.Optimizer:
    name, options = _options(cfg, "optimizer", drop=("l1",))  # l1 is a loss term, added by the module
    try:
        return OPTIMIZERS[name](params, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError("optimizer", f"{name}: {e}") from None


def build_scheduler(optimizer, cfg: DictConfig, total_steps: int) -> dict | None:
    """The Lightning lr_scheduler dict for `configure_optimizers`, or None for a constant rate."""
    name, options = _options(cfg, "scheduler", drop=("monitor",))
    if name == "none":
        return None
    interval = "epoch"
    if name == "onecycle":
        options["total_steps"] = total_steps
        interval = "step"
    try:
        scheduler = SCHEDULERS[name](optimizer, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError("scheduler", f"{name}: {e}") from None
    config = {"scheduler": scheduler, "interval": interval}
    if name == "plateau":
        config["monitor"] = cfg.monitor
    return config
