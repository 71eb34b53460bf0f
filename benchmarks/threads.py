"""trainer.threads=auto against torch's default threads and against one thread, idle and with a core busy.

    python benchmarks/threads.py [--repeats 2] [--json PATH]

Two jobs, each a whole `cnncli train` process (wall time, start-up included): the quick start
(`trainer.max_epochs=5 callbacks.early_stopping=null`, LeNet-5 on digits) and LeNet-5 on 60,000 MNIST-shaped
images for one epoch (data=fake, batch 128: the throughput benchmark's data). Each runs with
`trainer.threads=auto` (the default: the first steps are timed on 1, 2, ... threads and the fastest kept),
with torch's default count (`trainer.threads=N`, N = torch.get_num_threads() of a fresh process: one per
core) and with 1 thread, on an idle machine and with one core kept busy by a spinning process. The settings
take turns within each repeat; the median of `repeats` is reported.

Goals (issue 15): auto within 5% of the better fixed setting in each case, and the quick start with one core
busy at most 1.3x its idle time.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from report import emit

JOBS = {
    "quick start (digits, 5 epochs)": ["trainer.max_epochs=5", "callbacks.early_stopping=null"],
    "LeNet-5, 60,000 28x28 images, 1 epoch": [
        "data=fake",
        "data.train_size=60000",
        "data.channels=1",
        "data.image_size=28",
        "data.batch_size=128",
        "trainer.max_epochs=1",
        "callbacks.early_stopping=null",
        "test=false",
    ],  # fmt: skip
}


def spin() -> None:
    while True:
        pass


def run(job: list[str], threads: str, folder: Path) -> tuple[float, int]:
    """(wall seconds, threads the run used) of one `cnncli train` process."""
    run_dir = folder / f"run{time.monotonic_ns()}"
    started = time.perf_counter()
    subprocess.run(
        ["cnncli", "train", *job, f"trainer.threads={threads}", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={run_dir}"],
        check=True, capture_output=True, cwd=folder, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    wall = time.perf_counter() - started
    return wall, json.loads((run_dir / "summary.json").read_text())["threads"]["threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    default = torch.get_num_threads()
    settings = {"auto": "auto", f"torch's default ({default})": str(default), "1 thread": "1"}
    rows, goals = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for load in ("idle", "one core busy"):
            spinner = multiprocessing.Process(target=spin, daemon=True) if load != "idle" else None
            if spinner:
                spinner.start()
            try:
                for job, overrides in JOBS.items():
                    walls = {name: [] for name in settings}
                    chosen = []
                    for _ in range(args.repeats):
                        for name, value in settings.items():
                            wall, used = run(overrides, value, Path(folder))
                            walls[name].append(wall)
                            if value == "auto":
                                chosen.append(used)
                    median = {name: statistics.median(w) for name, w in walls.items()}
                    best_fixed = min(median[name] for name in settings if name != "auto")
                    ratio = median["auto"] / best_fixed
                    rows.append((job, load, median, chosen, ratio))
                    goals[f"auto / best fixed: {job}, {load}"] = round(ratio, 3)
            finally:
                if spinner:
                    spinner.terminate()
    quick = [r for r in rows if r[0].startswith("quick")]
    busy_over_idle = quick[1][2]["auto"] / quick[0][2]["auto"]
    names = list(settings)
    lines = [
        f"Whole `cnncli train` processes, median of {args.repeats} (settings in turns); {os.cpu_count()} CPUs; "
        "busy: one process spinning on a core",
        "",
        f"| job | machine | {' | '.join(f'{n} s' for n in names)} | auto chose | auto / best fixed |",
        f"|---|---|{'---:|' * len(names)}---|---:|",
        *(
            f"| {job} | {load} | {' | '.join(f'{median[n]:.2f}' for n in names)} | "
            f"{', '.join(map(str, sorted(set(chosen))))} thread(s) | {ratio:.3f} |"
            for job, load, median, chosen, ratio in rows
        ),
        "",
        f"Quick start with one core busy / idle (auto): {busy_over_idle:.2f}",
    ]
    headline = {
        "auto_within_5_percent": all(r <= 1.05 for r in goals.values()),
        "worst_auto_over_best_fixed": max(goals.values()),
        "quick_start_busy_over_idle": round(busy_over_idle, 3),
        **goals,
    }
    emit("\n".join(lines), headline, args.json)


if __name__ == "__main__":
    main()
