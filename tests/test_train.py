"""Training end to end through the CLI: the files of a run, their numbers, eval parity, determinism."""

import csv
import json

import pytest
from conftest import cnncli, train

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out


def read_metrics(run_dir):
    """metrics.csv as {epoch: {metric: value}}: Lightning writes train and val rows separately, and the
    test row (logged after fitting) under one epoch past the last."""
    epochs: dict[int, dict] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row["epoch"] and not row.get("test/loss"):
                epochs.setdefault(int(row["epoch"]), {}).update({k: float(v) for k, v in row.items() if v})
    return epochs


def test_default_run_reaches_95_percent_and_writes_every_file(default_run):
    summary = json.loads((default_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["model"] == "cnncli.models.lenet.lenet5" and summary["data"] == "digits"
    assert summary["params"] == 61_706
    assert summary["test"]["test/acc1"] >= 0.95
    threads = summary["threads"]  # trainer.threads=auto: timed the first steps on 1 and 2 threads (or respected OMP)
    assert threads["chosen_by"] in ("the fastest of the first steps", "OMP_NUM_THREADS=1") or threads["cores"] == 1
    assert summary["test"]["test/acc5"] >= summary["test"]["test/acc1"]
    for name in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv", "train.log"):
        assert (default_run / name).is_file(), name
    assert (default_run / "checkpoints" / "best.ckpt").is_file() and (
        default_run / "checkpoints" / "last.ckpt"
    ).is_file()
    assert summary["best_checkpoint"] == str(default_run / "checkpoints" / "best.ckpt")
    # early stopping ended it (patience 8 after the best epoch), before max_epochs, and the summary says when
    assert summary["epochs"] < 30 and summary["stopped_early_at"] == summary["final"]["epoch"]
    assert summary["best"]["epoch"] == summary["final"]["epoch"] - 8
    assert [row["epoch"] for row in summary["history"]] == list(range(summary["epochs"]))
    png = (default_run / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    stdout = (default_run / "stdout.txt").read_text()
    assert "best checkpoint:" in stdout and f"{summary['test']['test/acc1']:.4f}" in stdout


def test_metrics_csv_has_every_epoch_and_agrees_with_the_summary(default_run):
    summary = json.loads((default_run / "summary.json").read_text())
    epochs = read_metrics(default_run)
    assert sorted(epochs) == list(range(summary["epochs"]))
    for epoch in epochs.values():
        assert {"train/loss", "train/acc1", "train/acc5", "val/loss", "val/acc1", "val/acc5"} <= set(epoch)
    last = epochs[summary["epochs"] - 1]
    assert last["val/loss"] == pytest.approx(summary["final"]["val/loss"], rel=1e-6)
    assert last["train/acc1"] == pytest.approx(summary["final"]["train/acc1"], rel=1e-6)
    best = epochs[summary["best"]["epoch"]]
    assert best["val/loss"] == pytest.approx(min(e["val/loss"] for e in epochs.values()), rel=1e-6)
    assert epochs[0]["train/loss"] > 3 * last["train/loss"]  # it learned


def test_saved_config_is_the_resolved_run_config(default_run):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(default_run / "config.yaml")
    assert cfg.model.in_channels == 1 and cfg.model.image_size == 32 and cfg.model.num_classes == 10
    assert cfg.callbacks.model_checkpoint.dirpath == str(default_run / "checkpoints")


def test_eval_reproduces_the_test_accuracy_printed_by_train(default_run, tmp_path):
    summary = json.loads((default_run / "summary.json").read_text())
    result = cnncli("eval", f"ckpt_path={summary['best_checkpoint']}", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert evaluation["test/acc1"] == pytest.approx(summary["test"]["test/acc1"], abs=1e-4)
    assert evaluation["test/acc5"] == pytest.approx(summary["test"]["test/acc5"], abs=1e-4)
    assert evaluation["test/loss"] == pytest.approx(summary["test"]["test/loss"], abs=1e-4)
    per_class = evaluation["per_class"]
    assert sorted(per_class) == [str(i) for i in range(10)]
    assert sum(c["support"] for c in per_class.values()) == evaluation["samples"] == 270
    correct = sum(round(c["recall"] * c["support"]) for c in per_class.values())
    assert correct / 270 == pytest.approx(evaluation["test/acc1"], abs=1e-6)
    assert sum(map(sum, evaluation["confusion_matrix"])) == 270
    assert (tmp_path / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert "precision" in result.stdout and f"{evaluation['test/acc1']:.4f}" in result.stdout


def test_eval_writes_beside_the_run_by_default(short_run):
    result = cnncli("eval", f"ckpt_path={short_run / 'checkpoints' / 'last.ckpt'}", cwd=short_run.parent)
    assert result.returncode == 0, result.stderr
    assert (short_run / "eval.json").is_file() and (short_run / "confusion_matrix.png").is_file()
    assert not (short_run.parent / "outputs").exists()


def test_same_seed_deterministic_runs_give_identical_metrics(tmp_path):
    overrides = ("trainer.max_epochs=3", "trainer.deterministic=true", "seed=7", "model=mlp")
    first = read_metrics(tmp_path / "a") if train(tmp_path / "a", *overrides) else None
    second = read_metrics(tmp_path / "b") if train(tmp_path / "b", *overrides) else None
    assert first == second
    other_seed = train(tmp_path / "c", *overrides[:2], "seed=8", "model=mlp")
    assert other_seed["final"]["val/loss"] != first[2]["val/loss"]


def test_early_stopping_ends_the_run_when_val_loss_stalls(tmp_path):
    # With a huge min_delta no epoch counts as an improvement: patience 1 stops after the second epoch.
    summary = train(
        tmp_path / "run", "model=mlp", "callbacks.early_stopping.min_delta=100", "callbacks.early_stopping.patience=1"
    )
    assert summary["epochs"] == 2


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rmsprop"])
def test_each_optimizer_trains(tmp_path, optimizer):
    summary = train(
        tmp_path / "run",
        f"optimizer={optimizer}",
        "scheduler=onecycle",
        "trainer.max_epochs=2",
        "model=mlp",
        "label_smoothing=0.1",
        "optimizer.l1=1e-5",
    )
    assert summary["final"]["val/acc1"] > 0.5  # ten classes: chance is 0.1


def test_runs_on_a_two_class_subset_where_top5_is_clipped(tmp_path):
    """A data set with fewer than five classes still reports top-5 (clipped to top-2, so always 1)."""
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "two.yaml").write_text(
        "defaults:\n  - digits\n  - _self_\n_target_: twodigits.TwoDigits\nnum_classes: 2\nclass_names: ['0', '1']\n"
    )
    (tmp_path / "twodigits.py").write_text(
        "from cnncli.data.digits import DigitsDataModule\n\n"
        "class TwoDigits(DigitsDataModule):\n"
        "    def load(self):\n"
        "        return {s: (x[y < 2], y[y < 2]) for s, (x, y) in super().load().items()}\n"
    )
    summary = train(
        tmp_path / "run",
        "data=two",
        "trainer.max_epochs=2",
        cwd=tmp_path,
        flags=("--config-dir", str(tmp_path / "conf")),
    )
    assert summary["final"]["val/acc5"] == 1.0 and summary["test"]["test/acc1"] > 0.9
