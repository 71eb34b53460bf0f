"""The zoo table of docs/models.md, made from the model cards (a test keeps the two equal):

    python -m cnncli.models.zoo

One row per model at its builder's defaults (the default variant), at its native input. Parameters are
counted on the `meta` device: nothing is allocated.
"""

import importlib

import torch

from cnncli.models import families


def _si(n: float | None) -> str:
    if n is None:
        return ""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:g} {prefix}"
    return f"{n:g}"


def rows() -> list[list[str]]:
    table = []
    for family in families():
        module = importlib.import_module(f"cnncli.models.{family}")
        for name, card in getattr(module, "MODELS", {}).items():
            with torch.device("meta"):
                model = getattr(module, name)()
            params = sum(p.numel() for p in model.parameters())
            figures = (_si(card.paper_params), _si(card.paper_macs) + "MACs" * bool(card.paper_macs))
            paper = " / ".join(figure for figure in figures if figure)
            table.append([
                f"`{name}`", f"`cnncli/models/{family}.py`", f"{card.image_size}x{card.image_size}x{card.channels}",
                str(card.num_classes), f"{params:,}", str(card.fact("min_size", {})),
                f"{paper} ({card.paper_source})" if paper else "", card.fact("imagenet_weights", {}) or "",
            ])  # fmt: skip
    return sorted(table, key=lambda row: row[1])


HEADER = ["model", "file", "native input", "classes", "parameters", "smallest input", "paper", "ImageNet weights"]


def markdown() -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows())])


if __name__ == "__main__":
    print(markdown())
