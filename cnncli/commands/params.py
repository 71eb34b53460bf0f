"""cnncli params: a model's per-layer parameter and MAC table (cnncli/layer_table.py does the counting).

    cnncli params model=vgg16 [data=digits] [input_size=N] [format=table|markdown|csv|json] [depth=N]
    cnncli params model=lenet5,alexnet,vgg16        one comparison table, paper figures beside them

The model is built on the `meta` device: no weight is allocated, so vgg19 takes what lenet5 takes (a
small one at a small input is counted on the CPU instead: CPU_MAX_PARAMS).
Input: without `data=`, the model's native input and class count, the defaults its builder declares
(`image_size`, `in_channels`, `num_classes`; 3x224x224 and 1000 for a builder that declares none), and
for a model whose config trains another network than its paper's by default (U-Net), the paper's options
(its card's `paper_options`; a `model.KEY=` on the command line still wins): the input line then reads
"native: the paper's network (variant=paper, ...)". For a model config that brings its own data (unet's),
`data.image_size=N`, `data.channels=C` or `data.num_classes=K` without `data=` change that native input,
as its size errors suggest. With `data=NAME` the model is shaped for that data set, as `cnncli train`
builds it; `input_size=N` overrides the side either way.
Several models: `model=a,b,c` is read here, before Hydra (for which a comma list is a -m sweep), and
each model is composed with Hydra's compose API and the same other overrides. With -m Hydra sweeps
instead and prints one full table per model.
"""

import csv
import inspect
import io
import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cnncli import config_dir
from cnncli.errors import ConfigError, UserError, check_choice, reports_user_errors

# torch, the engine and the model zoo are imported when a model is counted, so that --help, --cfg and
# Hydra's own errors (an unknown model) answer at once.

FORMATS = ("table", "markdown", "csv", "json")
DEFAULT_NATIVE = {"channels": 3, "image_size": 224, "num_classes": 1000}
NATIVE_KEYS = tuple(DEFAULT_NATIVE)  # the data keys a native input has (data.KEY=V sets one)

MACS_COUNTED = (
    "conv/linear multiply-accumulates for one image (grouped/depthwise convs, and linear layers applied at "
    "every position, counted as computed) and attention's matmuls (q k^T, weights x v); pooling, activations, "
    "normalization, softmax, layer scale and residual adds are not counted. FLOPs = 2 x MACs."
)


# ------------------------------------------------------------------------------------------------ counting


def native_input(target: str) -> dict:
    """The input a model is made for: its card's (cnncli/models/<family>.py), else the builder's own
    defaults for in_channels, image_size and num_classes (the user's own builder)."""
    from cnncli.models import model_card

    card = model_card(target, trusted=True)
    if card is not None:
        return {"channels": card.channels, "image_size": card.image_size, "num_classes": card.num_classes}
    try:
        builder = hydra.utils.get_method(target)
        parameters = inspect.signature(builder).parameters
    except Exception:  # noqa: BLE001 (an unimportable target: build_model reports it properly)
        return dict(DEFAULT_NATIVE)
    default = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return {
        "channels": default.get("in_channels", DEFAULT_NATIVE["channels"]),
        "image_size": default.get("image_size", DEFAULT_NATIVE["image_size"]),
        "num_classes": default.get("num_classes", DEFAULT_NATIVE["num_classes"]),
    }


def paper_figures(target: str) -> dict:
    """What the paper itself reports (None: it gives no figure), from the model's card. MACs: the papers'
    "FLOPs" and "multiply-adds" are both multiply-accumulates."""
    from cnncli.models import model_card

    card = model_card(target, trusted=True)
    if card is None:
        return {"params": None, "macs": None, "source": ""}
    params, macs = (None if n is None else int(n) for n in (card.paper_params, card.paper_macs))
    return {"params": params, "macs": macs, "source": card.paper_source}


def paper_options(target: str, given: set[str]) -> dict:
    """The card's paper_options but the model options the command line sets (`model.variant=same`)."""
    from cnncli.models import model_card

    card = model_card(target, trusted=True)
    options = card.paper_options if card is not None else {}
    return {k: v for k, v in options.items() if f"model.{k}" not in given}


def validate(cfg: DictConfig) -> None:
    check_choice("format", cfg.format, FORMATS)
    for key in ("input_size", "depth"):
        value = cfg.get(key)
        low = 1 if key == "input_size" else 0
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ConfigError(key, f"must be an integer >= {low} or null, got {value!r}")


