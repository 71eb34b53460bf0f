"""Transfer learning (the course's fine-tuning section). `build_model` (cnncli/models/__init__.py) takes the
keys every model config has, `pretrained` (torchvision's ImageNet weights), `weights` (a state_dict file or
cnncli checkpoint) and `freeze`, builds the network for the data set's classes, loads the starting weights
into every layer but the head (which starts afresh, sized for the data set's classes) and freezes what
`freeze` names.

A model's parts, by convention (torchvision's names, which the zoo follows):
- head: the layer that outputs the class scores, i.e. the last layer with weights of its own in the order
  the model registers them, and likewise the last layer of each auxiliary classifier (GoogLeNet's aux1, aux2).
- classifier: the part after the convolutional features, i.e. the child named `classifier`, `fc` or `head`
  (or `aux*`), or in an nn.Sequential every layer after the last Flatten; the heads always belong to it.
- features: everything else.
"""

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnncli.errors import ConfigError, UserError

if TYPE_CHECKING:
    import torchvision

FREEZE = ("none", "features", "all_but_head")
CLASSIFIER_NAMES = ("classifier", "fc", "head")
# The zoo's builders whose layers are exactly torchvision's, so its ImageNet weights fit them.
IMAGENET_MODELS = (
    "alexnet (variant=torchvision), vgg11 vgg13 vgg16 vgg19 (batch_norm true or false), googlenet "
    "(variant=torchvision), resnet18 resnet34 resnet50 resnet101 resnet152, convnext_tiny convnext_small"
)


# ------------------------------------------------------------------------------------------- model parts


def _last_weighted_layer(module: nn.Module, prefix: str) -> str:
    weighted = [
        name
        for name, layer in module.named_modules(prefix=prefix)
        if next(layer.parameters(recurse=False), None) is not None
        or next(layer.buffers(recurse=False), None) is not None
    ]
    return weighted[-1] if weighted else prefix


def head_layers(model: nn.Module) -> list[str]:
    """Names of the layers that output class scores: their shapes follow the number of classes."""
    auxiliary = [(name, child) for name, child in model.named_children() if name.startswith("aux")]
    return [_last_weighted_layer(model, ""), *(_last_weighted_layer(child, name) for name, child in auxiliary)]


def classifier_layers(model: nn.Module) -> list[str]:
    """Names of the layers after the convolutional features (see the module docstring)."""
    names = [name for name, _ in model.named_children() if name in CLASSIFIER_NAMES or name.startswith("aux")]
    if isinstance(model, nn.Sequential):
        flattens = [i for i, layer in enumerate(model) if isinstance(layer, nn.Flatten)]
        if flattens:
            names += [str(i) for i in range(flattens[-1] + 1, len(model))]
    return names + head_layers(model)


def _inside(name: str, layers: list[str]) -> bool:
    return any(layer == "" or name == layer or name.startswith(layer + ".") for layer in layers)


def freeze_layers(model: nn.Module, part: str) -> None:
    """`features`: only the classifier trains; `all_but_head`: only the head trains. Frozen parameters get
    no gradient; BatchNorm layers among them still normalize with batch statistics in training and update
    their running statistics to the new data (as in PyTorch's fine-tuning tutorial)."""
    if part == "none":
        return
    trainable = classifier_layers(model) if part == "features" else head_layers(model)
    frozen = [p for name, p in model.named_parameters() if not _inside(name, trainable)]
    if not frozen:
        raise ConfigError("model.freeze", f"{part}: this model has no layers outside its classifier to freeze")
    if len(frozen) == len(list(model.parameters())):
        raise ConfigError(
            "model.freeze", f"{part}: leaves nothing to train (the model's head has no trainable weights)"
        )
    for parameter in frozen:
        parameter.requires_grad_(False)


# ---------------------------------------------------------------------------------------- starting weights


