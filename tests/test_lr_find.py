"""The learning-rate range test: `cnncli lr-find` and `cnncli train optimizer.lr=auto` on the digits, as a user
runs them (a plot, a suggestion, the rate recorded), the curve's arithmetic in-process, and the clear
messages of a diverging or flat curve."""

import json
import math

import pytest
import yaml
from conftest import QUIET, cnncli, cnncli_here

from cnncli.lr_finder import SKIP_BEGIN, judge, recorded, smooth, steepest
from cnncli.runs import find_runs


class Options:
    min_lr, max_lr = 1e-7, 1.0


def curve(losses: list[float]) -> tuple[list[float], list[float]]:
    lrs = [1e-7 * 10 ** (7 * i / (len(losses) - 1)) for i in range(len(losses))]
    return lrs, losses


def test_smoothing_is_an_unbiased_moving_average():
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)  # a constant loss reads as itself from the first step
    raw = [2.3, 2.1, 1.7, 1.2, float("nan"), 0.5]
    smoothed = smooth(raw)
    assert smoothed[1] == pytest.approx((0.98 * 0.02 * 2.3 + 0.02 * 2.1) / (1 - 0.98**2))
    assert math.isnan(smoothed[4]) and math.isnan(smoothed[5])  # from a diverged step on


def test_the_suggestion_is_the_steepest_fall_before_the_lowest_point():
    # flat, a fall steepest at point 40, its lowest at 60, then divergence (steeper, but after the lowest)
    losses = [2.3] * 30 + [2.3 - 0.02 * i for i in range(10)] + [2.1 - 0.08 * i for i in range(10)]
    losses += [1.3 - 0.01 * i for i in range(20)] + [1.1 + 0.5 * i for i in range(10)]
    lrs, losses = curve(losses)
    suggestion = steepest(lrs, losses)
    assert 40 <= lrs.index(suggestion) <= 48  # in the steep part, before the lowest point (59)
    assert judge(lrs, losses, Options) is None


@pytest.mark.parametrize(
    "losses, message",
    [
        ([2.3] * 8 + [float("nan")] * 40, r"diverged within 10 steps.*lower lr_find.min_lr"),
        ([2.30 + 0.001 * (i % 3) for i in range(100)], r"stayed within 2% of 2\.30.*does not learn at these rates"),
        ([2.3 + 0.02 * i for i in range(100)], r"only rose from 2\.5 .*lower lr_find.min_lr"),
    ],
)
def test_a_diverging_or_flat_curve_is_named(losses, message):
    import re

    lrs, losses = curve(losses)
    assert re.search(message, judge(lrs, losses, Options))


slow = pytest.mark.slow  # trains (a range test is 100 training steps)


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lr_find")
    result = cnncli("lr-find", "hydra.run.dir=test", cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return cwd / "test", result


@slow
def test_lr_find_plots_the_curve_and_suggests_a_rate(found):
    folder, result = found
    data = json.loads((folder / "lr_find.json").read_text())
    assert (folder / "lr_find.png").stat().st_size > 10_000 and (folder / "config.yaml").is_file()
    assert data["steps"] == len(data["lr"]) == len(data["loss"]) == 100  # LeNet-5 on digits: no divergence cut
    assert data["lr"][0] == pytest.approx(1e-7) and data["lr"][-1] == pytest.approx(1.0)
    assert data["loss"] == pytest.approx(smooth(data["raw_loss"]), nan_ok=True)
    assert data["raw_loss"][0] == pytest.approx(math.log(10), abs=0.15)  # an untrained net: chance on 10 classes
    # Adam and LeNet-5: the loss falls between 1e-3 and 1e-1; the suggestion sits in the fall, before the lowest
    assert 1e-3 <= data["suggestion"] <= 3e-2 and data["suggestion"] < data["lowest_loss_lr"]
    at = data["lr"].index(data["suggestion"])
    assert data["loss"][at] < data["loss"][SKIP_BEGIN] - 0.05
    assert f"lr-find: suggested learning rate {data['suggestion']:.3g}" in result.stdout + result.stderr
    assert f"train at it: cnncli train optimizer.lr={data['suggestion']:.3g}" in result.stdout
    assert find_runs(folder.parent) == []  # a range test is no run: `cnncli leaderboard outputs/` leaves it out


@slow
def test_train_lr_auto_trains_at_the_suggestion_and_records_it(tmp_path):
    run = tmp_path / "run"
    result = cnncli("train", f"hydra.run.dir={run}", *QUIET, "optimizer.lr=auto", "scheduler=onecycle",
                    "trainer.max_epochs=2", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    chosen = summary["lr_find"]["suggestion"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["optimizer"]["lr"] == chosen and config["scheduler"]["max_lr"] == chosen  # ${optimizer.lr}
    assert (run / "lr_find.png").is_file() and summary["lr_find"]["plot"] == "lr_find.png"
    assert json.loads((run / "lr_find.json").read_text())["suggestion"] == chosen
    assert recorded(run)["suggestion"] == chosen  # what a resumed run reads instead of testing again
    assert max(row["lr"] for row in summary["history"]) <= chosen * 1.0001  # one-cycle peaks at the rate found


@slow
def test_a_diverging_test_is_one_line_and_keeps_its_curve(tmp_path):
    result = cnncli("lr-find", "hydra.run.dir=div", "lr_find.min_lr=10", "lr_find.max_lr=1000", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: lr-find: the loss diverged within") and "lower lr_find.min_lr (now 10)" in last
    assert (tmp_path / "div" / "lr_find.png").is_file() and "Traceback" not in result.stderr
    run = tmp_path / "auto"
    result = cnncli("train", f"hydra.run.dir={run}", *QUIET, "optimizer.lr=auto", "lr_find.min_lr=10",
                    "lr_find.max_lr=1000", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and "error: lr-find: the loss diverged within" in result.stderr
    assert (run / "lr_find.png").is_file() and not (run / "checkpoints").exists()
    assert find_runs(tmp_path) == [run]  # the failed run is listed, the failed range test is not


@slow
def test_a_sweep_of_range_tests_ends_with_one_table(tmp_path):
    result = cnncli("lr-find", "-m", "model=lenet5,mlp", "lr_find.num_training=40",
                    "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    table = (tmp_path / "sweep" / "lr_find.csv").read_text().splitlines()
    assert table[0] == "job,suggestion,lowest_loss_lr,error" and [row.split(",")[0] for row in table[1:]] == [
        "model=lenet5", "model=mlp"]  # fmt: skip
    assert all(float(row.split(",")[1]) > 0 for row in table[1:])
    assert "model=mlp     " in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("lr_find.max_lr=1e-8",), "error: lr_find.max_lr: must be above lr_find.min_lr=1e-07, got 1e-08"),
        (("lr_find.num_training=5",), "error: lr_find.num_training: must be an integer >= 20, got 5"),
        (("optimizer.lr=fast",), "error: optimizer.lr: must be a number > 0 or auto (a range test chooses it), "
                                  "got 'fast'"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line(tmp_path, args, message):
    result = cnncli_here("lr-find", *args, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (2, message)