def summarize(cfg: DictConfig, name: str, overrides: list[str] = ()) -> dict:
    """Everything `params` prints for one composed config: the model's table, its input and paper figures."""
    validate(cfg)
    return counted(name, shaped_model(cfg, overrides), cfg.depth)


def counted(name: str, shaped: dict, depth: int | None) -> dict:
    """The layer table of a shaped model (shaped_model), with its input and the paper's figures."""
    i = shaped["input"]
    table, device = _count(shaped["options"], (i["channels"], i["height"], i["width"]), depth, name)
    info = {k: v for k, v in shaped.items() if k != "options"}
    return {"model": name, **info, "device": device, "table": table, "paper": paper_figures(shaped["builder"])}


def shaped_model(cfg: DictConfig, overrides: list[str] = ()) -> dict:
    """The model options of a composed `params` (or `bench`) config, its builder, input and class count.
    `overrides`: the command line's. Without `data=` there the model is shaped for its native input (a model
    config may choose a default data set for training: unet's shapes), and a model whose card has
    `paper_options` as its paper draws it (U-Net: the 572 -> 388 network), but for the options given."""
    target = str(cfg.model.get("_target_"))
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    with open_dict(cfg):
        # data.image_size=N (channels, num_classes) without data=: the native input with that value
        given = {k: cfg.data[k] for k in NATIVE_KEYS if f"data.{k}" in keys and cfg.get("data") is not None}
        if "data" not in keys:
            cfg.data = None
        source = f"data={cfg.data.get('name', '?')}" if cfg.get("data") is not None else "native"
        if cfg.get("data") is None:
            cfg.data = {"name": "native", **native_input(target), **given}
            source += "".join(f", data.{k}={v}" for k, v in given.items())
            paper = paper_options(target, keys)
            if paper:
                cfg.model.update(paper)
                source += ": the paper's network (" + ", ".join(f"{k}={v}" for k, v in paper.items()) + ")"
        if cfg.data.get("num_classes", 0) is None:  # an image folder's: its class folders, counted by train
            raise ConfigError("data.num_classes", "params does not read the image folder: give data.num_classes=N")
        if cfg.input_size is not None:
            cfg.data.image_size = cfg.input_size
            source += f", input_size={cfg.input_size}"
    try:
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError("model", str(e).splitlines()[0]) from None
    channels = model_cfg.get("in_channels", cfg.data.channels)
    size = model_cfg.get("image_size", cfg.data.image_size)
    return {
        "builder": target,
        "input": {"channels": channels, "height": size, "width": size, "from": source},
        "num_classes": model_cfg.get("num_classes", cfg.data.get("num_classes")),
        "options": model_cfg,
    }


# A small network at a small input is built again and counted on the CPU: torch's meta kernels import its
# compiler stack (sympy, dynamo), about 1 s that lenet5 would pay for nothing. Anything bigger is counted
# on `meta`, where no weight is allocated.
CPU_MAX_PARAMS = 8_000_000  # 32 MiB of float32 weights
CPU_MAX_PIXELS = 64 * 64


def _count(model_cfg: dict, shape: tuple, depth: int | None, name: str):
    """Build on `meta` and count (on the CPU when small, above); a model whose code needs real data
    (`.item()` ...) is retried on the CPU."""
    import torch

    from cnncli.layer_table import layer_table
    from cnncli.models import build_model

    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = build_model(model_cfg)
        except (RuntimeError, NotImplementedError) as e:
            if device == "meta" and _needs_data(e):
                continue
            raise
        small = sum(p.numel() for p in model.parameters()) <= CPU_MAX_PARAMS and shape[1] * shape[2] <= CPU_MAX_PIXELS
        if device == "meta" and small:
            device, model = "cpu", build_model(model_cfg)
        try:
            return layer_table(model, shape, depth), device
        except (RuntimeError, ValueError, NotImplementedError) as e:
            if device == "meta" and _needs_data(e):
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                "input_size", f"{name} cannot take a {shape[1]}x{shape[2]}x{shape[0]} input ({first})"
            ) from None
    raise AssertionError("unreachable")


def _needs_data(error: Exception) -> bool:
    return isinstance(error, NotImplementedError) or "meta" in str(error).lower()


# ------------------------------------------------------------------------------------------------ printing


def si(n: float | None, unit: str = "", exact: bool = True) -> str:
    """4,089,184,256 -> "4.089 G"; a paper's rounded figure (exact=False) as the paper gives it: "138 M"."""
    if n is None:
        return ""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {prefix}{unit}" if exact else f"{n / scale:g} {prefix}{unit}"
    return f"{n:g} {unit}".strip()


