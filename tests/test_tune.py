"""cnncli tune: an Optuna search of 6 trials on digits, killed mid-search and resumed from its SQLite study;
trials pruned by the median rule; the leaderboard; best.yaml re-runs the best trial."""

import csv
import json
import signal
import subprocess
import time

import optuna
import pytest
import yaml
from conftest import QUIET, cnncli, cnncli_here

# Two learning rates: 1e-6 learns nothing in 2 epochs, 3e-3 learns. The seed is fixed, so every 1e-6 trial
# scores the same as the first: once a 3e-3 trial has finished, the median rule prunes each 1e-6 trial.
SPACE = "params:\n  optimizer.lr: {type: categorical, choices: [1.0e-6, 3.0e-3]}\n"
ARGS = [
    "--config-dir",
    "myconf",
    "hparams_search=two_lrs",
    "model=mlp",
    "study.n_trials=6",
    "study.sampler.seed=0",
    "study.pruner.n_startup_trials=1",
    "study.pruner.n_warmup_steps=0",
    "study.heartbeat_s=1",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.threads=1",  # trials of the same rate must score the same (the pruning checks): a fixed count
    "test=false",
    *QUIET,
]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tune")
    (cwd / "myconf" / "hparams_search").mkdir(parents=True)
    (cwd / "myconf" / "hparams_search" / "two_lrs.yaml").write_text(SPACE)
    study_dir = cwd / "outputs" / "tune" / "two_lrs"
    storage = f"sqlite:///{study_dir / 'study.db'}"
    # First process: killed (a real SIGKILL, no clean-up) as soon as trial 2 has its folder: trials 0 and 1 have
    # finished (trials run one after another) and trial 2 has just begun. Watching the folder, not the database:
    # under load, one read of the study took long enough for the rest of the search to end in the meantime.
    first = subprocess.Popen(["cnncli", "tune", *ARGS], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and not (study_dir / "2").is_dir():
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = optuna.load_study(study_name="two_lrs", storage=storage).get_trials()
    time.sleep(2)  # past the heartbeat grace period (2 x study.heartbeat_s)
    # Second process: the same command resumes the study.
    result = cnncli("tune", *ARGS, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return study_dir, killed, optuna.load_study(study_name="two_lrs", storage=storage), result.stdout


@pytest.mark.slow  # the study trains real runs: `pytest -m "not slow"` leaves it out
def test_the_search_resumes_after_a_kill_and_finishes_six_trials(study):
    study_dir, killed, resumed, _ = study
    finished_before = [t for t in killed if t.state in FINISHED]
    assert len(finished_before) >= 2 and len(finished_before) < 6  # killed mid-search
    trials = resumed.get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == 6
    # the trials finished before the kill were kept, not run again
    assert all(trials[t.number].state == t.state and trials[t.number].params == t.params for t in finished_before)
    for trial in trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            summary = json.loads((study_dir / str(trial.number) / "summary.json").read_text())
            assert trial.value == pytest.approx(summary["best"]["val/loss"])


@pytest.mark.slow  # the study trains real runs: `pytest -m "not slow"` leaves it out
def test_unpromising_trials_are_pruned_and_listed_as_pruned(study):
    study_dir, _, resumed, stdout = study
    pruned = resumed.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert pruned
    for trial in pruned:
        assert trial.params == {"optimizer.lr": 1e-6}
        summary = json.loads((study_dir / str(trial.number) / "summary.json").read_text())
        assert summary["status"] == "pruned" and summary["epochs"] == 1 < 2  # stopped after its first epoch
    with open(study_dir / "leaderboard.csv") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert {rows[str(t.number)]["status"] for t in pruned} == {"pruned"}
    assert all(
        rows[str(t.number)]["overrides"] == f"optimizer.lr={t.params['optimizer.lr']!r}"
        for t in resumed.trials
        if t.state in FINISHED
    )
    assert "pruned" in stdout and "best trial" in stdout


@pytest.mark.slow  # the study trains real runs: `pytest -m "not slow"` leaves it out
def test_best_yaml_re_runs_the_best_trial(study):
    study_dir, _, resumed, stdout = study
    assert resumed.best_trial.params == {"optimizer.lr": 3e-3}
    assert f"--config-dir {study_dir} --config-name best" in stdout
    result = cnncli("train", "--config-dir", str(study_dir), "--config-name", "best", "--cfg", "job", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["optimizer"]["lr"] == 3e-3 and config["model"]["_target_"] == "cnncli.models.mlp.mlp"
    assert config["trainer"]["max_epochs"] == 2 and config["test"] is False


# ---- bad values: one line each, before any trial ------------------------------------------------------
@pytest.mark.parametrize("n_trials, shown", [("abc", "'abc'"), ("0", "0"), ("-3", "-3"), ("2.5", "2.5")])
def test_n_trials_must_be_an_integer_of_one_or_more(n_trials, shown, tmp_path):
    result = cnncli_here("tune", f"study.n_trials={n_trials}", f"hydra.run.dir={tmp_path / 'study'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: study.n_trials: must be an integer >= 1 (the trials the study runs to), got {shown}"
    )
    assert not (tmp_path / "study" / "study.db").exists()


def test_a_storage_url_optuna_cannot_use_is_one_line(tmp_path):
    result = cnncli_here("tune", "study.storage=foo://", f"hydra.run.dir={tmp_path / 'study'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: study.storage: 'foo://' is not a database URL (Can't load plugin: sqlalchemy.dialects:foo)"
    )


def test_a_damaged_study_db_is_one_line_and_left_as_it_is(tmp_path):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    garbage = bytes(range(256)) * 64
    (study_dir / "study.db").write_bytes(garbage)
    result = cnncli_here("tune", f"hydra.run.dir={study_dir}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: study.storage=sqlite:///{study_dir / 'study.db'}: cannot open the study's database: "
        "file is not a database"
    )
    assert (study_dir / "study.db").read_bytes() == garbage
    assert [p.name for p in study_dir.iterdir() if p.is_dir()] == []  # no trial started
