"""cnncli bench: the speed table of the course's annex slide (ConvNeXt against Swin), measured on your machine.

    cnncli bench model=convnext_tiny,swin_t,vit_b_16 [device=cuda] [batch_size=64] [precision=tf32]
                 [channels_last=true] [train=true] [format=table|markdown|csv|json]

For each model: its parameters and MACs (counted as `cnncli params` counts them, on the meta device), then
its inference throughput on `device`: `batch_size` random images at the model's native input (data=NAME or
input_size=N: another), `warmup` untimed batches, then `runs` timed batches, each ended by a device
synchronize; images/s = batch_size / the median batch time. `train=true` also times a training step
(forward, cross-entropy, backward, SGD step; no gradient scaler: its cost is a few elementwise ops). The
paper's images/s and ImageNet top-1 stand in their own columns where the model card has them (ModelCard.
paper_speed), with the paper's hardware named: a different machine from yours.
"""

import json
import statistics
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnncli import config_dir
from cnncli.commands import params
from cnncli.commands.params import (
    compose_each,
    counted,
    csv_text,
    model_list,
    print_rows,
    shaped_model,
    si,
)
from cnncli.config import check_number
from cnncli.device import resolve_device
from cnncli.errors import ConfigError, UserError, check_choice, reports_user_errors

PRECISIONS = ("32", "tf32", "16-mixed", "bf16-mixed")


