"""Experiment trackers: what TensorBoard and MLflow stored, read back with their own readers."""

import json
import os

import pytest
from conftest import QUIET, cnncli

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One run with every logger (logger=many), MLflow in its default local SQLite store."""
    cwd = tmp_path_factory.mktemp("loggers")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = cnncli(
        "train",
        "logger=many",
        "hydra.run.dir=run",
        *QUIET,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.log_every_n_steps=1",
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd, json.loads((cwd / "run" / "summary.json").read_text())


def test_tensorboard_event_files_hold_the_epoch_metrics_and_hyperparameters(tracked_run):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    cwd, summary = tracked_run
    scalars, hparams = {}, {}
    for events in sorted((cwd / "run" / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    for key, v in data.session_start_info.hparams.items():
                        hparams[key] = v.string_value or v.number_value
                elif value.HasField("tensor"):
                    scalars.setdefault(value.tag, []).append(value.tensor.float_val[0])
    assert scalars["val/loss"] == pytest.approx([row["val/loss"] for row in summary["history"]])
    assert scalars["train/acc1"] == pytest.approx([row["train/acc1"] for row in summary["history"]])
    assert hparams["params"] == 61_706 and hparams["optimizer/lr"] == 1e-3
    assert hparams["best_checkpoint"] == summary["best_checkpoint"]


def test_mlflow_store_holds_params_metric_history_and_the_checkpoint_path(tracked_run):
    from mlflow.tracking import MlflowClient

    cwd, summary = tracked_run
    client = MlflowClient(f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cnncli").experiment_id])
    assert run.data.tags["run_dir"] == str(cwd / "run")
    assert run.data.params["params"] == "61706" and run.data.params["model/_target_"] == "cnncli.models.lenet.lenet5"
    assert run.data.params["best_checkpoint"] == summary["best_checkpoint"]
    history = client.get_metric_history(run.info.run_id, "val/acc1")
    assert [m.value for m in history] == pytest.approx([row["val/acc1"] for row in summary["history"]])
    assert run.data.metrics["test/acc1"] == pytest.approx(summary["test"]["test/acc1"])


def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path):
    # mlflow made unimportable, as after `pip install cnncli` without the track extra
    (tmp_path / "hide" / "mlflow").mkdir(parents=True)
    (tmp_path / "hide" / "mlflow" / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    result = cnncli(
        "train", "logger=mlflow", "hydra.run.dir=run", *QUIET, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "hide")}
    )
    assert result.returncode == 1
    expected = 'error: logger.mlflow: its package is not installed; pip install "cnncli[track]"'
    assert result.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "run" / "checkpoints").exists()
