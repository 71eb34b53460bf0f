"""cnncli: train, evaluate, inspect and export convolutional image classifiers."""

from pathlib import Path

__version__ = "0.1.0"


def config_dir() -> Path:
    """The Hydra config folder: packaged inside the wheel, or `conf/` beside the package in a checkout."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "conf"
