"""Start-up cost of the CLI: wall time of short commands and the heavy packages each one imports.

    python benchmarks/startup.py [--repeats 5] [--json PATH]

Each command runs `repeats` times in a fresh process (median wall time reported), against the floor every
command pays: `python -c "import torch"`. A subcommand should import only what it needs: `cnncli --help`
nothing heavy, `cnncli params` no Lightning (the model is built on the meta device), `cnncli train` no onnx.
The imported top-level packages are read from the process itself (sys.modules at exit).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import emit

HEAVY = [
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "matplotlib",
    "sklearn",
    "onnx",
    "onnxruntime",
    "optuna",
    "captum",
    "mlflow",
    "tensorboard",
]
# (command line, packages it must not import)
COMMANDS = [
    (["--help"], HEAVY),
    (["params", "model=lenet5"], ["lightning", "onnx", "onnxruntime", "optuna", "captum", "mlflow"]),
    (["train", "--help"], ["onnx", "onnxruntime", "captum", "mlflow"]),
    (
        [
            "train",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "trainer.enable_progress_bar=false",
        ],
        ["onnx", "onnxruntime", "captum"],
    ),
]


def imported(args: list[str], workdir: str) -> tuple[float, list[str]]:
    """(wall seconds, top-level packages imported) of `cnncli ARGS` in a fresh process."""
    out = Path(workdir) / f"modules{time.monotonic_ns()}.json"
    probe = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write("
        "json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
        f"sys.argv = ['cnncli', *{args!r}]\n"
        "from cnncli.cli import main\n"
        "main()\n"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"cnncli {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return wall, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        floor = statistics.median(_wall([sys.executable, "-c", "import torch"], workdir) for _ in range(args.repeats))
        rows, goals_met = [], True
        for command, forbidden in COMMANDS:
            runs = [imported(command, workdir) for _ in range(args.repeats)]
            wall = statistics.median(w for w, _ in runs)
            modules = runs[0][1]
            bad = [m for m in forbidden if m in modules]
            goals_met &= not bad
            rows.append((f"cnncli {' '.join(command)}", wall, [m for m in HEAVY if m in modules], bad))
    lines = [
        f'Start-up: median wall time of {args.repeats} fresh processes; floor: `python -c "import torch"` '
        f"= {floor:.2f} s",
        "",
        "| command | wall s | ratio to import torch | heavy packages imported | must not import, but does |",
        "|---|---:|---:|---|---|",
        *(
            f"| `{name}` | {wall:.2f} | {wall / floor:.2f} | {', '.join(heavy) or '-'} | {', '.join(bad) or 'none'} |"
            for name, wall, heavy, bad in rows
        ),
    ]
    headline = {
        "import_goals_met": goals_met,
        "params_s": round(rows[1][1], 2),
        "help_s": round(rows[0][1], 2),
        "import_torch_s": round(floor, 2),
    }
    emit("\n".join(lines), headline, args.json)


def _wall(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
