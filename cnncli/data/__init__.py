"""Data sets: one file each, a LightningDataModule named by `_target_` in conf/data/<name>.yaml.

DATA_MODULES is the registry a checkpoint's data is rebuilt from: a stored `_target_` is only looked up in it,
never imported.
"""

import importlib

from cnncli.config import call_target
from cnncli.errors import UserError

# registry name -> the class, as "module:Class" (imported only when used: some import torchvision)
DATA_MODULES = {
    "digits": "cnncli.data.digits:DigitsDataModule",
    "fake": "cnncli.data.fake:FakeData",
    "imagefolder": "cnncli.data.folder:ImageFolderData",  # chestxray too
    "hdf5": "cnncli.data.hdf5:HDF5Data",
    "mnist": "cnncli.data.mnist:MNISTData",
    "fashion_mnist": "cnncli.data.mnist:FashionMNISTData",
    "kmnist": "cnncli.data.mnist:KMNISTData",
    "cifar10": "cnncli.data.cifar:CIFAR10Data",
    "cifar100": "cnncli.data.cifar:CIFAR100Data",
    "svhn": "cnncli.data.svhn:SVHNData",
    "shapes": "cnncli.data.shapes:ShapesData",  # segmentation: images with masks
    "segfolder": "cnncli.data.segfolder:SegFolderData",
    "pets": "cnncli.data.segmentation_sets:PetsData",
    "voc": "cnncli.data.segmentation_sets:VOCData",
}


def data_spec(data_cfg: dict) -> dict:
    """How a stored data config is rebuilt: the registry name of its module and the option values (the
    user's own module: its dotted name, rebuilt only with trust_model_code=true)."""
    options = {k: v for k, v in data_cfg.items() if k != "_target_"}
    target = str(data_cfg.get("_target_"))
    for name, where in DATA_MODULES.items():
        if where.replace(":", ".") == target:
            return {"module": name, "options": options}
    return {"target": target, "options": options}


def build_data(spec: dict, trust_code: bool, **overrides):
    """The data module a checkpoint's spec describes, its stored options updated with `overrides`."""
    from cnncli.models import check_plain

    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise UserError("refused for safety: the stored data options are not a mapping")
    if not trust_code:
        check_plain("data", options)
    if "module" in spec:
        if spec["module"] not in DATA_MODULES:
            raise UserError(f"refused: the stored data module {spec['module']!r} is not one of cnncli's")
        module, _, cls = DATA_MODULES[spec["module"]].partition(":")
        target = getattr(importlib.import_module(module), cls)
    elif trust_code:
        target = str(spec.get("target"))
    else:
        raise UserError(
            f"refused for safety: the stored data module {spec.get('target')!r} is not one of cnncli's; pass "
            "trust_model_code=true only if you trust where this file came from, or data=NAME for one of cnncli's"
        )
    return call_target("data", {**options, **overrides, "_target_": target})
