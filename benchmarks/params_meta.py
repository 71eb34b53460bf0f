"""How much `cnncli params` costs per model: built on the meta device, VGG-19 should take what LeNet-5 takes.

    python benchmarks/params_meta.py [--repeats 3] [model ...]

Runs `cnncli params model=M format=json` for each model, `repeats` times, one run at a time; reports the
median wall time and the peak RSS of each run, and their ratios to lenet5 (the first model), as a markdown
table. The peak RSS is each child's own, from os.wait4: resource.getrusage(RUSAGE_CHILDREN) reports the
largest peak of all children waited for so far, which would hide a smaller run behind a larger one.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit

MODELS = ["lenet5", "vgg19", "resnet152", "convnext_small"]


def run_once(model: str, cwd: str) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS in KiB, the command's JSON) for one `cnncli params` run."""
    command = [shutil.which("cnncli") or "cnncli", "params", f"model={model}", "format=json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{err.read().decode()[-2000:]}")
        # ru_maxrss is in KiB on Linux (bytes on macOS)
        rss_kib = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
        return wall, rss_kib, json.loads(out.read())


def _si(n: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3f} {prefix}"
    return str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as cwd:
        for model in args.models:
            runs = [run_once(model, cwd) for _ in range(args.repeats)]
            data = runs[-1][2]
            results.append({
                "model": model,
                "params": data["totals"]["params"],
                "macs": data["totals"]["macs"],
                "weights_mib": data["totals"]["param_bytes"] / 2**20,
                "device": data["device"],
                "wall": statistics.median(r[0] for r in runs),
                "rss_mib": max(r[1] for r in runs) / 1024,
            })  # fmt: skip
    base = results[0]
    lines = [
        f"`cnncli params model=M format=json`, median wall time and largest peak RSS of {args.repeats} runs "
        f"each (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)",
        "",
        "| model | params | MACs | built on | float32 weights | wall time | x lenet5 | peak RSS | x lenet5 |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['model']} | {r['params']:,} | {_si(r['macs'])} | {r['device']} | "
                     f"{r['weights_mib']:,.1f} MiB | {r['wall']:.2f} s | {r['wall'] / base['wall']:.2f} | "
                     f"{r['rss_mib']:,.1f} MiB | {r['rss_mib'] / base['rss_mib']:.2f} |")  # fmt: skip
    headline = {
        "largest_wall_ratio_to_lenet5": round(max(r["wall"] for r in results) / base["wall"], 2),
        "largest_rss_increase_mib": round(max(r["rss_mib"] for r in results) - base["rss_mib"], 1),
    }
    emit("\n".join(lines), headline, args.json)


if __name__ == "__main__":
    main()
