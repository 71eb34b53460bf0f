"""A user adds a model and a data set of their own in their own config folder, without forking cnncli."""

import json

import pytest
from conftest import QUIET, cnncli

MODEL = """
from torch import nn

def tiny_cnn(in_channels, num_classes, image_size, width=8):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(width * (image_size // 2) ** 2, num_classes),
    )
"""


@pytest.mark.slow
def test_own_config_dir_adds_a_model_and_a_data_variant(tmp_path):
    conf = tmp_path / "myconf"
    (conf / "model").mkdir(parents=True)
    (conf / "data").mkdir()
    (tmp_path / "mynets.py").write_text(MODEL)
    (conf / "model" / "tiny_cnn.yaml").write_text(
        "_target_: mynets.tiny_cnn\nin_channels: ${data.channels}\nnum_classes: ${data.num_classes}\n"
        "image_size: ${data.image_size}\nwidth: 4\n"
    )
    (conf / "data" / "digits16.yaml").write_text("defaults:\n  - digits\n  - _self_\nimage_size: 16\n")

    help_text = cnncli("train", "--config-dir", str(conf), "--help", cwd=tmp_path).stdout
    assert "tiny_cnn" in help_text and "digits16" in help_text and "lenet5" in help_text

    run = tmp_path / "run"
    result = cnncli(
        "train",
        "--config-dir",
        str(conf),
        "model=tiny_cnn",
        "data=digits16",
        "trainer.max_epochs=2",
        f"hydra.run.dir={run}",
        *QUIET,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "mynets.tiny_cnn"
    assert summary["params"] == (1 * 9 * 4 + 4) + (4 * 8 * 8 * 10 + 10)  # conv + dense at 16x16 input
    assert summary["final"]["val/acc1"] > 0.5


def test_searchpath_override_adds_the_folder_too(tmp_path):
    conf = tmp_path / "more"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "mlp_wide.yaml").write_text("defaults:\n  - mlp\n  - _self_\nhidden: [512, 256]\n")
    result = cnncli(
        "train", f"hydra.searchpath=[file://{conf}]", "model=mlp_wide", "--cfg", "job", "--resolve", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "- 512" in result.stdout and "cnncli.models.mlp.mlp" in result.stdout


def test_a_sweep_shown_with_cfg_job_finds_the_users_config_folder_too(tmp_path):
    from conftest import cnncli_here

    (tmp_path / "myconf" / "model").mkdir(parents=True)
    (tmp_path / "myconf" / "model" / "tiny.yaml").write_text(
        "_target_: cnncli.models.mlp.mlp\nin_channels: ${data.channels}\nnum_classes: ${data.num_classes}\n"
        "image_size: ${data.image_size}\nhidden: [7]\n"
    )
    shown = cnncli_here("train", "-m", "--config-dir", "myconf", "model=tiny,lenet5", "--cfg", "job", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    jobs = shown.stdout.split("# job ")[1:]
    assert [job.splitlines()[0] for job in jobs] == ["0: model=tiny", "1: model=lenet5"]
    assert "hidden:\n  - 7" in jobs[0] and "cnncli.models.lenet.lenet5" in jobs[1]  # theirs, and ours
    unknown = cnncli_here("train", "-m", "model=nope,mlp", "--cfg", "job", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.strip() == "error: In 'train': Could not find 'model/nope'"
