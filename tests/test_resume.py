"""Resume: a run stopped by SIGTERM continues in its own folder (resume=RUN_DIR or resume=last) and ends
exactly where a run never stopped ends: same epochs, same metrics, every epoch once in metrics.csv."""

import csv
import json
import shutil
import signal
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import QUIET, cnncli, cnncli_here, start, train, wait_for

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out

# limit_train_batches keeps epochs short; it also makes the shuffle matter (a different draw, other batches).
# mode=max makes the "best" checkpoint the worst epoch, 0: the resumed run must keep it (the checkpoint
# callback's state is restored), and testing it must leave the run's epoch history whole.
RUN = [
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=20",
    "trainer.deterministic=true",
    "callbacks.model_checkpoint.mode=max",
]


def metrics_rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(run_dir, *RUN)
    return run_dir


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same run under ./outputs/train/, sent SIGTERM once its first epoch's checkpoint is on disk, then
    continued with `cnncli train resume=last` from the same folder."""
    cwd = tmp_path_factory.mktemp("interrupted")
    run_dir = cwd / "outputs" / "train" / "run"
    process = start(run_dir, *RUN, cwd=cwd)
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    stopped = SimpleNamespace(
        returncode=process.returncode,
        stderr=stderr,
        summary=json.loads((run_dir / "summary.json").read_text()),
        checkpoint=torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True),
    )
    resumed = cnncli("train", "resume=last", cwd=cwd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return SimpleNamespace(cwd=cwd, run_dir=run_dir, stopped=stopped, resumed=resumed)


def test_sigterm_stops_the_run_with_a_message_and_keeps_the_last_epoch(interrupted):
    stopped = interrupted.stopped
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    message = stopped.stderr.strip().splitlines()[-1]
    assert message.startswith("error: interrupted by SIGTERM in epoch ")
    epoch = int(message.removeprefix("error: interrupted by SIGTERM in epoch ").split()[0])
    assert 1 <= epoch <= 3  # stopped mid-run, after the first epoch
    assert f"checkpoints/last.ckpt holds epoch {epoch - 1}" in message
    assert f"cnncli train resume={interrupted.run_dir}" in message
    assert stopped.summary["status"] == "interrupted" and stopped.summary["test"] == {}
    assert [row["epoch"] for row in stopped.summary["history"]] == list(range(epoch))
    assert stopped.checkpoint["epoch"] == epoch - 1
    assert [row["epoch"] for row in stopped.checkpoint["history"]] == list(range(epoch))


def test_resumed_run_ends_as_the_uninterrupted_one(interrupted, straight):
    resumed = json.loads((interrupted.run_dir / "summary.json").read_text())
    reference = json.loads((straight / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == reference["epochs"] == 4
    # Weights, optimizer, loop counters and the random state (the shuffle) are restored: the numbers agree
    # to float precision (measured: identical).
    for ours, theirs in zip(resumed["history"], reference["history"], strict=True):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6), (ours["epoch"], key)
    for key, value in reference["test"].items():
        assert resumed["test"][key] == pytest.approx(value, rel=1e-6)
    assert resumed["best"]["epoch"] == reference["best"]["epoch"] == 0
    best = torch.load(interrupted.run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 0


def test_resumed_run_continues_in_its_folder_with_its_config(interrupted, straight):
    assert [p.name for p in (interrupted.cwd / "outputs" / "train").iterdir()] == ["run"]  # no new run folder
    assert sorted(p.name for p in (interrupted.run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    from omegaconf import OmegaConf

    ours = OmegaConf.load(interrupted.run_dir / "config.yaml")
    theirs = OmegaConf.load(straight / "config.yaml")
    assert ours.pop("resume") == str(interrupted.run_dir) and theirs.pop("resume") is None
    assert OmegaConf.to_container(ours.trainer) == OmegaConf.to_container(theirs.trainer)
    assert ours.seed == theirs.seed and ours.model == theirs.model and ours.optimizer == theirs.optimizer
    overrides = OmegaConf.load(interrupted.run_dir / ".hydra" / "overrides.yaml")
    assert [o for o in overrides if not o.startswith("resume=")] == [*QUIET, *RUN]
    assert f"best checkpoint: {interrupted.run_dir}" in interrupted.resumed.stdout.replace("\n", "")


def test_metrics_csv_holds_every_epoch_once(interrupted, straight):
    ours, theirs = metrics_rows(interrupted.run_dir), metrics_rows(straight)
    for rows in (ours, theirs):
        train_rows = [r["epoch"] for r in rows if "train/loss" in r]
        val_rows = [r["epoch"] for r in rows if "val/loss" in r]
        assert train_rows == val_rows == [0, 1, 2, 3]
        assert len([r for r in rows if "test/loss" in r]) == 1
        assert len([r for r in rows if "lr-Adam" in r]) == 4
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        assert a == pytest.approx(b, rel=1e-6)


def test_truncated_last_checkpoint_is_refused_and_nothing_is_touched(interrupted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(interrupted.run_dir, copy)
    last = copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100_000])
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    result = cnncli_here("train", f"resume={copy}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot read checkpoint {last}: truncated")
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_resume_of_a_folder_that_is_no_run(tmp_path):
    result = cnncli_here("train", f"resume={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: resume={tmp_path}: {tmp_path}/.hydra/overrides.yaml not found (resume takes a cnncli train run folder)"
    )
    assert list(tmp_path.iterdir()) == []


def test_last_checkpoint_is_written_after_every_epoch(straight):
    """Lightning writes last.ckpt only with a top-k save; here the best epoch is 0 (mode=max on val/loss), so
    without cnncli.trainer.RunCheckpoint last.ckpt would hold epoch 0 and a kill would lose epochs 1-3."""
    last = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(straight / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == 3 and [row["epoch"] for row in last["history"]] == [0, 1, 2, 3]
    assert best["epoch"] == 0


def test_resume_of_a_finished_run_says_nothing_was_left_to_train(straight, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(straight, copy)
    kept = {p: p.read_bytes() for p in [copy / "summary.json", *(copy / "checkpoints").iterdir()]}
    result = cnncli_here("train", f"resume={copy}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resume: nothing left to train in {copy}: it trained its 4 epochs (trainer.max_epochs=4)" in result.stdout
    assert {p: p.read_bytes() for p in kept} == kept


def test_sigterm_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    # one image a step: the first epoch takes seconds, and the signal comes in it
    process = start(run_dir, "data.batch_size=1", "trainer.max_epochs=2", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while "INFO run " not in _text(run_dir / "train.log") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # Lightning installs its signal handlers as the fit starts
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("error: interrupted by SIGTERM in epoch 0 ")
    assert message.endswith(
        "no epoch was completed, so there is nothing to resume; start it again with: cnncli train "
        + " ".join([*QUIET, "data.batch_size=1", "trainer.max_epochs=2"])
    )
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def _text(path) -> str:
    return path.read_text() if path.is_file() else ""


def test_a_resume_that_does_not_fit_the_checkpoint_is_one_line_and_changes_nothing(straight, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(straight, copy)
    kept = {p: p.read_bytes() for p in [copy / ".hydra" / "overrides.yaml", copy / "summary.json",
                                        *(copy / "checkpoints").iterdir()]}  # fmt: skip
    result = cnncli_here("train", f"resume={copy}", "model=mlp", "trainer.max_epochs=6", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: resume: {copy}/checkpoints/last.ckpt does not fit this run's network (Missing key(s) in state_dict"
        )
    )
    assert {p: p.read_bytes() for p in kept} == kept  # the run's own overrides too: resume=RUN still continues it


def test_a_one_cycle_run_cannot_be_stretched_on_resume(straight, tmp_path):
    """OneCycleLR's total_steps come back with the checkpoint: more epochs would step it past its end, and torch
    raises after the first new epoch. Refused first, in one line, the run untouched."""
    copy = tmp_path / "run"
    shutil.copytree(straight, copy)
    last = copy / "checkpoints" / "last.ckpt"
    data = torch.load(last, weights_only=True)
    data["cnncli"]["config"]["scheduler"] = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True}
    torch.save(data, last)
    kept = last.read_bytes()
    result = cnncli_here("train", f"resume={copy}", "trainer.max_epochs=6", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: trainer.max_epochs: the run's one-cycle schedule was planned for its 4 epochs and cannot be "
        "stretched to 6: resume with trainer.max_epochs=4, or start a new run"
    )
    assert last.read_bytes() == kept
