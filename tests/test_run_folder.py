"""Run folders: a config error leaves none, a folder in use is locked, a finished run is never written over
without overwrite=true, and train.log holds the run's log (cnncli/runs.py, cnncli/commands/train.py)."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import QUIET, cnncli, cnncli_here


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer.lr=-1"],  # refused by the config checks
        ["scheduler=multistep", "scheduler.milestones=[a,b]"],  # by the optimizer's
        ["data=imagefolder", "data.root=no_such_folder"],  # by the data module
    ],
)
def test_a_refused_run_leaves_no_run_folder(tmp_path, overrides):
    result = cnncli_here("train", *overrides, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert list((tmp_path / "outputs" / "train").iterdir()) == []


def test_a_finished_run_is_not_written_over(short_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(short_run, copy)
    before = files(copy)
    result = cnncli_here("train", "model=mlp", f"hydra.run.dir={copy}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {copy} holds a run already: resume={copy} continues it; overwrite=true replaces it"
    )
    assert files(copy) == before


def files(folder) -> dict:
    """Every file's bytes, but the lock's (it names the process that last held the folder)."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = cnncli_here("train", f"hydra.run.dir={tmp_path / 'mine'}", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: {tmp_path / 'mine'} is not empty and holds no cnncli run: choose another (or an empty) folder"
    )
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [".lock", "notes.txt"]


def test_a_run_folder_in_use_is_refused(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(  # another process holding the folder, as a running `cnncli train` does
        [sys.executable, "-c", f"from cnncli import runs; runs.claim({str(folder)!r}); print('held', flush=True); "
         "input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cnncli_here("train", f"hydra.run.dir={folder}", cwd=tmp_path)
    finally:
        holder.communicate("\n", timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: run folder {folder} is in use by another cnncli run (pid {holder.pid}); choose another hydra.run.dir"
    )
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # Hydra wrote nothing into it


@pytest.fixture(scope="module")
def overwritten(short_run, tmp_path_factory):
    """An MLP run with overwrite=true into a copy of the LeNet-5 short run."""
    copy = tmp_path_factory.mktemp("overwrite") / "run"
    shutil.copytree(short_run, copy)
    overrides = ["model=mlp", "trainer.max_epochs=2", "trainer.limit_train_batches=3", "overwrite=true"]
    result = cnncli("train", f"hydra.run.dir={copy}", *QUIET, *overrides, cwd=copy.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return copy, result


def test_overwrite_replaces_a_finished_run(overwritten):
    run_dir, _ = overwritten
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "cnncli.models.mlp.mlp" and summary["epochs"] == 2
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["cnncli"]["config"]["model"]["_target_"] == "cnncli.models.mlp.mlp" and last["epoch"] == 1
    assert (run_dir / "metrics.csv").read_text().count("\n") < 10  # the LeNet-5 rows are gone


def test_one_line_per_epoch_in_the_terminal_and_the_run_log(overwritten):
    run_dir, result = overwritten
    line = (
        r"epoch {}/1  train loss \d+\.\d{{4}} top-1 \d+\.\d\d%  val loss \d+\.\d{{4}} top-1 \d+\.\d\d%  lr 0\.001  "
        r"\d+\.\d s"
    )
    for epoch in (0, 1):
        assert re.search(f"^{line.format(epoch)}$", result.stdout, re.MULTILINE), result.stdout
    log = (run_dir / "train.log").read_text().splitlines()
    assert re.fullmatch(rf"\S+ \S+ INFO run {run_dir}: mlp \([\d,]+ parameters, [\d,]+ trainable\) on digits "
                        r"\(1257 train, 270 val, 270 test images of 1x32x32, 10 classes\), batch 16, at most 2 epochs",
                        log[0])  # fmt: skip
    assert [bool(re.fullmatch(rf"\S+ \S+ INFO {line.format(e)}", row)) for e, row in enumerate(log[1:3])] == [True] * 2
    assert re.fullmatch(rf"\S+ \S+ INFO completed, test/loss \S+, test/acc1 \S+, test/acc5 \S+; {run_dir} holds: "
                        r"checkpoints/, config\.yaml, curves\.png, hparams\.yaml, metrics\.csv, summary\.json, "
                        r"train\.log",
                        log[-1])  # fmt: skip
