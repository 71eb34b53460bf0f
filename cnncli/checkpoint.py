"""The checkpoint contract: what a cnncli checkpoint holds, written and read in this module only.

A checkpoint is Lightning's dict (`state_dict`, `epoch`, `global_step`, optimizer and loop state) plus:

    cnncli          config (the resolved run config: its model and data sections rebuild the network and
                    the data, through cnncli's registries), class_names, normalization, task, cnncli_version
    history         one row of epoch metrics per epoch trained (summary.json, curves.png after a resume)
    rng_states      the global random states, so a resumed run draws what it would have drawn

A checkpoint is untrusted input. It is loaded with `torch.load(weights_only=True)` (tensors and plain data,
never pickled code), and what rebuilds the network and the data is looked up in cnncli's registries
(cnncli/models/__init__.py, cnncli/data/__init__.py): nothing read from the file names code to run, unless
the user passes `trust_model_code=true` for a model or data module of their own.
"""

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnncli import __version__
from cnncli.errors import UserError

KEY = "cnncli"
TRANSFER_KEYS = ("pretrained", "weights", "freeze")  # how training started: not needed to rebuild the network


# ------------------------------------------------------------------------------------------------ writing


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


def metadata(run_config: dict, class_names: list, normalization: dict, task: str = "classification") -> dict:
    """What every checkpoint of a run stores beside the weights (`run_config`: the resolved run config)."""
    return {
        "config": run_config,
        "task": task,
        "class_names": list(class_names),
        "normalization": {k: list(v) for k, v in normalization.items()},
        "cnncli_version": __version__,
    }


def store(checkpoint: dict, run_metadata: dict, history: list[dict]) -> None:
    """Fill Lightning's checkpoint dict (LightningModule.on_save_checkpoint): the metadata, the epoch rows,
    the global random states as plain values (the file must load with weights_only)."""
    from lightning.fabric.utilities.seed import _collect_rng_states

    checkpoint[KEY] = run_metadata
    checkpoint["history"] = history
    rng = _collect_rng_states(include_cuda=False)
    name, keys, pos, has_gauss, gauss = rng.pop("numpy")
    rng["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    checkpoint["rng_states"] = rng


def restore(checkpoint: dict) -> list[dict]:
    """On resume (LightningModule.on_load_checkpoint): set the random states back; the epoch rows."""
    from lightning.fabric.utilities.seed import _set_rng_states

    if "rng_states" in checkpoint:
        rng = dict(checkpoint["rng_states"])
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        rng["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
        _set_rng_states(rng)
    return checkpoint.get("history", [])


# ------------------------------------------------------------------------------------------------ reading


def load_file(path: Path, what: str = "checkpoint") -> object:
    """Every file of weights the project reads, read here: `torch.load(weights_only=True)`, so a pickle that
    would run code is refused; a damaged file is one line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what}: {path} is a directory, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused a global (a class or function: unpickling it could run code), or the file is
        # no pickle at all (a text file, say)
        refused = [line.strip() for line in str(e).splitlines() if "global" in line.lower()]
        if not refused:
            raise UserError(f"cannot read {what} {path}: not a PyTorch file") from None
        reason = refused[0]
        raise UserError(
            f"{what}: refused to load {path}: it holds Python objects other than tensors and plain data, which "
            f"could run code when loaded; refused for safety ({reason})"
        ) from None
    except Exception as e:  # noqa: BLE001 (a damaged file raises anything from zip, pickle or storage code)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read {what} {path}: truncated or not a PyTorch checkpoint ({reason})") from None


def is_checkpoint(data: object) -> bool:
    return isinstance(data, dict) and KEY in data and "state_dict" in data


def network_weights(data: dict) -> dict:
    """The network's weights: the LightningModule's `model.` entries, prefix removed."""
    return {k.removeprefix("model."): v for k, v in data["state_dict"].items() if k.startswith("model.")}


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input: as the run evaluated its test split."""

    channels: int
    image_size: int
    resize: str
    mean: list[float]
    std: list[float]


class Checkpoint:
    """A cnncli checkpoint, read: the network ready to run, its preprocessing, its data and history."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"checkpoint not found: {self.path}")
        data = load_file(self.path)
        if not is_checkpoint(data) or not isinstance(data[KEY], dict) or "config" not in data[KEY]:
            raise UserError(f"{self.path} is not a cnncli checkpoint (it has no stored run config and weights)")
        self._data, self._meta = data, data[KEY]

    @property
    def config(self) -> DictConfig:
        """The run config, for reading values; the network and data are rebuilt from their specs instead."""
        return OmegaConf.create(self._meta["config"])

    @property
    def class_names(self) -> list[str]:
        names = self._meta.get("class_names") or range(int(self.config.data.num_classes))
        return [str(name) for name in names]

    @property
    def num_classes(self) -> int:
        return int(self.config.data.num_classes)

    @property
    def normalization(self) -> dict:
        return self._meta["normalization"]

    @property
    def task(self) -> str:
        return self._meta.get("task", "classification")

    @property
    def model_name(self) -> str:
        return str(self._meta["config"]["model"].get("_target_"))

    @property
    def data_name(self) -> str | None:
        return self._meta["config"]["data"].get("name")

    @property
    def cnncli_version(self) -> str | None:
        return self._meta.get("cnncli_version")

    @property
    def run_config(self) -> dict:
        return self._meta["config"]

    @property
    def history(self) -> list[dict]:
        return self._data.get("history", [])

    @property
    def global_step(self) -> int:
        return int(self._data.get("global_step", 0))

    @property
    def class_weights(self) -> torch.Tensor | None:
        return self._data["state_dict"].get("class_weights")

    @property
    def preprocessing(self) -> Preprocessing:
        data = self._meta["config"]["data"]
        return Preprocessing(
            channels=int(data["channels"]),
            image_size=int(data["image_size"]),
            resize=data.get("resize", "stretch"),
            mean=list(self.normalization["mean"]),
            std=list(self.normalization["std"]),
        )

    def network(self, trust_code: bool = False) -> nn.Module:
        """The trained network in eval mode, rebuilt without its starting weights (pretrained, model.weights:
        the checkpoint holds every weight itself) and loaded from the checkpoint."""
        from cnncli.models import build_network, network_spec

        model = build_network(network_spec(self._meta["config"]["model"]), trust_code)
        try:
            model.load_state_dict(network_weights(self._data))
        except RuntimeError as e:  # size mismatch, missing or unexpected keys
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            raise UserError(f"{self.path}: the stored weights do not fit the stored model ({detail})") from None
        return model.eval()

    def datamodule(self, trust_code: bool = False, **options):
        """The run's data module, with its normalization, rebuilt from its registry name; `options` override
        stored values (batch_size ...)."""
        from cnncli.data import build_data, data_spec

        spec = data_spec(self._meta["config"]["data"])
        return build_data(spec, trust_code, normalization=self.normalization, **options)
