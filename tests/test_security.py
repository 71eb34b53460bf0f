"""A checkpoint or a run folder is untrusted data: nothing read from one names code to run. Each test is an
attack on a real checkpoint, tried as an attacker would: edit what the file stores, save it, hand it over."""

import logging

import pytest
import torch
from conftest import QUIET, cnncli, cnncli_here, edited_checkpoint

from cnncli.checkpoint import Checkpoint
from cnncli.errors import UserError

# attribute walking from an allowed prefix: Hydra would import cnncli.models.lenet, then walk
# .torch.serialization.os.system
WALK = "cnncli.models.lenet.torch.serialization.os.system"


def crafted(short_run, tmp_path, edit) -> str:
    return edited_checkpoint(short_run, tmp_path, lambda data: edit(data["cnncli"]), "crafted.ckpt")


def set_model(target: str, **options):
    def edit(stored):
        stored["config"]["model"] = {"_target_": target, **options}

    return edit


LENET = "cnncli.models.lenet.lenet5"
ATTACKS = {
    "attribute walk from an allowed prefix": set_model(WALK, command="touch PWNED"),
    "any callable": set_model("os.system", command="touch PWNED"),
    "a module attribute the family does not declare": set_model("cnncli.models.lenet.F"),  # torch.nn.functional
    "a module that is no family": set_model("cnncli.models.common.make_activation", name="relu"),
    "nested _target_ in an option": set_model(LENET, variant={"_target_": "os.system", "command": "touch PWNED"}),
    "_partial_": set_model(LENET, _partial_=True),
    "_args_": set_model(LENET, _args_=["touch PWNED"]),
    "a torchvision name with a walk": set_model("torchvision.models.os.system", command="touch PWNED"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_network_is_rebuilt_only_from_the_registry(attack, short_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = Checkpoint(crafted(short_run, tmp_path, ATTACKS[attack]))
    with pytest.raises(UserError, match="refused for safety|is outside cnncli.models"):
        checkpoint.network()
    assert not (tmp_path / "PWNED").exists()


def test_the_data_is_rebuilt_from_its_registry_name_never_from_a_stored_target(short_run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    logging.root.handlers.clear()  # basicConfig only acts on a root logger without handlers

    def edit(stored):
        stored["config"]["data"] = {"_target_": "logging.basicConfig", "filename": str(victim), "filemode": "w"}

    checkpoint = Checkpoint(crafted(short_run, tmp_path, edit))
    with pytest.raises(UserError, match="refused for safety"):
        checkpoint.datamodule()
    assert victim.read_text() == "precious"

    def nested(stored):
        stored["config"]["data"]["augment"] = {"_target_": "os.getcwd"}

    with pytest.raises(UserError, match="refused for safety: data.augment._target_"):
        Checkpoint(crafted(short_run, tmp_path, nested)).datamodule()


def test_an_honest_checkpoint_still_rebuilds_both(short_run):
    checkpoint = Checkpoint(short_run / "checkpoints" / "last.ckpt")
    model = checkpoint.network()
    assert not model.training and sum(p.numel() for p in model.parameters()) == 61_706
    assert checkpoint.datamodule().normalization == checkpoint.normalization


@pytest.mark.parametrize("command", ["eval", "predict", "export", "viz"])
def test_every_command_refuses_the_walk_and_runs_nothing(command, short_run, tmp_path):
    path = crafted(short_run, tmp_path, set_model(WALK, command="touch PWNED"))
    image = short_run / "curves.png"
    args = {
        "eval": ["eval", f"ckpt_path={path}"],
        "predict": ["predict", f"ckpt_path={path}", f"inputs=[{image}]"],
        "export": ["export", f"ckpt_path={path}", "format=torchscript", f"out={tmp_path / 'm.ts'}"],
        "viz": ["viz", "featuremaps", f"ckpt_path={path}", f"image={image}", f"out={tmp_path}"],
    }[command]
    # eval as a user runs it; the others in this process (the same code path after the checkpoint is read)
    result = (cnncli if command == "eval" else cnncli_here)(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "refused for safety" in result.stderr and "trust_model_code=true" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "override",
    [
        "+callbacks.evil._target_=os.system",
        "+logger.evil._target_=builtins.exec",
        "hydra.job_logging.handlers.console.class=os.system",
        "hydra.searchpath=[file:///tmp]",
    ],
)
def test_resume_refuses_stored_overrides_that_name_code(override, short_run, tmp_path):
    """The stored overrides of a run folder are replayed on resume: one that names code is refused."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(short_run, run)
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + f"- {override}\n")
    result = cnncli_here("train", f"resume={run}", *QUIET, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "refused for safety" in result.stderr and override.split("=")[0].lstrip("+") in result.stderr
    assert "Traceback" not in result.stderr


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 4", "pickle protocol 5"])
def test_malicious_starting_weights_are_refused_for_safety_naming_the_global(how, tmp_path):
    """model.weights is read with weights_only too; a plain pickle of a newer protocol stops torch's reader
    before it reaches the global, which is then named from the file's opcodes (nothing is run)."""
    import pickle

    evil = tmp_path / "weights.pt"
    payload = {"0.weight": torch.zeros(6, 1, 5, 5), "code": RunsCode()}
    if how == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    result = cnncli_here("train", f"hydra.run.dir={tmp_path / 'run'}", f"model.weights={evil}", cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: model.weights: refused to load {evil}: it holds Python objects other than")
    assert "refused for safety" in line and "posix.system" in line and "not a PyTorch file" not in line
    assert not (tmp_path / "PWNED").exists()
