"""What each command imports: a command line that only reads its config (--help, --cfg job, --info, a value
refused by validation) loads no torch, `cnncli params` no Lightning, a run on data that carves no split no
scikit-learn. Read from the process itself (tests/conftest.py cnncli_imports); the seconds they save are
measured by benchmarks/startup.py, not here."""

import pytest
from conftest import cnncli_imports

HEAVY = {"torch", "torchvision", "lightning", "torchmetrics", "matplotlib", "sklearn", "onnx", "onnxruntime",
         "optuna", "captum"}  # fmt: skip
HYDRA_COMMANDS = ["train", "eval", "params", "predict", "export", "tune", "viz cam", "data show"]


@pytest.mark.parametrize("command", [*HYDRA_COMMANDS, "leaderboard", "compare"])
def test_help_imports_nothing_heavy(command, tmp_path):
    result, imported = cnncli_imports(*command.split(), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() and not HEAVY & imported


@pytest.mark.parametrize("command", HYDRA_COMMANDS)
def test_the_composed_config_imports_nothing_heavy(command, tmp_path):
    result, imported = cnncli_imports(*command.split(), "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "_target_" in result.stdout or "ckpt_path" in result.stdout
    assert not HEAVY & imported
    info, imported = cnncli_imports(*command.split(), "--info", cwd=tmp_path)
    assert info.returncode == 0 and "Config search path" in info.stdout and not HEAVY & imported


def test_a_sweep_shows_each_jobs_config_without_torch(tmp_path):
    """Hydra itself refuses -m with --cfg; cnncli prints the config of every job of the sweep."""
    result, imported = cnncli_imports(
        "train", "-m", "model=mlp,lenet5", "optimizer.lr=0.1,0.01", "--cfg", "job", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    headers = [line for line in result.stdout.splitlines() if line.startswith("# job ")]
    assert headers == [
        "# job 0: model=mlp optimizer.lr=0.1",
        "# job 1: model=mlp optimizer.lr=0.01",
        "# job 2: model=lenet5 optimizer.lr=0.1",
        "# job 3: model=lenet5 optimizer.lr=0.01",
    ]
    assert result.stdout.count("_target_: cnncli.models.mlp.mlp") == 2 and "lr: 0.01" in result.stdout
    assert not HEAVY & imported and not (tmp_path / "outputs").exists()
    wrong, _ = cnncli_imports("train", "-m", "model=mlp,lenet5", "--cfg", "hydra", cwd=tmp_path)
    assert wrong.returncode == 1 and wrong.stderr.strip() == (
        "error: with -m, --cfg shows each job's config: --cfg job (not 'hydra')"
    )


def test_a_bad_value_is_refused_before_torch_loads(tmp_path):
    result, imported = cnncli_imports("train", "optimizer.lr=-1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "optimizer.lr: must be a number > 0 or auto (a range test chooses it), got -1"
    )
    assert not HEAVY & imported


def test_params_loads_torch_and_only_what_the_model_needs(tmp_path):
    result, imported = cnncli_imports("params", "model=lenet5", cwd=tmp_path)
    assert result.returncode == 0 and "61,706" in result.stdout, result.stderr[-2000:]
    assert "torch" in imported and not {"torchvision", "lightning", "torchmetrics", "sklearn"} & imported
    result, imported = cnncli_imports("params", "model=resnet18", "format=json", cwd=tmp_path)
    assert result.returncode == 0 and "torchvision" in imported and "lightning" not in imported


def test_training_on_data_that_carves_no_split_imports_no_scikit_learn(tmp_path):
    result, imported = cnncli_imports(
        "train", "data=fake", "model=mlp", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lightning" in imported and not {"sklearn", "onnx", "onnxruntime", "optuna", "captum"} & imported
