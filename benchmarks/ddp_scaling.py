"""DDP scaling on the CPU: `cnncli train trainer=ddp_cpu` (2 processes, gloo) against `trainer=cpu` (1 process).

    python benchmarks/ddp_scaling.py [--repeats 2] [--train-size 20000] [--epochs 3] [--json PATH]

Both train LeNet-5 on the same MNIST-shaped random data (data=fake: 28x28x1, 10 classes), batch 128 per
process, Adam, for `--epochs` epochs without early stopping, each in a subprocess as a user runs it. The figure
is the fit time summary.json reports (`wall_time_s`: training, validation, checkpoints and the test pass;
start-up excluded, which DDP pays once per process), turned into training images per second. Under DDP each
process sees half of every epoch and the gradients are averaged over gloo each step; on a machine with N
cores the two processes split them (Lightning gives each process N/2 threads), so the speed-up measures
how well data parallelism uses the same cores, not more hardware.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report import emit


def fit_seconds(trainer: str, train_size: int, epochs: int, workdir: str, tag: str) -> float:
    run_dir = Path(workdir) / tag
    command = [
        "cnncli", "train", f"trainer={trainer}", "model=lenet5", "data=fake", f"data.train_size={train_size}",
        "data.channels=1", "data.image_size=28", "data.batch_size=128", f"trainer.max_epochs={epochs}",
        "callbacks.early_stopping=null", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == epochs, summary["epochs"]
    return summary["wall_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    times = {"cpu": [], "ddp_cpu": []}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(args.repeats):  # interleaved
            for trainer in times:
                times[trainer].append(fit_seconds(trainer, args.train_size, args.epochs, workdir, f"{trainer}{repeat}"))
    images = args.train_size * args.epochs
    one, two = (statistics.median(times[t]) for t in ("cpu", "ddp_cpu"))
    lines = [
        f"LeNet-5 on {args.train_size:,} random 28x28x1 images, {args.epochs} epochs, batch 128 per process, "
        f"{os.cpu_count()} CPUs; fit time from summary.json, median of {args.repeats}",
        "",
        "| trainer | processes | fit s | training images/s | speed-up |",
        "|---|---:|---:|---:|---:|",
        f"| `trainer=cpu` | 1 | {one:.1f} | {images / one:,.0f} | 1.00 |",
        f"| `trainer=ddp_cpu` | 2 | {two:.1f} | {images / two:,.0f} | {one / two:.2f} |",
    ]
    emit("\n".join(lines), {"speedup_2_processes": round(one / two, 3)}, args.json)


if __name__ == "__main__":
    main()
