"""Reading checkpoints safely (tensors and plain data only, never code) and writing them atomically."""

import os
import pickle
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cnncli.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it and renames it into place: a run killed mid-save
    (SIGKILL, power loss) leaves the previous checkpoint whole, never a half-written one. (Lightning's own
    save stages the file in the system temp folder, which is a copy, not a rename, across file systems.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)


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
    except Exception as e:  # noqa: BLE001 (a damaged file raises anything from zip, pickle or storage code)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or "cnncli" not in checkpoint or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not a cnncli checkpoint (it has no stored run config and weights)")
    return checkpoint


def model_state_dict(checkpoint: dict) -> dict:
    """The network's weights: the LightningModule's `model.` entries, prefix removed."""
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def run_folder(ckpt_path: Path) -> Path:
    """runs/<run>/checkpoints/best.ckpt -> runs/<run>; a checkpoint elsewhere -> its own folder."""
    folder = ckpt_path.resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder
