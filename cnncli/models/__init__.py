"""The model zoo: one file per architecture family, one small builder per variant, and its facts.

Every builder takes `in_channels`, `num_classes` and `image_size` (filled in from the data config) plus its
own options, and raises ConfigError for an option it cannot honour. `conf/model/<name>.yaml` names it with
`_target_: cnncli.models.<family>.<name>`. Each family file declares its models' facts in a dict
`MODELS = {name: ModelCard(...)}` (as timm's `default_cfg`): that dict is the registry. A builder that is
not in a family's MODELS is not a cnncli model. Adding an architecture: docs/models.md.

Transfer learning (`pretrained`, `weights`, `freeze`: keys every model config has) is handled by
`build_model` with the helpers of cnncli/models/transfer.py, so builders stay simple.
"""

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnncli.config import call_target
from cnncli.errors import ConfigError, UserError, check_choice

# A fact that depends on the model's options (variant, batch_norm, aux_logits) is a function of them.
Fact = Callable[[dict], object]


@dataclass(frozen=True)
class PaperSpeed:
    """A paper's inference throughput and ImageNet-1K top-1 for the model: `cnncli bench` prints them beside
    its own measurement, labelled with the paper's hardware (a different machine from the user's)."""

    images_per_second: float
    top1: float  # ImageNet-1K top-1 accuracy, %
    hardware: str  # how the paper measured it
    source: str


@dataclass(frozen=True)
class ModelCard:
    """What is known of a model besides its code. Layer names are module paths (`classifier.6`); in an
    nn.Sequential a negative index counts from its end (`-1`: its last layer) and `N:` stands for the
    layers from N on (`-7:`: the last seven)."""

    channels: int  # the native input: channels, side, classes
    image_size: int
    num_classes: int
    min_size: int | Fact  # the smallest input side the network accepts
    head: tuple[str, ...] | Fact  # the layers that output class scores (auxiliary heads too)
    classifier: tuple[str, ...] | Fact  # what follows the features: trains with model.freeze=features
    first_conv: str | Fact | None = None  # the layer that sees the pixels (None: an MLP)
    paper_params: float | None = None  # the paper's figures, as it rounds them
    paper_macs: float | None = None
    paper_source: str = ""
    paper_speed: PaperSpeed | None = None
    imagenet_weights: str | Fact | None = None  # torchvision's weights name (get_model_weights) where one exists
    task: str = "classification"  # or "segmentation": a score map per class (cnncli/tasks/<task>.py)
    # the options of the network its paper draws, where the config trains another one by default (U-Net:
    # the paper's 572 -> 388 network; conf/model/unet.yaml a small padded one): `cnncli params` shows it
    paper_options: dict = field(default_factory=dict)
    # starting weights made for another input fitted to the built network (ViT: position embeddings
    # interpolated to its token grid): (state_dict, model) -> state_dict
    fit_weights: Callable[[dict, nn.Module], dict] | None = None
    notes: dict = field(default_factory=dict)

    def fact(self, name: str, options: dict):
        value = getattr(self, name)
        return value(options) if callable(value) else value


TARGET = re.compile(r"cnncli\.models\.([a-z0-9_]+)\.([a-z0-9_]+)")


