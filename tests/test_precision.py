"""Precision and speed knobs, a few steps each on the CPU: bf16 mixed precision, gradient accumulation,
torch.compile and channels-last memory layout; and the one-line errors for values that cannot work."""

import json

import pytest
import torch
from conftest import cnncli, cnncli_here

from cnncli.checkpoint import network_weights as model_state_dict


@pytest.fixture(scope="module")
def knobs_run(tmp_path_factory):
    """All four knobs in one run: 2 epochs of 6 batches, an optimizer step every 2 batches. compile uses the
    aot_eager backend: dynamo and AOTAutograd trace the network as inductor does, without inductor's C++
    build (over a minute on a 2-core CPU; `compile=true` is inductor)."""
    run_dir = tmp_path_factory.mktemp("knobs") / "run"
    overrides = [
        "trainer.precision=bf16-mixed",
        "trainer.accumulate_grad_batches=2",
        "compile=aot_eager",
        "channels_last=true",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
    ]
    result = cnncli(
        "train",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
        *overrides,
        cwd=run_dir.parent,
        env={"TORCH_LOGS": "dynamo"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, result


@pytest.mark.slow
def test_accumulated_bf16_run_steps_once_per_two_batches_and_learns(knobs_run):
    run_dir, _ = knobs_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * 6 // 2
    summary = json.loads((run_dir / "summary.json").read_text())
    first, last = summary["history"]
    assert last["train/loss"] < first["train/loss"] and last["val/loss"] < first["val/loss"]
    assert 0 < summary["test"]["test/loss"] < 2.3  # below chance (ln 10 = 2.303), and finite
    assert summary["test"]["test/acc1"] > 0.2


def test_network_was_compiled_and_its_checkpoint_is_a_plain_one(knobs_run):
    run_dir, result = knobs_run
    assert "calling compiler function aot_eager" in result.stderr  # torch.compile's log (TORCH_LOGS=dynamo)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    weights = model_state_dict(checkpoint)
    assert not any("_orig_mod" in key for key in weights)  # loads into the plain network: eval, export work
    from cnncli.models.lenet import lenet5

    lenet5(in_channels=1, num_classes=10, image_size=32).load_state_dict(weights)
    assert weights["0.weight"].is_contiguous(memory_format=torch.channels_last)  # NHWC weights
    assert weights["0.weight"].dtype == torch.float32  # mixed precision keeps float32 weights


def test_bad_precision_lists_the_allowed_values(tmp_path):
    result = cnncli_here("train", "trainer.precision=fp8", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: trainer.precision: 'fp8' is not one of: 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true"
    )
    assert not list(tmp_path.glob("outputs/train/*/config.yaml"))  # stopped before the run wrote anything


def test_float16_mixed_precision_needs_a_gpu(tmp_path):
    result = cnncli_here("train", "trainer=cpu", "trainer.precision=16-mixed", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: trainer.precision: 16-mixed needs a GPU; on CPU use bf16-mixed or 32-true"
    assert not list(tmp_path.glob("outputs/train/*/config.yaml"))
