"""Faults: a SIGKILL loses at most the epoch in progress (checkpoints are written atomically), a loss that
turns nan stops the run with its epoch and step and keeps the last good checkpoint, and a truncated
checkpoint is refused in one line by every command that reads one."""

import csv
import json
import signal
import time

import pytest
import torch
from conftest import cnncli, cnncli_here, start, wait_for

NAN_MODEL = '''
from torch import nn


class NanAfter(nn.Module):
    """A linear classifier whose outputs turn to nan after `steps` training batches: a diverging run."""

    def __init__(self, in_channels, num_classes, image_size, steps):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
        self.steps, self.calls = steps, 0

    def forward(self, x):
        self.calls += self.training
        out = self.net(x)
        return out * float("nan") if self.training and self.calls > self.steps else out
'''
NAN_CONFIG = """
_target_: nanmodel.NanAfter
in_channels: ${data.channels}
num_classes: ${data.num_classes}
image_size: ${data.image_size}
steps: 13  # 5 batches an epoch: epochs 0 and 1 are fine, the 4th batch of epoch 2 is nan
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_a_whole_checkpoint_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, "trainer.max_epochs=30", "trainer.limit_train_batches=5", cwd=tmp_path)
    checkpoints = run_dir / "checkpoints"
    wait_for(checkpoints / "last.ckpt", process)
    # kill while a checkpoint is being written (its partial file exists), if one is caught within 3 s
    deadline = time.monotonic() + 3
    while not (checkpoints / ".last.ckpt.partial").exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)  # whole: it loads
    epoch = checkpoint["epoch"]
    assert [row["epoch"] for row in checkpoint["history"]] == list(range(epoch + 1))

    result = cnncli("train", f"resume={run_dir}", f"trainer.max_epochs={epoch + 2}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [row["epoch"] for row in summary["history"]] == list(range(epoch + 2))
    with open(run_dir / "metrics.csv") as f:
        val_epochs = [int(row["epoch"]) for row in csv.DictReader(f) if row["val/loss"]]
    assert val_epochs == list(range(epoch + 2))


def test_atomic_save_keeps_the_old_checkpoint_when_a_write_fails(tmp_path, monkeypatch):
    from cnncli.checkpoint import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.load(path, weights_only=True)["state_dict"]["w"].tolist() == [1, 1, 1]


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("nan")
    (cwd / "nanmodel.py").write_text(NAN_MODEL)
    (cwd / "myconf" / "model").mkdir(parents=True)
    (cwd / "myconf" / "model" / "nan_after.yaml").write_text(NAN_CONFIG)
    run_dir = cwd / "run"
    overrides = [
        "model=nan_after",
        "trainer.limit_train_batches=5",
        "trainer.max_epochs=5",
        "trainer.enable_progress_bar=false",
    ]
    result = cnncli("train", "--config-dir", "myconf", f"hydra.run.dir={run_dir}", *overrides, cwd=cwd)
    return run_dir, result


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_epoch_and_step(nan_run):
    run_dir, result = nan_run
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert message.startswith("error: loss is nan at epoch 2, step 13 (batch 3 of the epoch); the run stopped")
    assert f"its last good checkpoint is {last}" in message
    summary = json.loads((run_dir / "summary.json").read_text())  # the leaderboard lists it, with its epochs
    assert summary["status"] == "failed" and summary["error"] == message.removeprefix("error: ")
    assert [row["epoch"] for row in summary["history"]] == [0, 1] and (run_dir / "curves.png").is_file()
    log = (run_dir / "train.log").read_text()  # the run's log holds its epochs and its error
    assert "INFO epoch 0/4  train loss " in log and "INFO epoch 1/4  train loss " in log
    assert log.strip().splitlines()[-1].endswith(f"ERROR {message}")


def test_nan_loss_keeps_the_last_good_checkpoint_and_a_readable_metrics_csv(nan_run):
    run_dir, _ = nan_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 10
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows if r["val/loss"]] == [0, 1]
    assert all(float(r["val/loss"]) < 3 for r in rows if r["val/loss"])


@pytest.mark.parametrize("command", ["predict", "export"])
def test_truncated_checkpoint_is_one_line_for_predict_and_export(short_run, tmp_path, command):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((short_run / "checkpoints" / "last.ckpt").read_bytes()[:50_000])
    if command == "predict":
        from PIL import Image

        Image.new("L", (8, 8)).save(tmp_path / "digit.png")
    extra = ["inputs=[digit.png]"] if command == "predict" else []
    result = cnncli_here(command, f"ckpt_path={truncated}", *extra, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot read checkpoint {truncated}: truncated or not a PyTorch checkpoint (")
