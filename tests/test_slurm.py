"""`cnncli train -m hydra/launcher=slurm`: the config composes, and hydra-submitit-launcher's own launcher
builds and submits the sbatch job array. There is no cluster here: `sbatch` and `srun` are stand-in scripts
on PATH, and the jobs' results are not awaited."""

import os
import stat

import hydra.utils
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

import cnncli
from cnncli.errors import UserError

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra: pip install 'cnncli[slurm]'")
submitit = pytest.importorskip("submitit")

OVERRIDES = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.gpus_per_node=4",
    "trainer=ddp",
    "trainer.num_nodes=2",
]


def test_the_config_composes_with_cnncli_defaults_and_follows_the_trainer():
    with initialize_config_dir(str(cnncli.config_dir()), version_base="1.3", job_name="train"):
        plain = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
        multi_node = compose("train", overrides=OVERRIDES, return_hydra_config=True).hydra.launcher
    assert plain._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (plain.nodes, plain.gpus_per_node, plain.tasks_per_node, plain.timeout_min) == (1, 1, 1, 240)
    assert plain.partition is None and plain.name == "train"
    # nodes follow trainer.num_nodes, tasks per node the GPUs per node: one process per GPU
    assert (multi_node.nodes, multi_node.gpus_per_node, multi_node.tasks_per_node) == (2, 4, 4)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` that answers as SLURM does (the script stays in submitit's folder) and an `srun` to be found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("srun", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(submitit.core.core.Job, "results", lambda self: ["(not run: no cluster)"])


def test_the_launcher_submits_an_sbatch_array_with_the_configured_resources(tmp_path, fake_slurm):
    sweep = tmp_path / "sweep"
    with initialize_config_dir(str(cnncli.config_dir()), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=[*OVERRIDES, f"hydra.sweep.dir={sweep}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        launcher = hydra.utils.instantiate(cfg.hydra.launcher)
        launcher.setup(hydra_context=None, task_function=None, config=cfg)
        returns = launcher.launch([["model=lenet5"], ["model=mlp"]], initial_job_idx=0)
    assert returns == ["(not run: no cluster)"] * 2

    script = (sweep / ".submitit" / "4242" / "4242_submission.sh").read_text()
    for line in (
        "#SBATCH --array=0-1%2",  # the two runs of the sweep, as one job array
        "#SBATCH --nodes=2",  # from trainer.num_nodes
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --job-name=train",
    ):
        assert line in script.splitlines(), line
    assert "-m submitit.core._submit" in script

    # each array task runs the launcher on its own overrides
    for index, overrides in enumerate((["model=lenet5"], ["model=mlp"])):
        job = submitit.helpers.DelayedSubmission.load(
            sweep / ".submitit" / f"4242_{index}" / f"4242_{index}_submitted.pkl"
        )
        assert job.args[0] == overrides and job.function.params["nodes"] == 2


def test_without_the_plugin_the_slurm_launcher_is_a_one_line_install_hint(monkeypatch):
    import importlib.util

    from cnncli.commands import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "submitit" in name else real(name, *a))
    with pytest.raises(UserError, match=r'pip install "cnncli\[slurm\]"'):
        train.check_launcher(["-m", "hydra/launcher=slurm", "model=mlp"])
    train.check_launcher(["-m", "model=mlp"])  # the basic launcher needs no plugin
