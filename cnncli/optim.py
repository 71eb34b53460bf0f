"""Optimizers and learning-rate schedules. conf/optimizer and conf/scheduler name torch's own classes as Hydra
targets with `_partial_: true`, so the LightningModule receives factories and builds each once, in
configure_optimizers. Beside torch's options, each group holds a few keys that are not the class's:
optimizer.l1 and optimizer.backbone_lr_mult (cnncli's: a loss term, the parameter groups) and
scheduler.interval and scheduler.monitor (Lightning's lr_scheduler dict)."""

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cnncli.config import import_target
from cnncli.errors import ConfigError

OPTIMIZER_KEYS = ("l1", "backbone_lr_mult")
SCHEDULE_KEYS = ("interval", "monitor")


@dataclass
class Optimization:
    """How a task's parameters are optimized: what its LightningModule's configure_optimizers returns."""

    optimizer: Callable[..., torch.optim.Optimizer]  # of the parameters (groups)
    scheduler: Callable | None = None  # of the optimizer; None: a constant rate
    interval: str = "epoch"  # the schedule steps every epoch, or every "step"
    monitor: str | None = None  # the metric a ReduceLROnPlateau schedule watches
    l1: float = 0.0  # L1 penalty on the weights, added to the loss by the task
    backbone_lr_mult: float = 1.0  # the layers below the head learn at lr * this

    def configure(self, named_parameters, head: list[str], total_steps: int):
        """The optimizer (and schedule) for Lightning's configure_optimizers: frozen parameters (model.freeze)
        left out; with backbone_lr_mult != 1 the head's layers (names in `head`) form the first group, so
        param_groups[0]["lr"] is optimizer.lr."""
        optimizer = _build("optimizer", self.optimizer, self._parameter_groups(named_parameters, head))
        if self.scheduler is None:
            return optimizer
        options = {}
        accepts = inspect.signature(self.scheduler.func).parameters
        if "total_steps" in accepts and "total_steps" not in self.scheduler.keywords:  # OneCycleLR
            options["total_steps"] = total_steps
        max_lr = self.scheduler.keywords.get("max_lr")
        if isinstance(max_lr, (int, float)):  # one peak per group, in proportion to its rate (backbone_lr_mult)
            base_lr = optimizer.defaults["lr"]
            options["max_lr"] = [max_lr * group["lr"] / base_lr for group in optimizer.param_groups]
        schedule = {"scheduler": _build("scheduler", self.scheduler, optimizer, **options), "interval": self.interval}
        if self.monitor:
            schedule["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _parameter_groups(self, named_parameters, head: list[str]) -> list:
        trainable = [(name, p) for name, p in named_parameters if p.requires_grad]
        if self.backbone_lr_mult == 1:
            return [p for _, p in trainable]
        if not head:
            raise ConfigError("optimizer.backbone_lr_mult", "the model's card declares no head (docs/models.md)")
        in_head = [any(name == layer or name.startswith(layer + ".") for layer in head) for name, _ in trainable]
        lr = self.optimizer.keywords["lr"] * self.backbone_lr_mult
        groups = [
            {"params": [p for (_, p), is_head in zip(trainable, in_head) if is_head]},
            {"params": [p for (_, p), is_head in zip(trainable, in_head) if not is_head], "lr": lr},
        ]
        return [group for group in groups if group["params"]]


def optimization(cfg: DictConfig) -> Optimization:
    """The Optimization of a run config's optimizer and scheduler groups. Nothing is built yet; an option the
    class does not take is refused here, in one line naming the key and the options it takes."""
    optimizer, own = _factory("optimizer", cfg.optimizer, OPTIMIZER_KEYS, first="params")
    mult = own.get("backbone_lr_mult", 1.0)
    if not isinstance(mult, (int, float)) or isinstance(mult, bool) or mult <= 0:
        raise ConfigError("optimizer.backbone_lr_mult", f"must be a number > 0, got {mult!r}")
    if "lr" not in optimizer.keywords:
        raise ConfigError("optimizer.lr", "missing: the optimizer's learning rate")
    scheduler, schedule = None, {}
    if cfg.get("scheduler"):  # scheduler=none is an empty group
        scheduler, schedule = _factory("scheduler", cfg.scheduler, SCHEDULE_KEYS, first="optimizer")
    if schedule.get("interval", "epoch") not in ("epoch", "step"):
        raise ConfigError("scheduler.interval", f"{schedule['interval']!r} is not one of: epoch, step")
    return Optimization(optimizer, scheduler, l1=own.get("l1", 0.0), backbone_lr_mult=mult, **schedule)


def _factory(group: str, cfg: DictConfig, own_keys: tuple[str, ...], first: str) -> tuple[Callable, dict]:
    """The group's `_partial_` target, made by Hydra, and the group's keys that are not the class's."""
    options = OmegaConf.to_container(cfg, resolve=True)
    own = {key: options.pop(key) for key in own_keys if key in options}
    target = options.get("_target_")
    if not target:
        raise ConfigError(f"{group}._target_", "missing: the config must name a class, e.g. torch.optim.SGD")
    if options.get("_partial_") is not True:
        raise ConfigError(f"{group}._partial_", f"must be true: cnncli passes the {first} when it builds {target}")
    cls = import_target(group, target)
    parameters = {name: p for name, p in inspect.signature(cls).parameters.items() if name != first}
    for key, value in options.items():
        if not key.startswith("_") and key not in parameters:
            allowed = ", ".join([*parameters, *own_keys])
            raise ConfigError(f"{group}.{key}", f"{cls.__name__} takes no option {key!r}; it takes: {allowed}")
        if not key.startswith("_"):
            _check_type(f"{group}.{key}", value, parameters[key])
    return hydra.utils.instantiate(options, _convert_="all"), own


def _check_type(key: str, value, parameter: inspect.Parameter) -> None:
    """torch's classes take a wrong type silently: MultiStepLR(milestones=["a", "b"]) never decays, a rate
    given as text fails deep inside the first step. A value must have the type of the option's default (or
    its annotation, int or float, where it has none); milestones must be increasing epoch (or step) numbers."""
    default = parameter.default
    if default is inspect.Parameter.empty and parameter.annotation in (int, float, "int", "float"):
        default = 0

    def is_number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if key.endswith(".milestones"):
        if not isinstance(value, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in value):
            raise ConfigError(key, f"must be a list of integers (epochs, or steps), got {value!r}")
        if value != sorted(set(value)) or any(m < 0 for m in value):
            raise ConfigError(key, f"must be increasing integers >= 0, got {value!r}")
    elif isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    elif is_number(default) and not is_number(value):
        raise ConfigError(key, f"must be a number, got {value!r}")


def _build(group: str, factory: Callable, *args, **options):
    try:
        return factory(*args, **options)
    # torch's checks of values (a negative rate, betas outside [0, 1)); RuntimeError: fused=true refused
    # (with foreach=true, or on a device without the kernels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(group, f"{factory.func.__name__}: {e}") from None


def with_lr(cfg: DictConfig, lr: float) -> DictConfig:
    """A copy of the run config with optimizer.lr set (schedules that name ${optimizer.lr} follow it)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.optimizer.lr = float(lr)
    return cfg
