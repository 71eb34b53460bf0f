"""cnncli leaderboard PATH: rebuild the leaderboard of a sweep, a tune study or any outputs folder (also one
that was interrupted): every run under PATH, one row each; writes PATH/leaderboard.csv and .md.
Exit code 1 when a run failed, as at the end of the sweep itself."""

import argparse
import sys
from pathlib import Path

from cnncli.errors import UserError, reports_user_errors
from cnncli.leaderboard import write_leaderboard
from cnncli.runs import find_runs


@reports_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(prog="cnncli leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a sweep folder (outputs/multirun/DATE), a study or outputs/")
    path = parser.parse_args().path
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    if not find_runs(path):
        raise UserError(f"{path}: no runs found (no summary.json or .hydra/overrides.yaml below it)")
    rows = write_leaderboard(path)
    if any(row["status"] == "failed" for row in rows):
        sys.exit(1)
