"""Checks on a composed run config, so a bad value stops the run before anything is built or written,
with one line naming the key. (Hydra itself rejects unknown groups, options and keys; cnncli.optim checks
the optimizer's and schedule's options against torch's classes.)"""

import hydra.utils
from omegaconf import DictConfig, OmegaConf

from cnncli.errors import ConfigError


def check_number(cfg: DictConfig, key: str, low: float, high: float = float("inf"), *, integer=False, open_low=False):
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        return
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not is_number or (value <= low if open_low else value < low) or value > high:
        bound = f"> {low}" if open_low else f">= {low}"
        bound += "" if high == float("inf") else f" and <= {high}"
        raise ConfigError(key, f"must be {kind} {bound}, got {value!r}")


def validate_train_config(cfg: DictConfig) -> None:
    check_number(cfg, "seed", 0, integer=True)
    check_number(cfg, "label_smoothing", 0, 0.999)
    if OmegaConf.select(cfg, "optimizer.lr", default=None) != "auto":  # auto: a range test chooses it
        try:
            check_number(cfg, "optimizer.lr", 0, open_low=True)
        except ConfigError as e:
            raise ConfigError(
                e.key, f"{e.problem.replace(', got', ' or auto (a range test chooses it), got')}"
            ) from None
    check_number(cfg, "optimizer.weight_decay", 0)
    check_number(cfg, "optimizer.l1", 0)
    check_number(cfg, "optimizer.momentum", 0, 0.999)
    check_number(cfg, "data.batch_size", 1, integer=True)
    check_number(cfg, "data.channels", 1, integer=True)
    check_number(cfg, "data.image_size", 1, integer=True)
    check_number(cfg, "data.num_classes", 2, integer=True)
    check_number(cfg, "trainer.max_epochs", 1, integer=True)
    if OmegaConf.select(cfg, "trainer.threads", default="auto") != "auto":
        check_number(cfg, "trainer.threads", 1, integer=True)
    class_names = OmegaConf.select(cfg, "data.class_names", default=None)
    # num_classes null: an image folder's class folders (the data module checks class_names against them)
    if class_names is not None and cfg.data.num_classes is not None and len(class_names) != cfg.data.num_classes:
        raise ConfigError("data.class_names", f"has {len(class_names)} names for {cfg.data.num_classes} classes")


def call_target(group: str, cfg: DictConfig | dict, **extra):
    """Call the function or class a config group names with `_target_`, with the group's other keys as
    arguments. Unlike hydra.utils.instantiate, a mistake comes back as one ConfigError naming the key."""
    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    target = options.pop("_target_", None)
    if callable(target):  # already resolved by the caller (a registry)
        builder, target = target, getattr(target, "__qualname__", str(target))
    elif not target:
        raise ConfigError(f"{group}._target_", "missing: the config must name the function or class to build")
    else:
        builder = import_target(group, target)
    try:
        return builder(**options, **extra)
    except ConfigError as e:
        raise e.under(group) from None
    except TypeError as e:
        raise ConfigError(group, f"{target} does not accept these options: {e}") from None


def import_target(group: str, target: str):
    """The function or class a config's `_target_` names (the user's own config: trusted), or one ConfigError."""
    if "." not in target:
        raise ConfigError(f"{group}._target_", f"{target!r} is not a dotted path such as package.module.function")
    try:
        return hydra.utils.get_method(target)
    except Exception as e:  # noqa: BLE001 (Hydra wraps any import failure in its own error types)
        raise ConfigError(f"{group}._target_", f"cannot import {target!r} ({e})") from None


def absolute_data_paths(cfg: DictConfig) -> None:
    """data.root and data.cache_dir made absolute in the run config (config.yaml and the checkpoints keep
    them): eval, predict or resume from another folder find the same data and the same image cache."""
    from pathlib import Path

    for key in ("root", "cache_dir"):
        if cfg.data.get(key):
            cfg.data[key] = str(Path(cfg.data[key]).expanduser().resolve())
