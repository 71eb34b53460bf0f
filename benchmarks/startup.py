"""Start-up cost of the CLI: wall time of short commands against the floors they cannot go below, and the
heavy packages each one imports.

    python benchmarks/startup.py [--repeats 5] [--json PATH]

Each command runs `repeats` times in a fresh process (median wall time reported), as do its floors,
measured in the same run: `python -c "import torch"` and `python -c "import lightning.pytorch"`. The goals
(issue 15): a command that only reads its config (--help, --cfg job, --info, -m ... --cfg job) imports no
torch and answers in <= 1.0 s; `params model=lenet5` <= import torch + 0.7 s; a one-batch `train` <= import
lightning + 0.5 s (cnncli skips Python's finalization at exit, about 1 s after a torch import, which
the floors pay: both are shown); `predict` from an ONNX file imports no torch and answers in <= 1.0 s;
`eval` and `predict` from a checkpoint <= import lightning + 1.0 s. The imported top-level packages are
read from the process itself (sys.modules at exit), as tests/test_imports.py does.
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

from PIL import Image
from report import emit

HEAVY = ["torch", "torchvision", "lightning", "torchmetrics", "matplotlib", "sklearn", "onnx", "onnxruntime",
         "optuna", "captum"]  # fmt: skip
NO_TORCH = HEAVY
ONE_BATCH = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
             "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"]  # fmt: skip
RUN = "run"  # the one-batch run's folder in the working directory; its checkpoint feeds eval, export, predict
CKPT = f"{RUN}/checkpoints/best.ckpt"
TRAIN_ROW = f"cnncli train {' '.join(ONE_BATCH)} hydra.run.dir={RUN}"
# (command line, packages it must not import, goal: (floor, seconds over it); floor None: absolute seconds)
COMMANDS = [
    (["--help"], NO_TORCH, (None, 1.0)),
    (["train", "--help"], NO_TORCH, (None, 1.0)),
    (["train", "--cfg", "job"], NO_TORCH, (None, 1.0)),
    (["train", "--info"], NO_TORCH, (None, 1.0)),
    (["train", "-m", "model=mlp,lenet5", "--cfg", "job"], NO_TORCH, (None, 1.0)),
    (["eval", "--help"], NO_TORCH, (None, 1.0)),
    (["export", "--cfg", "job"], NO_TORCH, (None, 1.0)),
    (["tune", "--help"], NO_TORCH, (None, 1.0)),
    (["viz", "cam", "--help"], NO_TORCH, (None, 1.0)),
    (["params", "model=lenet5"], ["lightning", "torchvision", "sklearn", "onnx", "optuna", "captum"], ("torch", 0.7)),
    (["train", *ONE_BATCH, f"hydra.run.dir={RUN}"], ["onnx", "onnxruntime", "optuna", "captum"], ("lightning", 0.5)),
    (["eval", f"ckpt_path={CKPT}", "out=eval"], ["onnx", "onnxruntime", "optuna", "captum"], ("lightning", 1.0)),
    (["predict", f"ckpt_path={CKPT}", "inputs=[digit.png]"], ["onnx", "onnxruntime", "optuna"], ("lightning", 1.0)),
    (["predict", "model_file=model.onnx", "inputs=[digit.png]"], [h for h in HEAVY if h != "onnxruntime"], (None, 1.0)),
]


def imported(args: list[str], workdir: str) -> tuple[float, list[str]]:
    """(wall seconds, top-level packages imported) of `cnncli ARGS` in a fresh process."""
    out = Path(workdir) / f"modules{time.monotonic_ns()}.json"
    probe = (
        "import atexit, json, sys\n"
        f"OUT = {str(out)!r}\n"
        "atexit.register(lambda: open(OUT, 'w').write(json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
        f"sys.argv = ['cnncli', *{args!r}]\n"
        "from cnncli.cli import console\n"
        "console()\n"
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
        Image.new("L", (32, 32), 128).save(Path(workdir) / "digit.png")
        # cnncli exits without Python's finalization (cnncli.cli.console), which after `import lightning`
        # takes about 1 s: each floor is measured both ways; the goals use the (with it)
        floors = {
            name: statistics.median(_wall([sys.executable, "-c", code], workdir) for _ in range(args.repeats))
            for name, code in (
                ("torch", "import torch"),
                ("lightning", "import lightning.pytorch"),
                ("torch, no finalization", "import torch, os; os._exit(0)"),
                ("lightning, no finalization", "import lightning.pytorch, os; os._exit(0)"),
            )
        }
        rows, all_met = [], True
        for command, forbidden, (floor, allowance) in COMMANDS:
            runs = [imported(command, workdir) for _ in range(args.repeats)]
            if command[0] == "train" and RUN in command[-1]:  # the checkpoint eval and predict read; its ONNX file
                subprocess.run(["cnncli", "export", f"ckpt_path={CKPT}", "format=onnx", "out=model.onnx"],
                               cwd=workdir, check=True, capture_output=True)  # fmt: skip
            wall = statistics.median(w for w, _ in runs)
            modules = runs[0][1]
            bad = [m for m in forbidden if m in modules]
            limit = allowance + (floors[floor] if floor else 0)
            met = not bad and wall <= limit
            all_met &= met
            goal = f"<= {floor} + {allowance:.1f} s = {limit:.2f} s" if floor else f"<= {allowance:.1f} s"
            heavy = [m for m in HEAVY if m in modules]
            over = (
                f"{wall - floors[floor]:+.2f} s over {floor} ({wall - floors[floor + ', no finalization']:+.2f} s "
                "without its finalization)"
                if floor
                else ""
            )
            rows.append((f"cnncli {' '.join(command)}", wall, over, goal, heavy, bad, met))
    lines = [
        f"Start-up: median wall time of {args.repeats} fresh processes; floors measured in the same run: "
        f'`python -c "import torch"` = {floors["torch"]:.2f} s, `python -c "import lightning.pytorch"` = '
        f"{floors['lightning']:.2f} s; without Python's finalization at exit (`; os._exit(0)`, as cnncli exits): "
        f"{floors['torch, no finalization']:.2f} s and {floors['lightning, no finalization']:.2f} s",
        "",
        "| command | wall s | over its floor | goal | heavy packages imported | must not import, but does | |",
        "|---|---:|---|---|---|---|---|",
        *(
            f"| `{name}` | {wall:.2f} | {over or '-'} | {goal} | {', '.join(heavy) or '-'} | "
            f"{', '.join(bad) or 'none'} | {'met' if met else '**not met**'} |"
            for name, wall, over, goal, heavy, bad, met in rows
        ),
    ]
    by_name = {name: (wall, met) for name, wall, _, _, _, _, met in rows}
    headline = {
        "all_goals_met": all_met,
        "train_one_batch_over_lightning_s": round(
            by_name[f"cnncli train {' '.join(ONE_BATCH)} hydra.run.dir={RUN}"][0] - floors["lightning"], 2
        ),  # fmt: skip
        "params_over_torch_s": round(by_name["cnncli params model=lenet5"][0] - floors["torch"], 2),
        "train_help_s": round(by_name["cnncli train --help"][0], 2),
        "predict_onnx_s": round(by_name["cnncli predict model_file=model.onnx inputs=[digit.png]"][0], 2),
        "import_torch_s": round(floors["torch"], 2),
        "import_lightning_s": round(floors["lightning"], 2),
        "train_one_batch_over_lightning_without_finalization_s": round(
            by_name[f"cnncli train {' '.join(ONE_BATCH)} hydra.run.dir={RUN}"][0]
            - floors["lightning, no finalization"],
            2,
        ),
    }
    emit("\n".join(lines), headline, args.json)


def _wall(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