def imagenet_weights(options: dict) -> "torchvision.models.WeightsEnum":
    """torchvision's default ImageNet weights for the model a config builds, or a ConfigError naming the
    models that have them."""
    module, _, builder = str(options.get("_target_")).removeprefix("cnncli.models.").rpartition(".")
    name = None
    if (
        module == "resnet"
        and builder in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
        or module == "convnext"
    ):
        name = builder
    elif module == "vgg":
        name = builder + ("_bn" if options.get("batch_norm") else "")
    elif module in ("alexnet", "googlenet") and builder == module and options.get("variant") == "torchvision":
        name = builder
    if name is None:
        raise ConfigError(
            "model.pretrained",
            f"no ImageNet weights for {options.get('_target_')}; torchvision has them for: {IMAGENET_MODELS}",
        )
    import torchvision  # here: it costs a second of start-up, and only pretrained=true needs it

    return torchvision.models.get_model_weights(name).DEFAULT


def download_imagenet_weights(weights: "torchvision.models.WeightsEnum") -> dict:
    """The weights' state_dict from torch's hub cache, downloaded there first when missing."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, map_location="cpu", weights_only=True, check_hash=False)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if path.is_file():
            raise UserError(
                f"model.pretrained: cannot read {path} ({reason}); delete it to download it again"
            ) from None
        raise UserError(
            f"model.pretrained: cannot download {weights.url} ({reason}); offline, put that file at {path} "
            "(the folder is $TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints)"
        ) from None


def read_weights(path: str) -> dict:
    """A state_dict from a cnncli checkpoint or a plain `torch.save(model.state_dict())` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError("model.weights", f"file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # weights_only refused a class: unpickling it could run code
            raise UserError(
                f"model.weights: refused to load {path}: it holds Python objects other than tensors"
            ) from None
        raise UserError(f"model.weights: cannot read {path}: not a PyTorch file") from None
    except Exception as e:
        raise UserError(f"model.weights: cannot read {path}: not a PyTorch file ({type(e).__name__})") from None
    if isinstance(data, dict) and "cnncli" in data and "state_dict" in data:
        from cnncli.checkpoint import model_state_dict  # (imports Lightning: only when needed)

        return model_state_dict(data)
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise UserError(f"model.weights: {path} is neither a cnncli checkpoint nor a state_dict of tensors")


def load_starting_weights(model: nn.Module, state: dict, source: str) -> None:
    """Load `state` into every layer of `model` but its heads, which keep the fresh weights the builder gave
    them for the data set's classes (the old head scored other classes: reused, it transferred worse in a
    LeNet-5 experiment, digits 0-4 -> 5-9, README "Transfer learning"). A 3-channel first convolution given
    to a 1-channel model is summed over its channels (the same output as the gray image copied to RGB); any
    other mismatch is an error."""
    own, heads = model.state_dict(), head_layers(model)
    loaded = {}
    for key, value in state.items():
        if key not in own:
            if getattr(model, key.split(".")[0], "absent") is None:
                continue  # a part this model switched off (GoogLeNet's aux1 / aux2 with aux_logits=false)
            raise UserError(f"{source}: {key} is not a weight of this model (is it the same architecture?)")
        if _inside(key, heads):
            continue  # the head starts afresh: its classes are the new data set's
        if value.shape == own[key].shape:
            loaded[key] = value
        elif value.dim() == 4 and value.shape[1] == 3 and own[key].shape == (value.shape[0], 1, *value.shape[2:]):
            loaded[key] = value.sum(dim=1, keepdim=True)
        else:
            hint = " (ImageNet weights need data.channels=3 or 1)" if value.dim() == 4 and value.shape[1] == 3 else ""
            raise UserError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model's is {tuple(own[key].shape)}{hint}"
            )
    missing = [key for key in own if key not in state and not _inside(key, heads)]
    if missing:
        more = f" and {len(missing) - 1} more of the model's weights" if len(missing) > 1 else ""
        raise UserError(f"{source}: has no {missing[0]}{more} (is it the same architecture?)")
    model.load_state_dict(loaded, strict=False)
