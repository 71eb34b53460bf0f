"""Checkpoints are untrusted input: loading one never runs code, and a broken one is refused clearly."""

import errno
import io
import shutil

import pytest
import torch
from conftest import QUIET, cnncli, cnncli_here, edited_checkpoint

from cnncli import checkpoint as checkpoint_module
from cnncli.errors import UserError


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


def test_missing_ckpt_path_is_one_line(tmp_path):
    result = cnncli_here("eval", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ckpt_path: missing: give ckpt_path=PATH")
    assert len(result.stderr.splitlines()) == 1


def test_eval_on_a_data_set_with_other_classes_is_refused(short_run, tmp_path):
    copy = tmp_path / "c.ckpt"
    shutil.copy(short_run / "checkpoints" / "last.ckpt", copy)
    result = cnncli_here(
        "eval", f"ckpt_path={copy}", "data=digits", "data.num_classes=3", "data.class_names=[a,b,c]", cwd=tmp_path
    )
    assert result.returncode == 1 and "has 3 classes" in result.stderr


def edited_copy(short_run, tmp_path, edit) -> str:
    """The short run's last checkpoint with its weights (state_dict) edited, saved as a new file."""
    return edited_checkpoint(short_run, tmp_path, lambda data: edit(data["state_dict"]))


def commands_reading(path: str, tmp_path) -> dict[str, list[str]]:
    """Every command that loads a checkpoint's weights, on `path` (viz: tests/test_viz.py)."""
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (32, 32), 128).save(image)
    return {
        "eval": ["eval", f"ckpt_path={path}", f"out={tmp_path / 'eval'}"],
        "export": ["export", f"ckpt_path={path}", "format=torchscript", f"out={tmp_path / 'm.ts'}"],
        "predict": ["predict", f"ckpt_path={path}", f"inputs=[{image}]"],
    }


def test_an_eval_out_that_cannot_be_a_folder_is_one_line(tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("keep")
    for out, line in (
        (note, f"out={note} is a file, not a folder"),
        (note / "e", f"out={note / 'e'}: {note} is a file, not a folder"),
    ):
        result = cnncli_here("eval", f"ckpt_path={tmp_path / 'any.ckpt'}", f"out={out}", cwd=tmp_path)
        assert result.returncode == 1 and result.stderr == f"error: {line}\n"
    assert note.read_text() == "keep"


def test_weights_of_the_wrong_shape_are_one_line_in_every_command(short_run, tmp_path):
    def wrong_shape(state):
        state["model.0.weight"] = torch.zeros(7, 1, 5, 5)  # LeNet-5's C1 has 6 filters

    path = edited_copy(short_run, tmp_path, wrong_shape)
    for command, args in commands_reading(path, tmp_path).items():
        result = cnncli_here(*args, cwd=tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith(
            f"error: {path}: the stored weights do not fit the stored model (size mismatch for 0.weight"
        )
    assert not (tmp_path / "eval").exists() and not (tmp_path / "m.ts").exists()


def test_weights_that_are_not_finite_are_refused_in_every_command(short_run, tmp_path):
    def nan(state):
        state["model.3.weight"][0, 0, 0, 0] = float("nan")

    path = edited_copy(short_run, tmp_path, nan)
    for command, args in commands_reading(path, tmp_path).items():
        result = cnncli_here(*args, cwd=tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr == (
            f"error: {path}: the stored weights are not finite (3.weight holds 1 nan or inf values of 2400): "
            "the run that saved them diverged\n"
        )
    assert not (tmp_path / "eval").exists()


def test_eval_refuses_outputs_that_overflow(short_run, tmp_path):
    def huge(state):
        state["model.13.weight"].fill_(3e38)  # finite, but the logits overflow to inf, the loss to nan

    path = edited_copy(short_run, tmp_path, huge)
    result = cnncli_here("eval", f"ckpt_path={path}", f"out={tmp_path / 'eval'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {path}: the network's outputs are not finite (nan or inf) for 270 of 270 test images: "
        "its weights overflow\n"
    )
    assert not (tmp_path / "eval").exists()


def test_a_directory_given_as_a_checkpoint_says_so(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    result = cnncli_here("eval", f"ckpt_path={folder}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: checkpoint: {folder} is a directory, not a checkpoint file\n"
    (folder / "x.png").write_bytes(b"")  # predict lists its inputs first
    result = cnncli_here("predict", f"model_file={folder}", f"inputs=[{folder}]", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: model_file: {folder} is a directory, not an .onnx file\n"
    result = cnncli_here("train", f"hydra.run.dir={tmp_path / 'out'}", f"model.weights={folder}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: model.weights: {folder} is a directory, not a checkpoint file\n"


class FullDisk(io.FileIO):
    """A file on a disk that fills up after `room` bytes: a write past it fails with ENOSPC."""

    def __init__(self, path, mode, room=1000):
        super().__init__(path, mode)
        self.room = room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin = checkpoint_module.AtomicCheckpointIO()
    io_plugin.save_checkpoint({"epoch": 1, "weights": torch.zeros(10)}, last)
    before = last.read_bytes()
    monkeypatch.setattr(checkpoint_module, "open", FullDisk, raising=False)  # the module's open(), not builtins'
    with pytest.raises(UserError) as error:
        io_plugin.save_checkpoint({"epoch": 2, "weights": torch.zeros(100_000)}, last)
    assert str(error.value) == f"cannot write checkpoint {last}: No space left on device"
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no .last.ckpt.partial


def test_a_failed_save_leaves_trainer_fit_as_that_user_error(tmp_path, monkeypatch):
    """Lightning calls the checkpoint IO from its callbacks and re-raises what it raises after its
    on_exception hooks: `cnncli train` gets the UserError, so the user gets its one line."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    monkeypatch.setattr(checkpoint_module, "open", FullDisk, raising=False)
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
        plugins=[checkpoint_module.AtomicCheckpointIO()], logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    with pytest.raises(UserError, match=r"cannot write checkpoint .*\.ckpt: No space left on device"):
        trainer.fit(BoringModel())
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_ends_cnncli_train_in_one_line(tmp_path):
    """The same end to end: the name the save writes first is taken by a folder, so the first write fails."""
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / ".best.ckpt.partial").mkdir(parents=True)
    result = cnncli(
        "train", f"hydra.run.dir={tmp_path / 'run'}", f"callbacks.model_checkpoint.dirpath={checkpoints}", *QUIET,
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert errors == [
        f"error: cannot write checkpoint {checkpoints / 'best.ckpt'}: Is a directory "
        f"({checkpoints / '.best.ckpt.partial'})"
    ]


def test_eval_on_an_image_folder_with_other_classes_is_one_line(short_run, tmp_path):
    from PIL import Image

    for name in ("a", "b", "c"):  # 3 class folders; the checkpoint's LeNet-5 predicts 10 digits
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "images" / name / "0.png")
    ckpt = short_run / "checkpoints" / "best.ckpt"
    result = cnncli_here("eval", f"ckpt_path={ckpt}", "data=imagefolder", f"data.root={tmp_path / 'images'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "error: data 'imagefolder' has 3 classes; the checkpoint's model predicts 10"
