"""cnncli compare RUN_DIR [RUN_DIR ...] [out=FILE.png]: the val curves of several training runs in one PNG.

Each run is labelled by its Hydra overrides (`.hydra/overrides.yaml`), leaving out those every run shares,
or by its folder name. A sweep folder (outputs/multirun/DATE) stands for all the runs inside it. A table
of each run's best epoch is printed as well.
"""

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from cnncli.errors import UserError, reports_user_errors
from cnncli.plots import plot_runs


def run_folders(paths: list[str]) -> list[Path]:
    """The run folders named, a sweep folder replaced by its runs (0, 1, 2, ... in numeric order)."""
    runs = []
    for path in map(Path, paths):
        if (path / "summary.json").is_file():
            runs.append(path)
        elif members := [p.parent for p in path.glob("*/summary.json")]:
            runs += sorted(members, key=lambda p: (len(p.name), p.name))  # 2 before 10
        elif not path.is_dir():
            raise UserError(f"no such folder: {path}")
        else:
            raise UserError(f"{path} is not a run folder of cnncli train (no summary.json), nor a sweep of them")
    return runs


def read_summary(run: Path) -> dict:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {run / 'summary.json'}: {e}") from None


def overrides(run: Path) -> list[str]:
    """The command-line overrides the run was started with, without hydra.* (where it wrote, not what it ran)."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path) if not str(o).lstrip("+~").startswith("hydra.")]


def labels(runs: list[Path]) -> list[str]:
    """Each run's overrides that not every run shares; the folder name where that leaves nothing or repeats."""
    lists = [overrides(run) for run in runs]
    shared = set.intersection(*map(set, lists)) if len(runs) > 1 else set()
    texts = [" ".join(o for o in items if o not in shared) for items in lists]
    return [f"{text} ({run.name})" if texts.count(text) > 1 else text or run.name for text, run in zip(texts, runs)]


def compare(paths: list[str], out: Path) -> Path:
    runs = run_folders(paths)
    summaries, names = [read_summary(run) for run in runs], labels(runs)
    plot_runs(
        [
            {"label": label, "history": s.get("history", []), "best_epoch": s.get("best", {}).get("epoch")}
            for label, s in zip(names, summaries)
        ],
        out,
    )
    table = Table(title=f"{len(runs)} runs, at their best epoch")
    table.add_column("run (legend)", overflow="fold")
    for column in ("epochs", "best epoch", "val loss", "val top-1", "test top-1"):
        table.add_column(column, justify="right", no_wrap=True)
    for label, s in zip(names, summaries):
        best, test = s.get("best", {}), s.get("test", {})
        cells = (best.get("val/loss"), best.get("val/acc1"), test.get("test/acc1"))
        table.add_row(
            label,
            str(s.get("epochs", "")),
            str(best.get("epoch", "")),
            *("" if c is None else f"{c:.4f}" for c in cells),
        )
    console = Console(soft_wrap=True)
    console.print(table)
    console.print(f"wrote {out}", highlight=False)
    return out


@reports_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(
        prog="cnncli compare",
        description="Overlay the val loss and val top-1 curves of several training runs in one PNG, "
        "labelled by the overrides that differ between them; a sweep folder stands for all its runs.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of cnncli train, or sweep folders")
    parser.add_argument("--out", "-o", default="compare.png", help="the PNG to write (default: compare.png)")
    # out=FILE, as the other subcommands take it
    args = [f"--out={a.removeprefix('out=')}" if a.startswith("out=") else a for a in sys.argv[1:]]
    options = parser.parse_args(args)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compare(options.runs, out)
