"""trainer.threads: a fixed count, the user's OMP_NUM_THREADS, or `auto`, which times the first training
steps on 1, 2, 4, ... threads in turns and keeps the fastest (cnncli.trainer.ThreadChoice). The seconds
this saves on an idle and a busy machine are measured by benchmarks/threads.py."""

import pytest
import torch
from omegaconf import OmegaConf

from cnncli import trainer
from cnncli.config import validate_train_config
from cnncli.errors import ConfigError


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    for name in trainer.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def config(threads="auto", **trainer_options):
    return OmegaConf.create({"trainer": {"threads": threads, "accelerator": "cpu", "devices": 1, **trainer_options}})


def test_a_fixed_count_is_set_and_recorded():
    choice = trainer.ThreadChoice(config(threads=1), workers=0)
    assert torch.get_num_threads() == 1 and choice.result == {"threads": 1, "chosen_by": "trainer.threads"}


def test_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(2)
    choice = trainer.ThreadChoice(config(), workers=0)
    assert torch.get_num_threads() == 2 and choice.result == {"threads": 2, "chosen_by": "OMP_NUM_THREADS=3"}


def test_gpu_and_ddp_runs_keep_torchs_threads():
    for cfg in (config(accelerator="gpu"), config(strategy="ddp", devices=2)):
        assert trainer.ThreadChoice(cfg, workers=0).result["chosen_by"] == "torch (a GPU or DDP run)"


def test_auto_times_each_candidate_in_turns_and_keeps_the_fastest(monkeypatch):
    """8 cores, 2 of them for DataLoader workers: 1, 2, 4 and 6 threads are tried in turns; the steps are
    made fastest on 4 threads; a count 2x slower after a step (1, 2), or 1.5x after two (6), is dropped."""
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: set(range(8)))
    choice = trainer.ThreadChoice(config(), workers=2, steps=5)
    assert choice.candidates == [1, 2, 4, 6] and torch.get_num_threads() == 1  # the untimed first step
    seconds = {1: 0.004, 2: 0.003, 4: 0.001, 6: 0.002}
    now, used = [0.0], []
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: now[0])  # each step lasts what its count costs
    for _ in range(40):
        if not choice.timing:
            break
        used.append(torch.get_num_threads())
        now[0] += seconds[torch.get_num_threads()]
        choice.on_train_batch_end(None, None, None, None, 0)
    assert used[:5] == [1, 1, 2, 4, 6] and used[5:] == [4, 6, 4, 4, 4]  # the untimed step, then in turns
    assert {n: len(t) for n, t in choice.times.items()} == {1: 1, 2: 1, 4: 5, 6: 2}
    assert choice.result["threads"] == 4 and torch.get_num_threads() == 4
    assert choice.result["step_ms"] == {1: 4.0, 2: 3.0, 4: 1.0, 6: 2.0}  # medians of the steps each had
    assert choice.result["chosen_by"] == "the fastest of the first steps"
    assert (choice.result["cores"], choice.result["workers"]) == (8, 2)


def test_validation_between_epochs_is_not_a_step(monkeypatch):
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: {0, 1})
    choice = trainer.ThreadChoice(config(), workers=0, steps=1)
    choice.on_train_batch_end(None, None, None, None, 0)
    choice.on_train_epoch_end(None, None)  # a long validation would follow here
    choice.on_train_batch_end(None, None, None, None, 0)
    assert choice.timing and choice.times == {1: [], 2: []}


def test_a_bad_count_is_one_line():
    with pytest.raises(ConfigError, match=r"^trainer.threads: must be an integer >= 1, got 0$"):
        validate_train_config(OmegaConf.create({"trainer": {"threads": 0}}))


def test_more_threads_must_be_more_than_10_percent_faster(monkeypatch):
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: {0, 1})
    for two_threads, chosen in ((0.0095, 1), (0.0085, 2)):  # one thread: 10 ms a step
        choice = trainer.ThreadChoice(config(), workers=0, steps=3)
        now = [0.0]
        monkeypatch.setattr(trainer.time, "perf_counter", lambda now=now: now[0])
        while choice.timing:
            now[0] += {1: 0.010, 2: two_threads}[torch.get_num_threads()]
            choice.on_train_batch_end(None, None, None, None, 0)
        assert choice.result["threads"] == chosen and torch.get_num_threads() == chosen


def test_a_deterministic_run_is_not_timed(monkeypatch):
    """Float sums change with the thread count: a run that must repeat exactly uses the cores left, untimed."""
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: set(range(4)))
    choice = trainer.ThreadChoice(config(deterministic=True), workers=1)
    assert not choice.timing and torch.get_num_threads() == 3
    assert choice.result == {
        "cores": 4,
        "workers": 1,
        "threads": 3,
        "chosen_by": "trainer.deterministic: the cores left, not timed",
    }