def _bytes(n: int) -> str:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _hwc(info: dict) -> str:
    i = info["input"]
    return f"{i['height']}x{i['width']}x{i['channels']}"


def _row_cells(row) -> list[str]:
    kind = row.type + (f" x{row.calls}" if row.calls > 1 else "") + (" (not called)" if not row.calls else "")
    kind += f" (the module of {row.shared_with})" if row.shared_with else ""
    formula = "" if row.params == 0 and not row.folded else row.formula
    if row.buffers and row.buffer_formula:
        formula += f" (+{row.buffer_formula} buffers)"
    output = f"{row.output}  {row.size_note}" if row.size_note else row.output
    macs = f"{row.macs:,}" + (f" = {row.macs_formula}" if row.macs_formula else "")
    return [row.name, kind, output, formula, f"{row.params:,}", macs, f"{row.percent:.2f}%"]


ROW_HEADER = ["layer", "type", "output (HxWxC)", "formula", "params", "MACs", "% params"]


def _totals(info: dict) -> list[tuple[str, str]]:
    t = info["table"].totals
    lines = [
        ("parameters", f"{t.params:,} ({si(t.params)}): trainable {t.trainable_params:,}, "
                       f"non-trainable {t.non_trainable_params:,}"),
        ("buffers", f"{t.buffers:,} (not trained: BatchNorm running mean/var and batch counters)"),
        ("MACs", f"{t.macs:,} ({si(t.macs, 'MAC')}) per image; FLOPs = 2 x MACs = {t.flops:,} "
                 f"({si(t.flops, 'FLOP')})"),
        ("MACs counted", MACS_COUNTED),
    ]  # fmt: skip
    if t.macs_outside_layers:
        lines.append(("MACs in no row", f"{t.macs_outside_layers:,} (matmuls/convs in a block's own forward "
                                         "code, outside any layer; included in the total)"))  # fmt: skip
    lines += [
        ("depth", f"{t.depth} weight layers on the longest path ({t.weight_layers} conv/linear layers in all)"),
        ("parameter memory", f"{_bytes(t.param_bytes)} (float32, 4 bytes a parameter); buffers "
                             f"{_bytes(t.buffer_bytes)}"),
        ("activation memory", f"{_bytes(t.activation_bytes)} for one image: the outputs of all {t.leaf_calls} "
                              "leaf-module calls x 4 bytes (float32), in-place ones included"),
    ]  # fmt: skip
    lines += [("attention", note) for note in info["table"].notes]
    paper = info["paper"]
    if paper["params"] or paper["macs"]:
        figures = [f"{si(paper['params'], exact=False)} params" if paper["params"] else "",
                   f"{si(paper['macs'], exact=False)} MACs" if paper["macs"] else ""]  # fmt: skip
        lines.append(("paper", f"{', '.join(f for f in figures if f)} ({paper['source']})"))
    return lines


def _title(info: dict) -> str:
    return (f"{info['model']} ({info['builder']}): input {_hwc(info)} ({info['input']['from']}), "
            f"{info['num_classes']} classes")  # fmt: skip


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    right = {"params", "MACs", "% params", "paper params", "paper MACs", "depth"}
    rule = ["---:" if h in right else "---" for h in header]
    return "\n".join([line(header), line(rule), *map(line, rows)])


def csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().rstrip("\n")


def rich_console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: never squeeze numbers into wrapped columns
        console.width = 240
    return console


def print_one(info: dict, fmt: str) -> None:
    table = info["table"]
    if fmt == "json":
        data = {k: v for k, v in info.items() if k != "table"} | table.to_dict()
        data["totals"]["macs_counted"] = MACS_COUNTED
        print(json.dumps(data, indent=2))
        return
    cells = [_row_cells(row) for row in table.rows]
    t = table.totals
    if fmt == "csv":
        header = ["layer", "type", "output", "output_shape", "formula", "params", "trainable", "buffers",
                  "macs", "percent", "calls", "macs_formula"]  # fmt: skip
        rows = [[r.name, r.type, r.output, "x".join(map(str, r.output_shape or [])), r.formula, r.params,
                 r.trainable, r.buffers, r.macs, round(r.percent, 4), r.calls, r.macs_formula]
                for r in table.rows]  # fmt: skip
        rows.append(["total", "", "", "", "", t.params, t.trainable_params, t.buffers, t.macs, 100.0, "", ""])
        print(csv_text(header, rows))
    elif fmt == "markdown":
        print(f"**{_title(info)}**\n")
        print(markdown_table(ROW_HEADER, cells))
        print()
        print("\n".join(f"- **{label}**: {text}" for label, text in _totals(info)))
    else:
        from rich.table import Table

        rich_table = Table(title=_title(info), title_justify="left")
        for h in ROW_HEADER:
            rich_table.add_column(h, justify="right" if h in ("params", "MACs", "% params") else "left")
        for row in cells:
            rich_table.add_row(*row)
        rich_table.add_section()
        rich_table.add_row("total", "", "", "", f"{t.params:,}", f"{t.macs:,}", "100.00%")
        console = rich_console()
        console.print(rich_table)
        width = max(len(label) for label, _ in _totals(info))
        sys.stdout.flush()
        for label, text in _totals(info):
            print(f"{label + ':':<{width + 2}}{text}")


