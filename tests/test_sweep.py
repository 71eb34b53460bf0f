"""Multirun sweeps: one folder per run, the leaderboard at the end, failing runs recorded, `cnncli leaderboard`."""

import csv
import json
import shutil

import pytest
import yaml
from conftest import QUIET, cnncli

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out

FAST = [*QUIET, "trainer.max_epochs=2", "trainer.limit_train_batches=10"]


def read_leaderboard(folder):
    with open(folder / "leaderboard.csv") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The README's 2x2 sweep, shortened: two models x two learning rates."""
    cwd = tmp_path_factory.mktemp("sweep")
    sweep = ["-m", "model=lenet5,mlp", "optimizer.lr=1e-3,1e-2", "hydra.sweep.dir=sweep"]
    result = cnncli("train", *sweep, *FAST, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd / "sweep", result.stdout


def test_a_2x2_sweep_writes_four_runs_and_a_leaderboard_of_them(sweep):
    folder, stdout = sweep
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    rows = read_leaderboard(folder)
    assert sorted(rows) == ["0", "1", "2", "3"]
    swept = set()
    for run, row in rows.items():
        summary = json.loads((folder / run / "summary.json").read_text())
        overrides = yaml.safe_load((folder / run / ".hydra" / "overrides.yaml").read_text())
        varying = [o for o in overrides if o.startswith(("model=", "optimizer.lr="))]
        assert row["overrides"] == " ".join(varying)  # the overrides every run shares are not repeated
        swept.add(row["overrides"])
        assert row["status"] == "completed" and row["error"] == ""
        assert float(row["best_val_acc1"]) == pytest.approx(max(h["val/acc1"] for h in summary["history"]))
        assert float(row["val_loss"]) == pytest.approx(min(h["val/loss"] for h in summary["history"]))
        assert float(row["test_acc1"]) == pytest.approx(summary["test"]["test/acc1"])
        assert float(row["test_acc5"]) == pytest.approx(summary["test"]["test/acc5"])
        assert int(row["params"]) == (61_706 if "lenet5" in row["overrides"] else 296_586)
        assert int(row["epochs"]) == 2 and float(row["wall_time_s"]) > 0
        assert float(row["best_val_acc1"]) > 0.3  # it learned (10 classes)
    assert swept == {f"model={m} optimizer.lr={lr}" for m in ("lenet5", "mlp") for lr in ("0.001", "0.01")}
    ranked = [float(row["best_val_acc1"]) for row in rows.values()]
    assert ranked == sorted(ranked, reverse=True)  # best first
    markdown = (folder / "leaderboard.md").read_text()
    assert markdown.count("| completed |") == 4 and "trainer.max_epochs=2" in markdown.splitlines()[0]
    assert "4 runs in" in stdout and all(o in stdout for o in swept)  # the rich table


def test_leaderboard_command_rebuilds_the_table_also_for_an_interrupted_sweep(sweep, tmp_path):
    folder, _ = sweep
    expected = (folder / "leaderboard.csv").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.ckpt", "leaderboard.*"))
    result = cnncli("leaderboard", str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (copy / "leaderboard.csv").read_text() == expected
    # a run stopped before its end has no summary.json: its row comes from what metrics.csv logged
    (copy / "2" / "summary.json").unlink()
    assert cnncli("leaderboard", str(copy), cwd=tmp_path).returncode == 0
    row, before = read_leaderboard(copy)["2"], read_leaderboard(folder)["2"]
    assert row["status"] == "incomplete" and row["epochs"] == "2"
    assert float(row["best_val_acc1"]) == pytest.approx(float(before["best_val_acc1"]))
    missing = cnncli("leaderboard", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


def test_a_failing_run_is_listed_and_the_sweep_goes_on_then_exits_1(tmp_path):
    # alexnet needs inputs of at least 67x67: on the 32x32 digits that combination fails
    result = cnncli(
        "train",
        "-m",
        "model=alexnet,mlp",
        "hydra.sweep.dir=sweep",
        *QUIET,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 2 runs failed: 0"
    rows = read_leaderboard(tmp_path / "sweep")
    assert rows["0"]["status"] == "failed" and "at least 67x67" in rows["0"]["error"]
    assert rows["1"]["status"] == "completed" and float(rows["1"]["test_acc1"]) > 0.3  # run after the failure
    assert "run 0 failed: model.image_size: alexnet" in result.stdout
    assert cnncli("leaderboard", str(tmp_path / "sweep"), cwd=tmp_path).returncode == 1
