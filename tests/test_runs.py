"""Run folders are found, read and labelled by one module (cnncli/runs.py): leaderboard, compare and tune
agree on which runs a folder holds, in which order, and under which label. In-process: no CLI start-up."""

import json

import pytest
import yaml
from conftest import cnncli_here
from omegaconf import OmegaConf

from cnncli import runs
from cnncli.commands.compare import run_folders
from cnncli.errors import UserError
from cnncli.leaderboard import SweepLeaderboard, collect


def make_run(folder, overrides: list[str], summary: dict | None = None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        runs.write_summary(folder, summary)
    return folder


def test_every_reader_finds_the_same_runs_in_natural_order_and_labels_them_alike(tmp_path):
    sweep = tmp_path / "outputs" / "multirun" / "day"
    for n, lr in ((10, "0.1"), (2, "0.01"), (1, "0.001")):
        history = [{"epoch": 0, "val/acc1": float(lr), "val/loss": 1.0}]
        make_run(sweep / str(n), [f"hydra.run.dir=x{n}", "model=mlp", f"optimizer.lr={lr}"],
                 {"status": "completed", "history": history, "test": {}})  # fmt: skip
    make_run(tmp_path / "outputs" / "train" / "killed", ["model=mlp"])  # no summary.json: still running or killed

    found = runs.find_runs(tmp_path / "outputs")
    assert [p.name for p in found] == ["1", "2", "10", "killed"]
    assert runs.overrides(sweep / "2") == ["model=mlp", "optimizer.lr=0.01"]  # hydra.* is where, not what
    assert runs.labels(found[:3]) == ["optimizer.lr=0.001", "optimizer.lr=0.01", "optimizer.lr=0.1"]

    rows, common, skipped = collect(tmp_path / "outputs")
    assert skipped == []
    assert common == ["model=mlp"]
    assert [r["run"] for r in rows] == ["multirun/day/10", "multirun/day/2", "multirun/day/1", "train/killed"]
    assert rows[-1]["status"] == "incomplete" and rows[0]["overrides"] == "optimizer.lr=0.1"
    # compare takes the same runs from a sweep folder, nested or not, and only those with a summary
    assert run_folders([str(tmp_path / "outputs")]) == found[:3]
    assert run_folders([str(sweep / "10")]) == [sweep / "10"]


def test_summary_is_written_whole_and_a_bad_one_is_one_line(tmp_path):
    runs.write_summary(tmp_path, {"status": "completed"})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no partial file left beside it
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*summary.json"):
        runs.read_summary(tmp_path)
    failure = runs.record_failure(tmp_path / "run", ValueError("first\nlast line"), [{"epoch": 0}])
    assert failure == {"status": "failed", "run_dir": str(tmp_path / "run"), "error": "last line", "epochs": 1,
                       "history": [{"epoch": 0}]}  # fmt: skip
    assert runs.read_summary(tmp_path / "run") == failure


def test_a_checkpoints_run_folder(tmp_path):
    assert runs.run_folder(tmp_path / "run" / "checkpoints" / "best.ckpt") == (tmp_path / "run").resolve()
    assert runs.run_folder(tmp_path / "elsewhere" / "model.ckpt") == (tmp_path / "elsewhere").resolve()


def test_a_damaged_summary_is_skipped_with_one_warning_and_the_rest_tabled(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for n in range(3):
        history = [{"epoch": 0, "val/acc1": 0.5 + n / 10, "val/loss": 1.0}]
        make_run(sweep / str(n), ["model=mlp", f"seed={n}"], {"status": "completed", "history": history, "test": {}})
    (sweep / "1" / "summary.json").write_text('{"status": "compl')  # cut off mid-write by a full disk
    result = cnncli_here("leaderboard", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: skipped run 1: cannot read ") and str(sweep / "1" / "summary.json") in warning
    assert "Traceback" not in result.stdout + result.stderr
    assert [line.split(",")[0] for line in (sweep / "leaderboard.csv").read_text().splitlines()] == ["run", "2", "0"]
    assert "2 runs in" in result.stdout
    # the table at the end of a multirun is the same one
    SweepLeaderboard().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert capsys.readouterr().err.strip() == warning


def test_the_terminal_table_shows_list_values_rich_would_read_as_markup(tmp_path):
    sweep = tmp_path / "sweep"
    for n, names in enumerate(("[dog,cat]", "[cat,dog]")):
        history = [{"epoch": 0, "val/acc1": 0.5 + n / 10, "val/loss": 1.0}]
        make_run(sweep / str(n), [f"data.class_names={names}", "augmentation=[basic]"],
                 {"status": "completed", "history": history, "test": {}})  # fmt: skip
    result = cnncli_here("leaderboard", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data.class_names=[dog,cat]" in result.stdout and "data.class_names=[cat,dog]" in result.stdout
    assert "every run: augmentation=[basic]" in result.stdout  # the caption too
