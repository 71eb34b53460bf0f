"""Helpers every data module shares: splitting, label checks, class weights."""

import torch

from cnncli.errors import ConfigError, UserError

SPLITS = ("train", "val", "test")


def check_fraction(key: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise ConfigError(f"data.{key}", f"must be a fraction in (0, 1), got {value!r}")
    return float(value)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, carved) with `fraction` of each class carved out, fixed by `seed`."""
    from sklearn.model_selection import train_test_split  # scikit-learn: only for data that carves a split

    index = torch.arange(len(labels))
    try:
        kept, carved = train_test_split(index.numpy(), test_size=fraction, stratify=labels.numpy(), random_state=seed)
    except ValueError as e:  # a class too small to appear on both sides
        raise UserError(f"cannot carve a stratified {fraction:.0%} split: {e}") from None
    return torch.from_numpy(kept), torch.from_numpy(carved)


def check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """A split holds images, its labels lie in [0, num_classes), and it has two classes or more (one class
    leaves nothing to learn or measure). (cnncli/data/folder.py checks its file lists the same way.)"""
    if len(labels) == 0:
        raise UserError(f"{where}: no images")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise UserError(
            f"{where}: labels span {low}..{high}, outside 0..{num_classes - 1} (data.num_classes={num_classes})"
        )
    if low == high:
        raise UserError(f"{where}: every image has label {low}; a split needs at least 2 classes")


def class_weights(setting, train_labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """Loss weights per class: None (unweighted), `auto` (inverse frequency in the training split, mean 1),
    or an explicit list."""
    if setting is None:
        return None
    if setting == "auto":
        counts = torch.bincount(train_labels, minlength=num_classes).float()
        if (counts == 0).any():
            missing = (counts == 0).nonzero().flatten().tolist()
            raise UserError(f"class_weights=auto: classes {missing} have no training image")
        return counts.sum() / (num_classes * counts)
    if isinstance(setting, str) or len(setting) != num_classes:
        raise ConfigError(
            "data.class_weights", f"must be null, auto or a list of {num_classes} numbers, got {setting!r}"
        )
    return torch.tensor([float(w) for w in setting])


def check_normalization(normalization: dict | None, channels: int) -> dict | None:
    """null (statistics computed on the training split) or {mean: [...], std: [...]}, one value per channel."""
    if normalization is None:
        return None
    if (
        not isinstance(normalization, dict)
        or set(normalization) != {"mean", "std"}
        or any(
            not isinstance(normalization[k], (list, tuple)) or len(normalization[k]) != channels for k in normalization
        )
    ):
        raise ConfigError("normalization", f"must be null or {{mean: [...], std: [...]}} ({channels} values each)")
    if min(normalization["std"]) <= 0:
        raise ConfigError("normalization", "std values must be > 0")
    return {k: [float(x) for x in normalization[k]] for k in ("mean", "std")}
