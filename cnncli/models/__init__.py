"""The model zoo: one file per architecture family, one small builder per variant.

Every builder takes `in_channels`, `num_classes` and `image_size` (filled in from the data config) plus
its own options, and raises ConfigError for an option it cannot honour. `conf/model/<name>.yaml` names
its builder with `_target_`.
"""

from omegaconf import DictConfig
from torch import nn

from cnncli.config import call_target
from cnncli.errors import UserError

# Builders a checkpoint may name. A checkpoint is untrusted input: building from it must not import and
# call an arbitrary function (say `os.system`), so anything else needs `trust_model_code=true`.
TRUSTED_BUILDERS = ("cnncli.models.", "torchvision.models.")


def build_model(cfg: DictConfig | dict, trust_code: bool = True) -> nn.Module:
    target = str(cfg.get("_target_"))
    if not trust_code and not target.startswith(TRUSTED_BUILDERS):
        raise UserError(
            f"the checkpoint's model builder {target!r} is outside cnncli.models and torchvision.models; "
            "pass trust_model_code=true if you trust where the checkpoint came from"
        )
    model = call_target("model", cfg)
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_ {target!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
