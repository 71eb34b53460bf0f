"""Transfer learning (the course's fine-tuning section). `build_model` (cnncli/models/__init__.py) takes the
keys every model config has, `pretrained` (torchvision's ImageNet weights), `weights` (a state_dict file or
cnncli checkpoint) and `freeze`, builds the network for the data set's classes, loads the starting weights
into every layer but the head (which starts afresh, sized for the data set's classes) and freezes what
`freeze` names.

A model's parts come from its card (`ModelCard.head`, `.classifier`, `.first_conv` in its family file): the
head outputs the class scores (GoogLeNet's auxiliary heads too); the classifier is what follows the
convolutional features; the features are everything else.
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnncli.errors import ConfigError, UserError

if TYPE_CHECKING:
    import torchvision

    from cnncli.models import Parts

log = logging.getLogger(__name__)  # `cnncli train` shows INFO on the terminal and in train.log

FREEZE = ("none", "features", "all_but_head")
# The zoo's builders whose layers are exactly torchvision's, so its ImageNet weights fit them.
IMAGENET_MODELS = (
    "alexnet (variant=torchvision), vgg11 vgg13 vgg16 vgg19 (batch_norm true or false), googlenet "
    "(variant=torchvision), resnet18 resnet34 resnet50 resnet101 resnet152, convnext_tiny convnext_small; "
    "segmentation (COCO weights of the VOC classes): fcn_resnet50 deeplabv3_resnet50"
)


# -------------------------------------------------------------------------------------------- model parts


def _inside(name: str, layers: list[str]) -> bool:
    return any(layer == "" or name == layer or name.startswith(layer + ".") for layer in layers)


def freeze_layers(model: nn.Module, parts: "Parts", part: str) -> None:
    """`features`: only the classifier trains; `all_but_head`: only the head trains. Frozen parameters get
    no gradient; BatchNorm layers among them still normalize with batch statistics in training and update
    their running statistics to the new data (as in PyTorch's fine-tuning tutorial)."""
    if part == "none":
        return
    if not parts.head:
        raise ConfigError("model.freeze", f"{part}: the model's card declares no head (docs/models.md)")
    trainable = [*parts.classifier, *parts.head] if part == "features" else parts.head
    frozen = [p for name, p in model.named_parameters() if not _inside(name, trainable)]
    if not frozen:
        raise ConfigError("model.freeze", f"{part}: this model has no layers outside its classifier to freeze")
    if len(frozen) == len(list(model.parameters())):
        raise ConfigError(
            "model.freeze", f"{part}: leaves nothing to train (the model's head has no trainable weights)"
        )
    for parameter in frozen:
        parameter.requires_grad_(False)
    layers = {name.rpartition(".")[0] for name, p in model.named_parameters() if not p.requires_grad}
    training = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(f"transfer: frozen: {part} ({len(layers)} layers); trainable {training:,} of {total:,} parameters")


# ---------------------------------------------------------------------------------------- starting weights


def imagenet_weights(options: dict) -> "torchvision.models.WeightsEnum":
    """torchvision's default ImageNet weights for the model a config builds (its card's `imagenet_weights`),
    or a ConfigError naming the models that have them."""
    from cnncli.models import model_card

    card = model_card(options.get("_target_"), trusted=True)
    name = card.fact("imagenet_weights", options) if card else None
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
    except Exception as e:  # noqa: BLE001 (urllib, hub and zip errors of every kind: one line, with the fix)
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
    from cnncli import checkpoint  # the one reader of files that hold weights

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError("model.weights", f"file not found: {path}")
    data = checkpoint.load_file(path, "model.weights")  # a directory, a damaged or an unsafe file: one line
    if checkpoint.is_checkpoint(data):
        return checkpoint.network_weights(data)
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise UserError(f"model.weights: {path} is neither a cnncli checkpoint nor a state_dict of tensors")


def load_starting_weights(model: nn.Module, parts: "Parts", state: dict, source: str) -> None:
    """Load `state` into every layer of `model` but its heads, which keep the fresh weights the builder gave
    them for the data set's classes (the old head scored other classes: reused, it transferred worse in a
    LeNet-5 experiment, digits 0-4 -> 5-9, docs/training.md). A 3-channel first convolution given to a
    1-channel model is summed over its channels (the same output as the gray image copied to RGB); any
    other mismatch is an error."""
    own = model.state_dict()
    loaded, summed = {}, False
    for key, value in state.items():
        if key not in own:
            if getattr(model, key.split(".")[0], "absent") is None:
                continue  # a part this model switched off (GoogLeNet's aux1 / aux2 with aux_logits=false)
            raise UserError(f"{source}: {key} is not a weight of this model (is it the same architecture?)")
        if _inside(key, parts.head):
            continue  # the head starts afresh: its classes are the new data set's
        if value.shape == own[key].shape:
            loaded[key] = value
        elif key == f"{parts.first_conv}.weight" and value.shape[1] == 3 and own[key].shape[1] == 1:
            loaded[key], summed = value.sum(dim=1, keepdim=True), True
        else:
            hint = " (ImageNet weights need data.channels=3 or 1)" if value.dim() == 4 and value.shape[1] == 3 else ""
            raise UserError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model's is {tuple(own[key].shape)}{hint}"
            )
    missing = [key for key in own if key not in state and not _inside(key, parts.head)]
    if missing:
        more = f" and {len(missing) - 1} more of the model's weights" if len(missing) > 1 else ""
        raise UserError(f"{source}: has no {missing[0]}{more} (is it the same architecture?)")
    model.load_state_dict(loaded, strict=False)
    key, _, origin = source.partition(": ")  # "model.weights: PATH", "model.pretrained: ResNet18_Weights.X"
    adapted = f"; {parts.first_conv}'s RGB filters summed for gray input" if summed else ""
    into = f"all but the head ({', '.join(parts.head)}, which starts fresh)" if parts.head else "every layer"
    log.info(f"transfer: weights from {origin} ({key}) into {into}: {len(loaded)} of {len(own)} tensors{adapted}")
