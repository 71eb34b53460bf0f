"""cnncli compare RUN_DIR [RUN_DIR ...] [out=FILE.png]: the val curves of several training runs in one PNG.

Each run is labelled by its Hydra overrides (`.hydra/overrides.yaml`), leaving out those every run shares,
or by its folder name. A sweep folder (outputs/multirun/DATE) stands for all the runs inside it. A table
of each run's best epoch is printed as well.
"""

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnncli import runs
from cnncli.errors import ConfigError, UserError, check_parents, reports_user_errors

# the picture formats `out=` may name (matplotlib writes each by its suffix); shared by data show and viz
PICTURE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def check_picture(key: str, path: Path) -> None:
    """`out=FILE`: one of PICTURE_FORMATS, not a folder or a device, in a folder that can be made."""
    if path.suffix.lower() not in PICTURE_FORMATS:
        formats = f"{', '.join(PICTURE_FORMATS[:-1])} or {PICTURE_FORMATS[-1]}"
        raise ConfigError(key, f"must be a picture file ending in {formats}, got {str(path)!r}")
    if path.exists() and not path.is_file():
        raise UserError(f"{key}={path}: is {'a folder' if path.is_dir() else 'not a regular file'}")
    check_parents(key, path)


def run_folders(paths: list[str]) -> list[Path]:
    """The run folders named, a sweep folder replaced by the runs below it (0, 1, 2, ... in natural order)."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"no such folder: {path}")
        members = [run for run in runs.find_runs(path) if runs.read_summary(run) is not None]
        if not members:
            raise UserError(f"{path} is not a run folder of cnncli train (no summary.json), nor a sweep of them")
        found += members
    return found


def compare(paths: list[str], out: Path) -> Path:
    folders = run_folders(paths)
    summaries, names = [runs.read_summary(run) for run in folders], runs.labels(folders)
    from cnncli.plots import plot_runs  # matplotlib: once there is something to draw

    # segmentation runs are compared by mean IoU, classifiers by top-1
    segmentation = all(s.get("task") == "segmentation" for s in summaries)
    metric, metric_name = ("miou", "mean IoU") if segmentation else ("acc1", "top-1 accuracy")

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_runs(
            [
                {"label": label, "history": s.get("history", []), "best_epoch": s.get("best", {}).get("epoch")}
                for label, s in zip(names, summaries)
            ],
            out,
            metric,
            metric_name,
        )
    except OSError as e:  # no permission, disk full: the path was checked, writing it still failed
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    table = Table(title=f"{len(folders)} runs, at their best epoch")
    table.add_column("run (legend)", overflow="fold")
    short = "mIoU" if segmentation else "top-1"
    for column in ("epochs", "best epoch", "val loss", f"val {short}", f"test {short}"):
        table.add_column(column, justify="right", no_wrap=True)
    for label, s in zip(names, summaries):
        best, test = s.get("best", {}), s.get("test", {})
        cells = (best.get("val/loss"), best.get(f"val/{metric}"), test.get(f"test/{metric}"))
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
    check_picture("out", out)  # before reading any run: a bad name costs nothing
    compare(options.runs, out)
