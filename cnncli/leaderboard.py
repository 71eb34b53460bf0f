"""One table of every run under a folder (a multirun sweep, a `cnncli tune` study, a whole outputs/): each
run's overrides, best val top-1, test top-1/top-5 (segmentation runs: best val and test mean IoU), val loss,
parameters, epochs, wall time and status. A metric column no run has is left out.

Runs are found and read by cnncli/runs.py: a run stopped before its end still gets a row, `incomplete`,
with what its metrics.csv has logged so far. This module imports neither torch nor Lightning, so
`cnncli leaderboard` answers at once.
"""

import csv
import io
import math
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnncli import runs
from cnncli.errors import UserError

# (key in a row, column title); rows are sorted by best val top-1 (or mean IoU), best first
COLUMNS = (
    ("run", "run"),
    ("overrides", "overrides"),
    ("best_val_acc1", "val top-1"),  # the best epoch's
    ("test_acc1", "test top-1"),
    ("test_acc5", "test top-5"),
    ("best_val_miou", "val mIoU"),  # segmentation runs
    ("test_miou", "test mIoU"),
    ("val_loss", "val loss"),  # the best epoch's
    ("params", "params"),
    ("epochs", "epochs"),
    ("wall_time_s", "wall s"),
    ("status", "status"),
    ("error", "error"),
)


def _extreme(rows: list[dict], key: str, pick):
    values = [row[key] for row in rows if isinstance(row.get(key), (int, float)) and not math.isnan(row[key])]
    return pick(values) if values else None


def read_run(run_dir: Path, root: Path) -> dict:
    summary = runs.read_summary(run_dir) or {"status": "incomplete"}
    history = runs.history(run_dir)
    test = summary.get("test") or {}
    return {
        "run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
        "overrides": runs.overrides(run_dir),
        "best_val_acc1": _extreme(history, "val/acc1", max),
        "test_acc1": test.get("test/acc1"),
        "test_acc5": test.get("test/acc5"),
        "best_val_miou": _extreme(history, "val/miou", max),
        "test_miou": test.get("test/miou"),
        "val_loss": _extreme(history, "val/loss", min),
        "params": summary.get("params"),
        "epochs": summary.get("epochs", len(history) or None),
        "wall_time_s": summary.get("wall_time_s"),
        "status": summary.get("status", "incomplete"),
        "error": summary.get("error", ""),
    }


def collect(path: Path) -> tuple[list[dict], list[str], list[str]]:
    """The rows under path, best val top-1 first, the overrides every run shares (shown once, not per
    row: a sweep's table shows what varies), and one note per run left out because a file of it cannot be
    read (a damaged summary.json must not cost the table of every other run)."""
    path = Path(path)
    rows, readable, skipped = [], [], []
    for run_dir in runs.find_runs(path):
        name = str(run_dir.relative_to(path)) if run_dir != path else run_dir.name
        try:
            rows.append(read_run(run_dir, path))
        except UserError as e:  # read_summary's one line, naming the file
            skipped.append(f"skipped run {name}: {e}")
            continue
        except yaml.YAMLError as e:
            problem = str(e).splitlines()[0]
            skipped.append(f"skipped run {name}: cannot read {run_dir / runs.OVERRIDES}: {problem}")
            continue
        readable.append(run_dir)
    common = runs.shared_overrides(readable)
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in common)
    score = "best_val_acc1" if any(r["best_val_acc1"] is not None for r in rows) else "best_val_miou"
    rows.sort(key=lambda r: -r[score] if r[score] is not None else math.inf)
    return rows, common, skipped


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key in METRIC_KEYS:
        return f"{value:.4f}"
    if key == "params":
        return f"{value:,}"
    return str(value)


METRIC_KEYS = ("best_val_acc1", "test_acc1", "test_acc5", "best_val_miou", "test_miou", "val_loss")
SEGMENTATION_KEYS = ("best_val_miou", "test_miou")


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """COLUMNS, the top-1 ones only where a classifier is among the runs, the mIoU ones only where a
    segmentation run is (a sweep of classifiers shows no mIoU column)."""
    segmentation = any(r["best_val_miou"] is not None for r in rows)
    classification = not segmentation or any(r["best_val_acc1"] is not None for r in rows)
    return [
        (k, t)
        for k, t in COLUMNS
        if (segmentation if k in SEGMENTATION_KEYS else classification if k in METRIC_KEYS[:3] else True)
    ]


def to_markdown(rows: list[dict]) -> str:
    shown = columns(rows)
    lines = ["| " + " | ".join(title for _, title in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell(k, r[k]).replace("|", "\\|") for k, _ in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    keys = [k for k, _ in columns(rows)]
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_table(rows: list[dict], common: list[str], title: str) -> Table:
    """The rich table; errors are printed below it, where they have room."""
    # every text is escaped: rich would read an override such as data.class_names=[dog,cat] as markup
    table = Table(title=escape(title), caption=escape(f"every run: {' '.join(common)}") if common else None)
    shown = [(key, title) for key, title in columns(rows) if key != "error"]
    for key, column in shown:
        if key == "overrides":
            table.add_column(column, overflow="fold", min_width=16)
        else:
            table.add_column(column, justify="left" if key in ("run", "status") else "right", no_wrap=True)
    style = {"failed": "red", "pruned": "yellow", "incomplete": "yellow"}
    for row in rows:
        table.add_row(*(escape(_cell(k, row[k])) for k, _ in shown), style=style.get(row["status"]))
    return table


def write_leaderboard(path: Path, console: Console | None = None) -> list[dict]:
    """Collect the runs under path, write leaderboard.csv and leaderboard.md beside them, print the table."""
    path = Path(path)
    rows, common, skipped = collect(path)
    for note in skipped:
        print(f"warning: {note}", file=sys.stderr)
    (path / "leaderboard.csv").write_text(to_csv(rows))
    (path / "leaderboard.md").write_text((f"Every run: `{' '.join(common)}`\n\n" if common else "") + to_markdown(rows))
    console = console or Console(width=None if sys.stdout.isatty() else 160)  # piped: no wrapping at 80
    console.print(to_table(rows, common, title=f"{len(rows)} runs in {path}"))
    for row in rows:
        if row["error"]:
            console.print(f"run {row['run']} failed: {row['error']}", style="red", markup=False)
    console.print(f"leaderboard: {path / 'leaderboard.csv'}, {path / 'leaderboard.md'}", markup=False)
    return rows


class SweepLeaderboard(Callback):
    """Hydra callback (conf/train.yaml hydra.callbacks): the leaderboard at the end of a multirun. Runs that
    failed were recorded and the sweep went on; the command then exits 1."""

    def on_multirun_end(self, config, **kwargs) -> None:
        rows = write_leaderboard(Path(config.hydra.sweep.dir))
        failed = [row["run"] for row in rows if row["status"] == "failed"]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} runs failed: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)