def validate(cfg: DictConfig) -> None:
    params.validate(cfg)  # format, input_size
    check_choice("precision", str(cfg.precision), PRECISIONS)
    check_number(cfg, "batch_size", 1, integer=True)
    check_number(cfg, "warmup", 0, integer=True)
    check_number(cfg, "runs", 1, integer=True)
    check_number(cfg, "threads", 1, integer=True)
    for key in ("channels_last", "train"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(key, f"must be true or false, got {cfg[key]!r}")


def measure(options: dict, shape: tuple[int, int, int], cfg: DictConfig, device) -> dict:
    """Inference (and training) images/s of the network `options` builds, on random images of `shape`."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from cnncli.models import build_model

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    precision = str(cfg.precision)
    tf32 = precision == "tf32"  # float32 matmuls and convolutions in TF32 (no effect before Ampere, nor on CPU)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(options, starting_weights=False).to(device=device, memory_format=layout)
    images = torch.randn(cfg.batch_size, *shape, device=device).contiguous(memory_format=layout)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def timed(step) -> list[float]:
        for _ in range(cfg.warmup):
            step()
        sync()
        seconds = []
        for _ in range(cfg.runs):
            start = time.perf_counter()
            step()
            sync()
            seconds.append(time.perf_counter() - start)
        return seconds

    def infer():
        with torch.inference_mode(), autocast():
            model(images)

    model.eval()
    results = {"inference": _speed(timed(infer), cfg.batch_size)}
    if cfg.train:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        with torch.no_grad(), autocast():  # targets shaped as the outputs: classes, or a class per pixel
            out = model(images)
        out = out[0] if isinstance(out, tuple) else out
        targets = torch.randint(out.shape[1], (out.shape[0], *out.shape[2:]), device=device)

        def train_step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = model(images)
                out = out[0] if isinstance(out, tuple) else out  # GoogLeNet's aux heads: the main output
                loss = F.cross_entropy(out.float(), targets)
            loss.backward()
            optimizer.step()

        results["train"] = _speed(timed(train_step), cfg.batch_size)
    return results


def _speed(seconds: list[float], batch_size: int) -> dict:
    median = statistics.median(seconds)
    return {"images_per_second": batch_size / median, "median_batch_seconds": median, "batch_seconds": seconds}


def bench_one(cfg: DictConfig, name: str, overrides: list[str], device) -> dict:
    from cnncli.models import model_card

    shaped = shaped_model(cfg, overrides)
    info = counted(name, shaped, depth=None)  # parameters and MACs, on the meta device
    i = info["input"]
    card = model_card(info["builder"], trusted=True)
    speed = card.paper_speed if card is not None else None
    return {
        "model": name,
        "input": i,
        "num_classes": info["num_classes"],
        "params": info["table"].totals.params,
        "macs": info["table"].totals.macs,
        "device": str(device),
        "device_name": _device_name(device),
        "batch_size": cfg.batch_size,
        "precision": str(cfg.precision),
        "channels_last": cfg.channels_last,
        **measure(shaped["options"], (i["channels"], i["height"], i["width"]), cfg, device),
        "paper": None
        if speed is None
        else {
            "images_per_second": speed.images_per_second,
            "top1": speed.top1,
            "hardware": speed.hardware,
            "source": speed.source,
        },  # fmt: skip
    }


def _device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{_cpu_name() or platform.machine()}, {torch.get_num_threads()} threads"
    return device.type


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:  # Linux: "model name : AMD EPYC ..."
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return ""


def run(configs: list[tuple[str, DictConfig]], overrides: list[str]) -> None:
    cfg = configs[-1][1]
    for _, each in configs:
        validate(each)
    device = resolve_device(str(cfg.device))
    results = []
    for name, each in configs:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results.append(bench_one(each, name, overrides, device))
    print_table(results, cfg.format, cfg.train)


HEADER = ["model", "input (HxWxC)", "params", "MACs", "batch", "device", "precision", "infer img/s",
          "train img/s", "paper img/s", "paper top-1", "paper hardware"]  # fmt: skip


def print_table(results: list[dict], fmt: str, train: bool) -> None:
    if fmt == "json":
        print(json.dumps({"models": results}, indent=2))
        return
    header = [h for h in HEADER if train or h != "train img/s"]
    rows = []
    for r in results:
        i, paper = r["input"], r["paper"] or {}
        row = {
            "model": r["model"], "input (HxWxC)": f"{i['height']}x{i['width']}x{i['channels']}",
            "params": f"{r['params']:,}", "MACs": si(r["macs"]), "batch": str(r["batch_size"]),
            "device": r["device_name"],
            "precision": r["precision"] + (", channels last" if r["channels_last"] else ""),
            "infer img/s": f"{r['inference']['images_per_second']:,.1f}",
            "train img/s": f"{r['train']['images_per_second']:,.1f}" if "train" in r else "",
            "paper img/s": f"{paper['images_per_second']:,.1f}" if paper else "",
            "paper top-1": f"{paper['top1']}%" if paper else "", "paper hardware": paper.get("hardware", ""),
        }  # fmt: skip
        rows.append([row[h] for h in header])
    sources = sorted({r["paper"]["source"] for r in results if r["paper"]})
    note = "img/s: images per second, the median of the timed batches." + (
        f" paper: {'; '.join(sources)}, measured on the paper's hardware, not this machine." if sources else ""
    )
    if fmt == "csv":
        raw = [[r["model"], r["input"]["height"], r["params"], r["macs"], r["batch_size"], r["device_name"],
                r["precision"], r["channels_last"], round(r["inference"]["images_per_second"], 2),
                round(r["train"]["images_per_second"], 2) if "train" in r else "",
                (r["paper"] or {}).get("images_per_second", ""), (r["paper"] or {}).get("top1", ""),
                (r["paper"] or {}).get("hardware", "")] for r in results]  # fmt: skip
        print(csv_text(["model", "input_size", "params", "macs", "batch_size", "device", "precision",
                        "channels_last", "inference_images_per_second", "train_images_per_second",
                        "paper_images_per_second", "paper_top1", "paper_hardware"], raw))  # fmt: skip
    else:
        print_rows(header, rows, fmt, note, "speed", left=("model", "device", "precision", "paper hardware"))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="bench")
@reports_user_errors
def _single(cfg: DictConfig) -> None:
    name = HydraConfig.get().runtime.choices.get("model") or "model"
    run([(name, cfg)], list(HydraConfig.get().overrides.task))


@reports_user_errors
def _several(names: list[str], overrides: list[str]) -> None:
    if not names:
        raise UserError("model=: name at least one model")
    run(compose_each("bench", names, overrides), overrides)


def main() -> None:
    several = model_list(sys.argv[1:])
    if several is None:
        _single()
    else:
        _several(*several)
