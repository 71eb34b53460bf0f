"""Reading checkpoints safely: tensors and plain data only, never code."""

import pickle
from pathlib import Path

import torch

from cnncli.errors import UserError


def load_checkpoint(path: str | Path) -> dict:
    """A cnncli checkpoint as a dict, loaded with `weights_only=True`: a pickle that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0]
        raise UserError(
            f"refused to load {path}: it holds Python objects other than tensors and plain data, "
            f"which could run code when loaded ({reason})"
        ) from None
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint ({e})") from None
    if not isinstance(checkpoint, dict) or "cnncli" not in checkpoint or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not a cnncli checkpoint (it has no stored run config and weights)")
    return checkpoint


def model_state_dict(checkpoint: dict) -> dict:
    """The network's weights: the LightningModule's `model.` entries, prefix removed."""
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
