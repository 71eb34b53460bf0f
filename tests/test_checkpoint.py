"""Checkpoints are untrusted input: loading one never runs code, and a broken one is refused clearly."""

import shutil

import torch
from conftest import cnncli_here


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "cnncli": RunsCode()}, evil)
    result = cnncli_here("eval", f"ckpt_path={evil}", cwd=tmp_path)
    assert result.returncode == 1
    assert "refused to load" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_naming_an_arbitrary_builder_is_refused(short_run, tmp_path):
    checkpoint = torch.load(short_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["cnncli"]["config"]["model"] = {"_target_": "os.system", "command": "touch PWNED"}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    result = cnncli_here("eval", f"ckpt_path={crafted}", cwd=tmp_path)
    assert result.returncode == 1
    assert "outside cnncli.models" in result.stderr and "trust_model_code=true" in result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_truncated_checkpoint_is_refused_and_the_original_is_untouched(short_run, tmp_path):
    original = short_run / "checkpoints" / "last.ckpt"
    before = original.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(before[: len(before) // 2])
    result = cnncli_here("eval", f"ckpt_path={truncated}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot read checkpoint {truncated}" in result.stderr and "Traceback" not in result.stderr
    assert original.read_bytes() == before


def test_missing_and_foreign_checkpoints(tmp_path):
    result = cnncli_here("eval", f"ckpt_path={tmp_path / 'nope.ckpt'}", cwd=tmp_path)
    assert result.returncode == 1 and "checkpoint not found" in result.stderr
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    result = cnncli_here("eval", f"ckpt_path={foreign}", cwd=tmp_path)
    assert result.returncode == 1 and "is not a cnncli checkpoint" in result.stderr


def test_missing_ckpt_path_is_reported_by_hydra(tmp_path):
    result = cnncli_here("eval", cwd=tmp_path)
    assert result.returncode != 0 and "ckpt_path" in result.stderr


def test_eval_on_a_data_set_with_other_classes_is_refused(short_run, tmp_path):
    copy = tmp_path / "c.ckpt"
    shutil.copy(short_run / "checkpoints" / "last.ckpt", copy)
    result = cnncli_here(
        "eval", f"ckpt_path={copy}", "data=digits", "data.num_classes=3", "data.class_names=[a,b,c]", cwd=tmp_path
    )
    assert result.returncode == 1 and "has 3 classes" in result.stderr
