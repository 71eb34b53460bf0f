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

import contextlib
import os
import pickle
import pickletools
import warnings
import zipfile
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
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException as e:  # the previous file at `path` is untouched; the partial one goes
            with contextlib.suppress(OSError):  # best effort: the error to report is the one above
                partial.unlink(missing_ok=True)
            # a full disk fails a write inside torch.save, whose zip writer then raises "unexpected pos":
            # the OSError is in the chain
            cause = os_error(e) if isinstance(e, (OSError, RuntimeError)) else None
            if cause is None:
                raise
            where = f" ({cause.filename})" if cause.filename and cause.filename != str(path) else ""
            raise UserError(f"cannot write checkpoint {path}: {cause.strerror or cause}{where}") from None


def os_error(error: BaseException) -> OSError | None:
    """The OSError behind `error` (itself, or what it was raised from or while handling), if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


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
        with warnings.catch_warnings():  # its note on a pickle protocol other than torch's: we refuse or read
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused a global (a class or function: unpickling it could run code), or the file is
        # no pickle at all (a text file, say)
        refused = [line.strip() for line in str(e).splitlines() if "global" in line.lower()]
        if not refused:  # torch stopped before it reached a global (a pickle of a newer protocol, say)
            code = list(dict.fromkeys(name for name in pickled_globals(path) if name not in allowed_globals()))
            if not code:
                raise UserError(f"cannot read {what} {path}: not a PyTorch file") from None
            more = f" and {len(code) - 5} more" if len(code) > 5 else ""
            refused = [f"it names the global{'s' * (len(code) > 1)} {', '.join(code[:5])}{more}"]
        reason = refused[0]
        raise UserError(
            f"{what}: refused to load {path}: it holds Python objects other than tensors and plain data, which "
            f"could run code when loaded; refused for safety ({reason})"
        ) from None
    except Exception as e:  # noqa: BLE001 (a damaged file raises anything from zip, pickle or storage code)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read {what} {path}: truncated or not a PyTorch checkpoint ({reason})") from None


# pickle opcodes that push a string, what STACK_GLOBAL takes its module and name from
STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def pickled_globals(path: Path) -> list[str]:
    """The classes and functions (`module.name`) a pickle file names, read from its opcodes, nothing run
    (pickletools); a torch zip file's are those of its data.pkl. Empty for a file that is no pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = next((archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")), b"")
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile):
        return []
    names, pushed, memo = [], [], {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                names.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(pushed) >= 2:
                names.append(f"{pushed[-2]}.{pushed[-1]}")
            if opcode.name == "MEMOIZE":  # stores the top of the stack, pushes nothing
                memo[len(memo)] = pushed[-1] if pushed else None
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            else:
                pushed.append(arg if opcode.name in STRING_OPCODES else None)
    except Exception:  # noqa: BLE001 (genops raises ValueError and others where the bytes stop being a pickle)
        pass
    return names


def allowed_globals() -> set[str]:
    """What torch.load(weights_only=True) accepts (its private allowlist, where this torch has it)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 (a torch without it: every global is reported)
        return set()


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
    def palette(self) -> list[list[int]]:
        """A segmentation run's colour per class (its data.palette, else VOC's colours)."""
        from cnncli.data.masks import check_palette

        return check_palette(self._meta["config"]["data"].get("palette"), self.num_classes)

    @property
    def ignore_index(self) -> int:
        """A segmentation run's void label: mask pixels that count in no loss and no metric."""
        return int(self._meta["config"]["data"].get("ignore_index", 255))

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
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad = int((~torch.isfinite(tensor)).sum())
                raise UserError(
                    f"{self.path}: the stored weights are not finite ({name} holds {bad} nan or inf values "
                    f"of {tensor.numel()}): the run that saved them diverged"
                )
        return model.eval()

    def datamodule(self, trust_code: bool = False, **options):
        """The run's data module, with its normalization, rebuilt from its registry name; `options` override
        stored values (batch_size ...)."""
        from cnncli.data import build_data, data_spec

        spec = data_spec(self._meta["config"]["data"])
        return build_data(spec, trust_code, normalization=self.normalization, **options)
