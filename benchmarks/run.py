"""Every benchmark of the project, one after another, into benchmarks/RESULTS.md.

    python benchmarks/run.py [--quick] [--only NAME ...] [--out benchmarks/RESULTS.md]

Each benchmark is its own script (run here in a fresh process, with the arguments listed below) that measures
its baseline in the same run: a figure is always a ratio against that baseline, so results from different
machines compare by their ratios. RESULTS.md gets the machine, the goals the issues set with the measured
figure and whether it is met, then each benchmark's table and the command that reproduces it.
`--quick` runs every benchmark with fewer repeats (a smoke run of this script; its figures are noisier).
`--only NAME ...` re-runs those and keeps the other benchmarks' sections and goal rows from the file.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent
# name: (script and arguments, arguments for --quick, what it measures)
BENCHMARKS = {
    "throughput": (
        ["data_throughput.py", "--repeats", "3"],
        ["--repeats", "1", "--epochs", "1"],
        "`cnncli train` vs a plain PyTorch loop, LeNet-5 on 60,000 MNIST-shaped images (issue 4)",
    ),
    "time-to-accuracy": (
        ["time_to_accuracy.py", "--repeats", "3"],
        ["--repeats", "1"],
        "`cnncli train` vs a plain script, LeNet-5 on digits to >= 97% test top-1 (issue 9)",
    ),
    "startup": (
        ["startup.py", "--repeats", "5"],
        ["--repeats", "1"],
        "start-up time against the floors (import torch, import lightning) and the heavy packages each command "
        "imports (issues 9, 15)",
    ),
    "threads": (
        ["threads.py", "--repeats", "4"],
        ["--repeats", "1"],
        "trainer.threads=auto vs torch's default threads and 1 thread, idle and with one core busy (issue 15)",
    ),
    "params": (
        ["params_meta.py", "--repeats", "3"],
        ["--repeats", "1"],
        "`cnncli params` time and memory for big models vs LeNet-5 (issue 3)",
    ),
    "inference": (
        ["inference_latency.py"],
        ["--runs", "5", "--warmup", "2"],
        "exported models: onnxruntime and TorchScript vs PyTorch eager (issue 5)",
    ),
    "segmentation": (
        ["segmentation_throughput.py", "--repeats", "2"],
        ["--repeats", "1", "--epochs", "1", "--train-size", "400"],
        "`cnncli train model=unet` vs a plain PyTorch loop, U-Net segmenting 2,000 shapes (issue 17)",
    ),
    "ddp": (
        ["ddp_scaling.py", "--repeats", "2"],
        ["--repeats", "1"],
        "`cnncli train trainer=ddp_cpu` (2 processes) vs 1 process (issue 8)",
    ),
    "image-cache": (
        ["image_cache.py"],
        ["--images", "400"],
        "`cnncli train` epochs with data.cache none, ram and disk vs a plain torchvision ImageFolder loop, 2,000 "
        "generated 1200x1000 grayscale JPEGs (issue [6/6] training aids)",
    ),
}
# (benchmark, headline key, goal text, test of the value)
GOALS = [
    ("throughput", "ratio_median cnncli train (enable_progress_bar=false)", ">= 0.9", lambda v: v >= 0.9),
    ("throughput", "ratio_median cnncli train (defaults: rich progress bar)", ">= 0.9", lambda v: v >= 0.9),
    ("time-to-accuracy", "time_to_accuracy_ratio", "<= 1.15", lambda v: v <= 1.15),
    ("time-to-accuracy", "both_reached_accuracy", "true", lambda v: v is True),
    ("startup", "all_goals_met", "true (each command's row below)", lambda v: v is True),
    ("startup", "train_help_s", "<= 1.0 s, no torch", lambda v: v <= 1.0),
    ("startup", "params_over_torch_s", "<= 0.7 s over import torch", lambda v: v <= 0.7),
    ("startup", "train_one_batch_over_lightning_s", "<= 0.5 s over import lightning", lambda v: v <= 0.5),
    ("startup", "predict_onnx_s", "<= 1.0 s, no torch", lambda v: v <= 1.0),
    ("threads", "worst_auto_over_best_fixed", "<= 1.05", lambda v: v <= 1.05),
    ("threads", "quick_start_busy_over_idle", "<= 1.3", lambda v: v <= 1.3),
    ("segmentation", "ratio_median cnncli train unet", ">= 0.9", lambda v: v >= 0.9),
    ("params", "largest_rss_increase_mib", "< 50 MiB over lenet5", lambda v: v < 50),
    ("image-cache", "cached_over_uncached", ">= 5x", lambda v: v >= 5),
    ("image-cache", "cached_over_plain_imagefolder", ">= 3x", lambda v: v >= 3),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        memory = "RAM unknown"
    packages = ", ".join(f"{name} {_version(name)}" for name in ("torch", "lightning", "torchvision", "onnxruntime"))
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {packages}"
    )


def _version(name: str) -> str:
    try:
        return version(name)
    except Exception:  # noqa: BLE001 (importlib.metadata raises several kinds for a missing or odd package)
        return "not installed"


NOTES = "## Notes on the figures"  # RESULTS.md from this heading on is written by hand and kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run, noisier figures")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help="run only these")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    chosen = args.only or list(BENCHMARKS)
    started = datetime.datetime.now(datetime.timezone.utc)
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    results, sections = {}, []
    with tempfile.TemporaryDirectory() as folder:
        for name in chosen:
            script, quick, what = BENCHMARKS[name]
            command = [sys.executable, str(HERE / script[0]), *(quick if args.quick else script[1:])]
            out = Path(folder) / f"{script[0]}.json"
            print(f"== {name}: {' '.join(command[1:])}", flush=True)
            began = time.perf_counter()
            run = subprocess.run(
                [*command, "--json", str(out)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            took = time.perf_counter() - began
            shown = "python benchmarks/" + " ".join([script[0], *(quick if args.quick else script[1:])])
            if run.returncode != 0 or not out.exists():
                print(run.stderr[-2000:], file=sys.stderr)
                sections.append(
                    f"## {name}\n\n{what}. `{shown}` **failed** (exit {run.returncode}):\n\n"
                    f"```\n{run.stderr.strip()[-1500:]}\n```\n"
                )
                continue
            results[name] = json.loads(out.read_text())
            print(results[name]["markdown"], flush=True)
            sections.append(f"## {name}\n\n{what}. `{shown}` ({took:.0f} s)\n\n{results[name]['markdown']}\n")

    goal_rows = []
    for name, key, goal, met in GOALS:
        if name not in results:
            continue
        value = results[name]["headline"].get(key)
        verdict = "not measured" if value is None else ("met" if met(value) else "**not met**")
        goal_rows.append(f"| {name} | {key} | {value} | {goal} | {verdict} |")
    old = args.out.read_text() if args.out.is_file() else ""
    if args.only:  # the benchmarks not re-run keep their goal rows and sections, in BENCHMARKS order
        parts = _old_parts(old)
        kept = {name: part for name, part in parts.items() if name in BENCHMARKS and name not in chosen}
        ordered = {**dict.fromkeys(BENCHMARKS), **kept, **dict(zip(chosen, sections))}
        sections = [section for section in ordered.values() if section]
        old_rows = [line for line in parts.get("Goals", "").splitlines() if line.startswith("| ")]
        goal_rows += [row for row in old_rows if row.split("|")[1].strip() in set(BENCHMARKS) - set(chosen)]
        goal_rows.sort(key=lambda row: list(BENCHMARKS).index(row.split("|")[1].strip()))
    text = "\n".join(
        [
            "# cnncli benchmarks",
            "",
            f"Generated by `python benchmarks/run.py{' --quick' if args.quick else ''}"
            f"{' --only ' + ' '.join(args.only) if args.only else ''}` on {started:%Y-%m-%d %H:%M} UTC (load average "
            f"at start: {load}){'; the other sections are kept from earlier runs' if args.only else ''}.",
            "",
            f"Machine: {machine()}.",
            "",
            "## Goals",
            "",
            "| benchmark | figure | measured | goal | |",
            "|---|---|---:|---|---|",
            *goal_rows,
            "",
            *sections,
        ]
    )
    # the hand-written notes at the end of the file outlive a re-run
    notes = old[old.index(NOTES) :] if NOTES in old else ""
    args.out.write_text(text + ("\n" + notes if notes else ""))
    print(f"wrote {args.out}")


def _old_parts(text: str) -> dict[str, str]:
    """The `## name` parts of an earlier RESULTS.md, by name (the hand-written notes left out)."""
    body = text[: text.index(NOTES)] if NOTES in text else text
    return {part.split("\n", 1)[0]: f"## {part.rstrip()}\n" for part in body.split("\n## ")[1:]}


if __name__ == "__main__":
    main()
