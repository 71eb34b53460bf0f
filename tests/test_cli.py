"""The command line as a user meets it: help, dispatch, Hydra's flags, and one-line errors."""

import json
import subprocess
import sys

import pytest
from conftest import cnncli, cnncli_here
from omegaconf import OmegaConf


def test_help_lists_every_subcommand_with_one_line(tmp_path):
    result = cnncli("--help", cwd=tmp_path)
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert {"train", "eval"} <= set(lines)
    assert "ckpt_path" in lines["eval"]


def test_no_arguments_is_a_usage_error_help_is_not(tmp_path):
    result = cnncli_here(cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "subcommands:" in result.stderr and result.stderr.strip().endswith("error: no subcommand given")
    for flag in ("--help", "-h"):
        result = cnncli_here(flag, cwd=tmp_path)
        assert result.returncode == 0 and "subcommands:" in result.stdout and result.stderr == ""


@pytest.mark.parametrize(
    "args, key, form",
    [
        (["eval"], "ckpt_path", "PATH (a checkpoint, such as RUN_FOLDER/checkpoints/best.ckpt)"),
        (
            ["export", "format=torchscript"],
            "ckpt_path",
            "PATH (a checkpoint, such as RUN_FOLDER/checkpoints/best.ckpt)",
        ),
        (["predict", "ckpt_path=any.ckpt"], "inputs", "[FILE_OR_FOLDER,...] (the images to classify)"),
    ],
)
def test_a_missing_mandatory_value_is_one_line_naming_the_key_exit_2(args, key, form, tmp_path):
    result = cnncli_here(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {key}: missing: give {key}={form}"


def test_any_mandatory_value_read_before_it_is_given_is_a_config_error(capsys):
    """The general case (a `???` read by code that does not check it first): omegaconf's
    MissingMandatoryValue becomes one line naming its full key, exit 2."""
    from cnncli.errors import reports_user_errors

    cfg = OmegaConf.create({"data": {"root": "???"}})
    with pytest.raises(SystemExit) as exit_info:
        reports_user_errors(lambda: cfg.data.root)()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: data.root: missing: give data.root=VALUE\n"


def test_unknown_subcommand_is_refused(tmp_path):
    result = cnncli("trian", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown subcommand 'trian'" in result.stderr and "train" in result.stderr


def test_train_help_lists_groups_and_options(tmp_path):
    result = cnncli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "cnncli train" in result.stdout
    for group in ("model:", "data:", "optimizer:", "scheduler:", "augmentation:", "trainer:", "callbacks:", "logger:"):
        assert group in result.stdout
    assert "lenet5, mlp" in result.stdout


def test_cfg_job_prints_composed_config_with_data_interpolated_into_model(tmp_path):
    result = cnncli("train", "model=mlp", "data.image_size=16", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.model._target_ == "cnncli.models.mlp.mlp"
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes) == (1, 16, 10)
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer._partial_ and not cfg.scheduler
    assert not (tmp_path / "outputs").exists()  # printing the config runs nothing


def test_info_describes_the_config_search_path(tmp_path):
    result = cnncli("train", "--info", "searchpath", cwd=tmp_path)
    assert result.returncode == 0 and "Config search path" in result.stdout


def test_unknown_group_option_gets_hydras_list_of_options(tmp_path):
    result = cnncli_here("train", "model=lenet6", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/lenet6'" in result.stderr
    assert "lenet5" in result.stderr and "mlp" in result.stderr


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("model.variant=lenet4", "model.variant"),
    ],
)
def test_bad_value_is_one_line_naming_the_key_exit_2(tmp_path, override, key):
    result = cnncli_here("train", override, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: {key}:")
    assert not list(tmp_path.glob("outputs/train/*/checkpoints"))  # nothing trained, nothing saved


def test_unknown_activation_names_the_allowed_values(tmp_path):
    result = cnncli_here("train", "model=mlp", "model.activation=swish", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: model.activation: 'swish' is not one of: relu, tanh, sigmoid, gelu, silu, elu, leaky_relu"
    )


@pytest.mark.slow
def test_multirun_sweeps_every_combination_into_numbered_folders(tmp_path):
    sweep = tmp_path / "sweep"
    result = cnncli(
        "train",
        "-m",
        "model=lenet5,mlp",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    models = {}
    for run in sorted(sweep.glob("[0-9]")):
        models[run.name] = json.loads((run / "summary.json").read_text())["model"]
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "metrics.csv").is_file()
    assert models == {"0": "cnncli.models.lenet.lenet5", "1": "cnncli.models.mlp.mlp"}
    assert (sweep / "multirun.yaml").is_file()


@pytest.mark.parametrize(("command", "package", "extra"), [("viz", "captum", "viz"), ("tune", "optuna", "tune")])
def test_a_missing_extra_is_named_in_one_line(command, package, extra, monkeypatch, capsys):
    import sys

    from cnncli import cli

    for module in (package, f"{package}.attr"):  # importing them now fails as if they were not installed
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, f"cnncli.commands.{command}", raising=False)
    monkeypatch.setattr(sys, "argv", ["cnncli", command])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == f'error: cnncli {command} needs {package}: pip install "cnncli[{extra}]"'


def test_the_command_exits_without_finalization_but_as_python_exits(tmp_path):
    """cnncli.cli.console skips Python's finalization (about 1 s after a torch import): threads are still
    joined, atexit handlers run and the output flushed, and the exit code is the command's."""
    program = (
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "atexit.register(lambda: Path('atexit.txt').write_text('ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), Path('thread.txt').write_text('joined'))).start()\n"
        "sys.stdout.write('buffered, no newline')\n"
        "sys.argv = ['cnncli', *sys.argv[1:]]\n"
        "from cnncli.cli import console\n"
        "console()\n"
    )
    result = subprocess.run([sys.executable, "-c", program, "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "buffered, no newlinecnncli 0.1.0\n"
    assert (tmp_path / "atexit.txt").read_text() == "ran" and (tmp_path / "thread.txt").read_text() == "joined"
    refused = subprocess.run(
        [sys.executable, "-c", program, "train", "seed=-1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert refused.returncode == 2 and refused.stderr.strip().endswith("seed: must be an integer >= 0, got -1")


def test_output_cut_short_by_its_reader_is_no_traceback(tmp_path):
    """`cnncli params model=vgg16 | head`: the reader may leave before the table is written (`true` leaves at
    once); no traceback, exit 1 (as rich does for the tables it prints; print() gets the same here)."""
    result = subprocess.run(
        "cnncli params model=lenet5 | true; echo ${PIPESTATUS[0]}",
        shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.stderr == "" and result.stdout == "1\n", result.stderr[-2000:]
    plain = subprocess.run(  # the totals below the table are print()ed
        "cnncli params model=lenet5 format=csv | true; echo ${PIPESTATUS[0]}",
        shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert plain.stderr == "" and plain.stdout == "1\n", plain.stderr[-2000:]


def test_hydra_flags_may_come_among_the_overrides():
    from cnncli.cli import flags_last

    assert flags_last(["ckpt_path=x", "-m", "format=onnx,ts"]) == ["ckpt_path=x", "format=onnx,ts", "-m"]
    assert flags_last(["--cfg", "job", "model=mlp", "--resolve"]) == ["model=mlp", "--cfg", "job", "--resolve"]
    assert flags_last(["--info", "a=1", "--info", "defaults", "b=2"]) == ["a=1", "b=2", "--info", "--info", "defaults"]
    assert flags_last(["--config-dir", "myconf", "model=tiny"]) == ["model=tiny", "--config-dir", "myconf"]
