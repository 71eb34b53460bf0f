"""What keeps a training step cheap: epoch sums added up in batches of steps, a progress bar moved every few
batches, fused optimizers. Each must give exactly what the per-step version gave."""

import pytest
import torch
from conftest import cnncli_here
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import OmegaConf

from cnncli import config_dir
from cnncli.errors import ConfigError
from cnncli.optim import optimization
from cnncli.progress import ProgressBar
from cnncli.tasks.classification import EpochTotals


def direct_sums(losses, logits, labels, top_k):
    """The epoch's sums computed step by step, the obvious way."""
    loss_sum = sum(float(loss) * len(y) for loss, y in zip(losses, labels))
    x, y = torch.cat(logits), torch.cat(labels)
    ranked = x.topk(top_k, dim=1).indices
    return [loss_sum, int((ranked[:, 0] == y).sum()), int((ranked == y[:, None]).any(1).sum()), len(y)]


@pytest.mark.parametrize("num_classes, steps", [(10, 123), (3, 7)])
def test_epoch_totals_equal_the_per_step_sums_across_flushes(num_classes, steps, monkeypatch):
    monkeypatch.setattr(EpochTotals, "FLUSH_LOGITS", 64 * num_classes * 3)  # also flush on size, not only on steps
    generator = torch.Generator().manual_seed(0)
    totals = EpochTotals(num_classes)
    losses, logits, labels = [], [], []
    for step in range(steps):
        size = 1 + step % 64  # ragged batches, as the last one of an epoch
        losses.append(torch.rand((), generator=generator) * 3)
        logits.append(torch.randn(size, num_classes, generator=generator))
        labels.append(torch.randint(num_classes, (size,), generator=generator))
        totals.add(losses[-1], logits[-1], labels[-1])
    assert len(totals.pending) < steps if steps > EpochTotals.FLUSH_STEPS else len(totals.pending) == steps
    totals.flush()
    expected = direct_sums(losses, logits, labels, min(5, num_classes))
    assert totals.sums.tolist() == pytest.approx(expected, rel=1e-6)
    metrics = totals.compute()
    assert float(metrics["acc1"]) == pytest.approx(expected[1] / expected[3])
    if num_classes <= 5:
        assert float(metrics["acc5"]) == 1.0  # top-5 clipped to the classes there are
    totals.reset()
    assert totals.sums.tolist() == [0, 0, 0, 0] and not totals.pending


def test_progress_bar_moves_every_n_batches_and_on_the_last(monkeypatch):
    moved = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, *args: moved.append(args[-1]))
    bar = ProgressBar(every_n_batches=10)
    bar._trainer = type("Trainer", (), {"num_training_batches": 23, "max_epochs": 1, "max_steps": -1})()
    for batch_idx in range(23):
        bar.on_train_batch_end(bar._trainer, None, None, None, batch_idx)
    assert moved == [9, 19, 22]


@pytest.mark.parametrize("value", [0, -3, 2.5, "often"])
def test_progress_bar_refuses_a_bad_interval(value):
    with pytest.raises(ConfigError, match="every_n_batches"):
        ProgressBar(every_n_batches=value)


def test_bad_progress_bar_interval_is_one_line_from_the_cli(tmp_path):
    result = cnncli_here("train", "callbacks.progress_bar.every_n_batches=0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "callbacks.progress_bar.every_n_batches: must be an integer >= 1, got 0" in result.stderr


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_are_fused_by_default_and_match_torch_default_steps(name):
    cfg = OmegaConf.load(config_dir() / "optimizer" / f"{name}.yaml")
    weights = {fused: torch.nn.Parameter(torch.linspace(-1, 1, 50)) for fused in (True, False)}
    optimizers = {
        fused: optimization(OmegaConf.create({"optimizer": OmegaConf.merge(cfg, {"fused": fused})})).configure(
            [("w", w)], head=[], total_steps=5
        )
        for fused, w in weights.items()
    }
    assert optimizers[True].defaults["fused"] is True and not optimizers[False].defaults["fused"]
    for step in range(5):
        for fused, w in weights.items():
            w.grad = torch.sin(w.detach() * (step + 1))
            optimizers[fused].step()
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def test_fused_with_foreach_is_a_one_line_config_error(tmp_path):
    result = cnncli_here("train", "+optimizer.foreach=true", "trainer.max_epochs=1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: optimizer: Adam: `fused` and `foreach` cannot be `True` together" in result.stderr
