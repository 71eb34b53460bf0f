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
    "multistep": lr_scheduler.MultiStepLR,
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


def parameter_groups(named_parameters, head: list[str], cfg: DictConfig) -> list:
    """The trainable parameters (frozen ones left out) for `build_optimizer`. With optimizer.backbone_lr_mult
    != 1, two groups: the head layers (names in `head`) at optimizer.lr first, the rest, pretrained, at
    lr * backbone_lr_mult."""
    trainable = [(name, p) for name, p in named_parameters if p.requires_grad]
    mult = cfg.get("backbone_lr_mult", 1.0)
    if mult == 1:
        return [p for _, p in trainable]
    if not head:
        raise ConfigError("optimizer.backbone_lr_mult", "the model's card declares no head (docs/models.md)")
    in_head = [any(name == layer or name.startswith(layer + ".") for layer in head) for name, _ in trainable]
    groups = [
        {"params": [p for (_, p), is_head in zip(trainable, in_head) if is_head]},
        {"params": [p for (_, p), is_head in zip(trainable, in_head) if not is_head], "lr": cfg.lr * mult},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(params, cfg: DictConfig) -> torch.optim.Optimizer:
    # l1 is a loss term, added by the module; backbone_lr_mult shapes the groups (parameter_groups)
    name, options = _options(cfg, "optimizer", drop=("l1", "backbone_lr_mult"))
    mult = cfg.get("backbone_lr_mult", 1.0)
    if not isinstance(mult, (int, float)) or isinstance(mult, bool) or mult <= 0:
        raise ConfigError("optimizer.backbone_lr_mult", f"must be a number > 0, got {mult!r}")
    try:
        return OPTIMIZERS[name](params, **options)
    # RuntimeError: torch refusing fused=true (with foreach=true, or on a device without the kernels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError("optimizer", f"{name}: {e}") from None


def build_scheduler(optimizer, cfg: DictConfig, total_steps: int) -> dict | None:
    """The Lightning lr_scheduler dict for `configure_optimizers`, or None for a constant rate."""
    name, options = _options(cfg, "scheduler", drop=("monitor",))
    if name == "none":
        return None
    interval = "epoch"
    if name == "onecycle":
        options["total_steps"] = total_steps
        # one peak per parameter group, each in proportion to the group's rate (optimizer.backbone_lr_mult)
        base_lr = optimizer.defaults["lr"]
        options["max_lr"] = [options["max_lr"] * group["lr"] / base_lr for group in optimizer.param_groups]
        interval = "step"
    try:
        scheduler = SCHEDULERS[name](optimizer, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError("scheduler", f"{name}: {e}") from None
    config = {"scheduler": scheduler, "interval": interval}
    if name == "plateau":
        config["monitor"] = cfg.monitor
    return config
