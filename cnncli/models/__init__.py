"""The model zoo: one file per architecture family, one small builder per variant.

Every builder takes `in_channels`, `num_classes` and `image_size` (filled in from the data config) plus
its own options, and raises ConfigError for an option it cannot honour. `conf/model/<name>.yaml` names
its builder with `_target_`.

Transfer learning (`pretrained`, `weights`, `freeze`: keys every model config has) is handled by
`build_model` with the helpers of cnncli/models/transfer.py, so builders stay simple.
"""

from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnncli.config import call_target
from cnncli.errors import ConfigError, UserError, check_choice
from cnncli.models.transfer import (
    FREEZE,
    download_imagenet_weights,
    freeze_layers,
    imagenet_weights,
    load_starting_weights,
    read_weights,
)

# Builders a checkpoint may name. A checkpoint is untrusted input: building from it must not import and
# call an arbitrary function (say `os.system`), so anything else needs `trust_model_code=true`.
TRUSTED_BUILDERS = ("cnncli.models.", "torchvision.models.")


def build_model(cfg: DictConfig | dict, trust_code: bool = True, starting_weights: bool = True) -> nn.Module:
    """The network a model config describes. `starting_weights=False` skips `pretrained` / `weights`: for
    a caller that loads a checkpoint's own weights into it next."""
    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    target = str(options.get("_target_"))
    if not trust_code and not target.startswith(TRUSTED_BUILDERS):
        raise UserError(
            f"the checkpoint's model builder {target!r} is outside cnncli.models and torchvision.models; "
            "pass trust_model_code=true if you trust where the checkpoint came from"
        )
    pretrained = options.pop("pretrained", False)
    weights = options.pop("weights", None)
    freeze = options.pop("freeze", "none")
    if not isinstance(pretrained, bool):
        raise ConfigError("model.pretrained", f"must be true or false, got {pretrained!r}")
    check_choice("model.freeze", freeze, FREEZE)
    if pretrained and weights:
        raise ConfigError("model.weights", "give model.pretrained=true or model.weights=PATH, not both")
    imagenet = imagenet_weights(options) if pretrained else None  # an unknown model fails before it is built

    model = call_target("model", options)
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_ {target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if starting_weights and imagenet is not None:
        source = f"model.pretrained: {imagenet.__class__.__name__}.{imagenet.name}"
        load_starting_weights(model, download_imagenet_weights(imagenet), source)
    elif starting_weights and weights:
        load_starting_weights(model, read_weights(weights), f"model.weights: {weights}")
    freeze_layers(model, freeze)
    return model
