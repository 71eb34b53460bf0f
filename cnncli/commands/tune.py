"""cnncli tune: hyperparameter search with Optuna over `cnncli train` runs.

    cnncli tune [hparams_search=NAME] [study.n_trials=N] [train overrides...]

The search space is conf/hparams_search/NAME.yaml: each key a `cnncli train` override, each value an Optuna
distribution. Each trial composes its config from the train defaults, the command's train overrides and
its sampled values (Hydra's compose API), trains into <study folder>/<trial number>/ and reports the
monitored metric after every validation epoch; the pruner (median rule) stops an unpromising trial early.
The study lives in SQLite (study.storage): the same command resumes an interrupted search, several
processes on one storage share the work, and Optuna's own tools (optuna-dashboard) read it. At the end:
the leaderboard of every trial, the best parameters and best.yaml, a config that re-runs the best trial:
`cnncli train --config-dir <study folder> --config-name best`. How: cnncli/tuning.py.
"""

import hydra
from omegaconf import DictConfig

from cnncli import config_dir
from cnncli.errors import ConfigError, reports_user_errors


def validate(cfg: DictConfig) -> None:
    """The study's own numbers, before Optuna and torch load (the storage is checked as it is opened)."""
    n_trials = cfg.study.n_trials
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError("study.n_trials", f"must be an integer >= 1 (the trials the study runs to), got {n_trials!r}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="tune")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    validate(cfg)
    from cnncli.tuning import tune  # Optuna, torch and Lightning load here: --help and --cfg job need none

    tune(cfg)
