"""DDP on the CPU (trainer=ddp_cpu: 2 processes, gloo): each process trains on half of every epoch, the
metrics are gathered over the whole val and test splits (odd-sized here: no image counted twice to even
out the ranks), and only rank 0 writes the run's files."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import train

from cnncli.checkpoint import Checkpoint

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out

DATA = ["data=fake", "data.channels=1", "data.train_size=640", "data.val_size=201", "data.test_size=199"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    train(run_dir, "trainer=ddp_cpu", "trainer.max_epochs=2", *DATA, "data.batch_size=32")
    return run_dir


def evaluate(checkpoint_path, split: str) -> dict:
    """Loss and top-1 of a checkpoint on a whole split, in this one process."""
    checkpoint = Checkpoint(checkpoint_path)
    data = checkpoint.datamodule()
    data.setup()
    model = checkpoint.network()
    images, labels = data.splits[split].__getitems__(list(range(len(data.splits[split]))))
    with torch.no_grad():
        logits = model(images)
    correct = logits.argmax(1) == labels
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "acc1": correct.float().mean().item(),
        "rank0_half_acc1": correct[0::2].float().mean().item(),  # what rank 0 alone would have counted
        "samples": len(labels),
    }


def test_two_processes_split_each_epoch(ddp_run):
    checkpoint = torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * 320 // 32  # 320 images a rank: 10 steps an epoch, not 20


def test_val_and_test_metrics_count_every_image_once(ddp_run):
    summary = json.loads((ddp_run / "summary.json").read_text())
    val = evaluate(ddp_run / "checkpoints" / "last.ckpt", "val")
    assert val["samples"] == 201
    assert val["acc1"] != val["rank0_half_acc1"]  # so the comparison below can tell whole from half
    assert summary["final"]["val/acc1"] == pytest.approx(val["acc1"], abs=1e-6)
    assert summary["final"]["val/loss"] == pytest.approx(val["loss"], rel=1e-5)
    test = evaluate(summary["best_checkpoint"], "test")
    assert summary["test"]["test/acc1"] == pytest.approx(test["acc1"], abs=1e-6)
    assert summary["test"]["test/loss"] == pytest.approx(test["loss"], rel=1e-5)


def test_only_rank_zero_writes_files(ddp_run):
    names = sorted(p.name for p in ddp_run.iterdir())
    assert names == sorted(
        [
            ".hydra",
            ".lock",  # rank 0 holds the run folder (cnncli.runs.claim)
            "checkpoints",
            "config.yaml",
            "curves.png",
            "hparams.yaml",
            "metrics.csv",
            "summary.json",
            "train.log",
        ]
    )  # no second log (train_ddp_process_1.log), no second anything
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    with open(ddp_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows if r["val/loss"]] == [0, 1]  # one writer: each epoch once
    assert [int(r["epoch"]) for r in rows if r["train/loss"]] == [0, 1]