COMPARE_HEADER = ["model", "input (HxWxC)", "classes", "params", "paper params", "MACs", "paper MACs",
                  "depth", "paper source"]  # fmt: skip


def print_comparison(infos: list[dict], fmt: str) -> None:
    if fmt == "json":
        models = []
        for info in infos:
            data = {k: v for k, v in info.items() if k != "table"}
            data["totals"] = info["table"].to_dict()["totals"]
            models.append(data)
        print(json.dumps({"models": models, "macs_counted": MACS_COUNTED}, indent=2))
        return
    rows = []
    for info in infos:
        t, paper = info["table"].totals, info["paper"]
        rows.append([info["model"], _hwc(info), str(info["num_classes"]), f"{t.params:,}",
                     si(paper["params"], exact=False), si(t.macs), si(paper["macs"], exact=False), str(t.depth),
                     paper["source"]])  # fmt: skip
    note = "depth: weight (conv/linear) layers on the longest path. MACs: " + MACS_COUNTED
    if fmt == "csv":
        raw = [[i["model"], _hwc(i), i["num_classes"], i["table"].totals.params, i["paper"]["params"] or "",
                i["table"].totals.macs, i["paper"]["macs"] or "", i["table"].totals.depth, i["paper"]["source"]]
               for i in infos]  # fmt: skip
        print(csv_text(COMPARE_HEADER, raw))
    else:
        print_rows(COMPARE_HEADER, rows, fmt, note, "model comparison", left=("model", "input (HxWxC)", "paper source"))


def print_rows(header: list[str], rows: list[list[str]], fmt: str, note: str, title: str, left: tuple) -> None:
    """A table of several models (params' comparison, bench's speed) as markdown or a rich table, `note` below
    it; the columns named in `left` left-aligned (text), the others right-aligned (figures)."""
    if fmt == "markdown":
        print(markdown_table(header, rows))
        print(f"\n{note}")
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in header:
        table.add_column(h, justify="left" if h in left else "right")
    for row in rows:
        table.add_row(*row)
    rich_console().print(table)
    print(note)


# ------------------------------------------------------------------------------------------------ commands


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="params")
@reports_user_errors
def _single(cfg: DictConfig) -> None:
    name = HydraConfig.get().runtime.choices.get("model") or "model"
    print_one(summarize(cfg, name, list(HydraConfig.get().overrides.task)), cfg.format)


@reports_user_errors
def compare(names: list[str], overrides: list[str]) -> None:
    configs = compose_each("params", names, overrides)
    print_comparison([summarize(cfg, name, overrides) for name, cfg in configs], configs[-1][1].format)


def compose_each(config_name: str, names: list[str], overrides: list[str]) -> list[tuple[str, DictConfig]]:
    """`model=a,b,c` without -m: each model's config, composed as `model=a OVERRIDES` would be."""
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name=config_name):
            return [(name, hydra.compose(config_name, overrides=[f"model={name}", *overrides])) for name in names]
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(str(e)) from None


def model_list(args: list[str]) -> tuple[list[str], list[str]] | None:
    """`model=a,b,c` (without -m or any other flag): the model names and the other overrides."""
    if any(arg.startswith("-") for arg in args):
        return None  # -m sweeps, --help, --cfg ...: Hydra's business
    for i, arg in enumerate(args):
        key, equals, value = arg.partition("=")
        if equals and key == "model" and "," in value:
            names = [n.strip() for n in value.split(",") if n.strip()]
            return names, args[:i] + args[i + 1 :]
    return None


def main() -> None:
    several = model_list(sys.argv[1:])
    if several is None:
        _single()
    else:
        compare(*several)