def families() -> list[str]:
    """The model family files of the package (without importing them)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in ("common", "transfer"))


def task_models(task: str) -> list[str]:
    """The names of the zoo's models made for `task` (their cards'), e.g. unet for segmentation."""
    names = []
    for family in families():
        models = getattr(importlib.import_module(f"cnncli.models.{family}"), "MODELS", {})
        names += [name for name, card in models.items() if card.task == task]
    return names


def model_card(target: str, trusted: bool = False) -> ModelCard | None:
    """The card of `cnncli.models.<family>.<name>`, or None for a target that names no cnncli model. Only
    the family's own MODELS dict is consulted: no attribute of the module is ever walked. `trusted` (a target
    from the user's own config, never from a file): the user's module is imported for its MODELS too."""
    match = TARGET.fullmatch(str(target))
    if match is not None and match.group(1) in families():
        module = importlib.import_module(f"cnncli.models.{match.group(1)}")
        return getattr(module, "MODELS", {}).get(match.group(2))
    module_name, _, name = str(target).rpartition(".")
    if not trusted or not module_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, "MODELS", {}).get(name)


def builder(target: str, trust_code: bool) -> Callable[..., nn.Module]:
    """The function that builds `target`: a cnncli model (its card's family, by exact name), a torchvision
    builder by the name torchvision registers it under, or with `trust_code` any importable callable."""
    match = TARGET.fullmatch(str(target))
    if match and model_card(target) is not None:
        return getattr(importlib.import_module(f"cnncli.models.{match.group(1)}"), match.group(2))
    family, _, name = str(target).rpartition(".")
    if family == "torchvision.models":
        import torchvision

        if name in torchvision.models.list_models(module=torchvision.models):
            return torchvision.models.get_model_builder(name)
    if trust_code:
        import hydra.utils

        try:
            return hydra.utils.get_method(str(target))
        except Exception as e:  # noqa: BLE001 (Hydra wraps any import failure in its own error types)
            raise ConfigError("model._target_", f"cannot import {target!r} ({str(e).splitlines()[0]})") from None
    raise UserError(
        f"refused for safety: the model builder {target!r} is outside cnncli.models' registry and torchvision's "
        "builders; pass trust_model_code=true only if you trust where this file came from"
    )


def check_plain(key: str, value) -> None:
    """Options read from a file are plain values: no `_target_`, `_partial_`, `_args_` ... that a builder or
    Hydra could turn into a call."""
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).startswith("_"):
                raise UserError(f"refused for safety: {key}.{k} in a stored config names code to run")
            check_plain(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(f"{key}[{i}]", v)
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise UserError(f"refused for safety: {key} holds a {type(value).__name__}, not a plain value")


def resolve_layers(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    """A card's layer names as the model's module names; a layer the model switched off (GoogLeNet's aux1
    with aux_logits=false: the attribute is None) is left out."""
    return [layer for name in names for layer in _resolve(model, name.split("."), [])]


def _resolve(module: nn.Module, parts: list[str], path: list[str]) -> list[str]:
    if not parts:
        return [".".join(path)]
    part, rest = parts[0], parts[1:]
    if isinstance(module, nn.Sequential) and re.fullmatch(r"-?\d+:?", part):
        children = list(module._modules)
        picked = children[int(part[:-1]) :] if part.endswith(":") else [children[int(part)]]
    else:
        picked = [part]
    layers = []
    for name in picked:
        child = module._modules[name] if name in module._modules else getattr(module, name, ...)
        if child is ...:
            raise AssertionError(f"a model card names {'.'.join([*path, name])}, which the model does not have")
        if child is not None:  # None: switched off
            layers += _resolve(child, rest, [*path, name])
    return layers


@dataclass(frozen=True)
class Parts:
    """A built model's declared parts, as its module names."""

    head: list[str]
    classifier: list[str]
    first_conv: str | None


def model_parts(options: dict, model: nn.Module) -> Parts:
    """The head, the classifier and the first convolution of a model built from `options` (a model config),
    from its card. A model without a card (the user's own builder) has them only when it declares them:
    then freezing and the head learning rate are refused in one line."""
    card = model_card(options.get("_target_"), trusted=True)
    if card is None:
        return Parts([], [], None)
    return Parts(
        head=resolve_layers(model, card.fact("head", options)),
        classifier=resolve_layers(model, card.fact("classifier", options)),
        first_conv=card.fact("first_conv", options),
    )


TRANSFER_KEYS = ("pretrained", "weights", "freeze")  # how a run started: not needed to rebuild its network


def network_spec(model_cfg: dict) -> dict:
    """How a stored model config is rebuilt: the family and name of a cnncli model, as the registry has it
    (else the builder's dotted name, the user's own or torchvision's), and the option values, starting
    weights left out."""
    options = {k: v for k, v in model_cfg.items() if k not in (*TRANSFER_KEYS, "_target_")}
    target = str(model_cfg.get("_target_"))
    match = TARGET.fullmatch(target)
    if match and model_card(target) is not None:
        return {"family": match.group(1), "model": match.group(2), "options": options}
    return {"target": target, "options": options}


def build_network(spec: dict, trust_code: bool) -> nn.Module:
    """The network a spec describes (see network_spec), with fresh weights. A spec read from a file is
    untrusted: its names go through the registry and its options must be plain values."""
    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise UserError("refused for safety: the stored model options are not a mapping")
    if not trust_code:
        check_plain("model", options)
    if "family" in spec:
        target = f"cnncli.models.{spec['family']}.{spec['model']}"
        if model_card(target) is None:  # a family or name the registry does not have
            target = repr(target)
    else:
        target = str(spec.get("target"))
    build = builder(target, trust_code)
    model = call_target("model", {**options, "_target_": build})
    if not isinstance(model, nn.Module):
        raise UserError(f"the stored model {target!r} built a {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model(cfg: DictConfig | dict, starting_weights: bool = True) -> nn.Module:
    """The network a run's model config describes (the user's own config: its `_target_` is imported as
    given), with its starting weights (`pretrained`, `weights`) unless `starting_weights=False`, and its
    frozen layers."""
    from cnncli.models.transfer import (
        FREEZE,
        download_imagenet_weights,
        freeze_layers,
        imagenet_weights,
        load_starting_weights,
        read_weights,
    )

    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    target = str(options.get("_target_"))
    build = builder(target, trust_code=True)
    pretrained = options.pop("pretrained", False)
    weights = options.pop("weights", None)
    freeze = options.pop("freeze", "none")
    if not isinstance(pretrained, bool):
        raise ConfigError("model.pretrained", f"must be true or false, got {pretrained!r}")
    check_choice("model.freeze", freeze, FREEZE)
    if pretrained and weights:
        raise ConfigError("model.weights", "give model.pretrained=true or model.weights=PATH, not both")
    imagenet = imagenet_weights(options) if pretrained and starting_weights else None  # before it is built

    model = call_target("model", {**options, "_target_": build})
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_ {target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    parts = model_parts(options, model)
    state = source = None
    if imagenet is not None:
        state = download_imagenet_weights(imagenet)
        source = f"model.pretrained: {imagenet.__class__.__name__}.{imagenet.name}"
    elif starting_weights and weights:
        state, source = read_weights(weights), f"model.weights: {weights}"
    if state is not None:
        card = model_card(target, trusted=True)
        fit = card.fit_weights if card is not None else None
        load_starting_weights(model, parts, fit(state, model) if fit else state, source)
    freeze_layers(model, parts, freeze)
    return model
