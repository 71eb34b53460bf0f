"""CPU inference speed of what `cnncli export` writes: PyTorch eager vs TorchScript vs onnxruntime.

    python benchmarks/inference_latency.py [--threads 2] [--runs 20] [--warmup 5] [--batch 64]

For LeNet-5 (32x32x1, 10 classes) and ResNet-18 (224x224x3, 1000 classes; and 32x32x3, 10 classes),
untrained weights in eval mode: the TorchScript (.ts) and ONNX (.onnx) files are written by the export
command's own code (cnncli.export.export_model, dynamic batch) and loaded back as a consumer loads
them (torch.jit.load; onnxruntime.InferenceSession on the CPU provider). Every backend gets the same input
tensors, the same number of threads (torch.set_num_threads and onnxruntime's intra_op_num_threads, one
inter-op thread), `warmup` untimed calls, then `runs` timed calls; the median is reported: batch-1 latency
in ms and batch-`batch` throughput in images/s, each with its ratio to eager (> 1: faster than eager).
The logits of each backend are checked against eager first (max |difference| in the last column).
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from report import emit

from cnncli.export import export_model, without_aux_heads
from cnncli.models.lenet import lenet5
from cnncli.models.resnet import resnet18

CASES = [  # (name, builder, channels, size, classes)
    ("LeNet-5", lenet5, 1, 32, 10),
    ("ResNet-18", resnet18, 3, 224, 1000),
    ("ResNet-18", resnet18, 3, 32, 10),
]


def median_seconds(fn, x, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def backends(model, channels: int, size: int, folder: Path, threads: int) -> dict:
    """name -> a function from a float32 NCHW tensor to logits (a tensor)."""
    import onnxruntime as ort

    example = torch.randn(2, channels, size, size)
    for fmt in ("torchscript", "onnx"):
        export_model(model, fmt, folder / f"model.{fmt}", example, {"benchmark": True})
    scripted = torch.jit.load(str(folder / "model.torchscript"))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def eager(x):
        with torch.inference_mode():
            return model(x)

    def torchscript(x):
        with torch.inference_mode():
            return scripted(x)

    def onnxruntime(x):
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return {"eager": eager, "torchscript": torchscript, "onnxruntime": onnxruntime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every backend")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput measurement")
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    rows = []
    for label, builder, channels, size, classes in CASES:
        torch.manual_seed(0)
        model = without_aux_heads(builder(in_channels=channels, num_classes=classes, image_size=size))
        one = torch.randn(1, channels, size, size)
        many = torch.randn(args.batch, channels, size, size)
        with tempfile.TemporaryDirectory() as folder:
            fns = backends(model, channels, size, Path(folder), args.threads)
            reference = fns["eager"](many)
            base = {}
            for backend, fn in fns.items():
                diff = (fn(many) - reference).abs().max().item()
                # fewer timed calls for the big batch at 224x224: each one takes seconds on two cores
                runs = max(3, args.runs // 4) if size >= 224 else args.runs
                latency = median_seconds(fn, one, args.warmup, args.runs)
                throughput = args.batch / median_seconds(fn, many, min(args.warmup, 2), runs)
                base.setdefault("latency", latency)
                base.setdefault("throughput", throughput)
                rows.append(
                    (
                        f"{label} {size}x{size}x{channels}",
                        backend,
                        latency * 1e3,
                        base["latency"] / latency,
                        throughput,
                        throughput / base["throughput"],
                        diff,
                    )
                )
                print(f"  {rows[-1][0]:<22} {backend:<12} {latency * 1e3:8.2f} ms  {throughput:9.1f} img/s", flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, load average {load:.2f}; "
        f"median of {args.runs} runs after {args.warmup} warm-up",
        "",
        "| model | backend | batch 1 latency (ms) | vs eager "
        f"| batch {args.batch} (images/s) | vs eager | max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, backend, latency, ratio, throughput, tratio, diff in rows:
        lines.append(
            f"| {model} | {backend} | {latency:.2f} | {ratio:.2f}x | {throughput:.0f} | {tratio:.2f}x | {diff:.1e} |"
        )
    headline = {
        f"onnxruntime_vs_eager_batch1 {model}": round(ratio, 2)
        for model, backend, _, ratio, *_ in rows
        if backend == "onnxruntime"
    }
    emit("\n".join(lines), headline, args.json)


if __name__ == "__main__":
    main()
