"""The search behind `cnncli tune` (the command, its usage and what it writes: cnncli/commands/tune.py):
the search space checked as Optuna distributions, each trial's train config composed with Hydra's compose
API, the pruning callback, the SQLite study and, at the end, the leaderboard and best.yaml."""

import sys
import warnings
from pathlib import Path

import lightning as L
import optuna
import sqlalchemy.exc
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from cnncli.commands.train import train
from cnncli.config import call_target
from cnncli.errors import ConfigError, UserError, check_choice
from cnncli.leaderboard import write_leaderboard
from cnncli.runs import record_failure, write_overrides, write_summary

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval

TUNE_KEYS = ("hparams_search", "study")  # tune.yaml's own keys; every other override goes to each trial
# a search-space entry {type: KIND, ...}: its other keys are the arguments of trial.suggest_<kind>
DISTRIBUTIONS = {
    "float": optuna.distributions.FloatDistribution,
    "int": optuna.distributions.IntDistribution,
    "categorical": optuna.distributions.CategoricalDistribution,
}
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class PruningCallback(L.Callback):
    """Report the monitored metric to the trial after every validation epoch; when the pruner says so, stop
    training as early stopping would (the run still writes its summary, curves and checkpoints).
    optuna-integration's PyTorchLightningPruningCallback raises out of fit instead, losing those."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_at, trainer.should_stop = trainer.current_epoch, True


def search_space(params: DictConfig) -> dict[str, dict]:
    """{override key: {type, suggest arguments}}, each checked by building its Optuna distribution."""
    if not params:
        raise ConfigError("hparams_search.params", "is empty: nothing to search")
    space = {}
    for name, spec in params.items():
        options = OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec
        if not isinstance(options, dict):
            raise ConfigError(f"hparams_search.params.{name}", f"must be a mapping {{type: ..., ...}}, got {spec!r}")
        check_choice(f"hparams_search.params.{name}.type", options.get("type"), DISTRIBUTIONS)
        try:
            DISTRIBUTIONS[options["type"]](**{k: v for k, v in options.items() if k != "type"})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"hparams_search.params.{name}", str(e)) from None
        space[name] = options
    return space


def suggest(trial: optuna.Trial, name: str, options: dict):
    return getattr(trial, f"suggest_{options['type']}")(name, **{k: v for k, v in options.items() if k != "type"})


def compose_trial(overrides: list[str], run_dir: Path) -> DictConfig:
    """The train config of one trial, composed as `cnncli train` composes it (with the command's
    --config-dir too), with ${hydra:runtime.output_dir} pointing at the trial's folder."""
    cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def best_config(overrides: list[str], choices: dict) -> dict:
    """best.yaml: the train config plus the best trial's overrides, group choices in its defaults list."""
    defaults, body = ["train"], OmegaConf.create()
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in choices:
            defaults.append({key if override.is_add() else f"override {key}": override.value()})
        elif not override.is_delete():
            OmegaConf.update(body, key, override.value(), force_add=True)
    return {"defaults": [*defaults, "_self_"], **OmegaConf.to_container(body)}


def open_study(settings: DictConfig) -> optuna.Study:
    """The study in its storage, created or resumed. A URL Optuna cannot use is a config error; a database
    it cannot read (a damaged study.db) is one line naming it, and the file is left as it is."""
    url = settings.storage
    try:
        storage = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=settings.heartbeat_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
        return optuna.create_study(
            study_name=settings.name,
            storage=storage,
            load_if_exists=True,
            direction="minimize" if settings.mode == "min" else "maximize",
            sampler=call_target("study.sampler", settings.sampler),
            pruner=call_target("study.pruner", settings.pruner) if settings.pruner else optuna.pruners.NopPruner(),
        )
    except sqlalchemy.exc.ArgumentError as e:  # not a URL, or an unknown dialect (foo://)
        raise ConfigError("study.storage", f"{url!r} is not a database URL ({str(e).splitlines()[0]})") from None
    except ImportError:  # a known dialect whose driver is missing (postgresql:// without psycopg2)
        raise ConfigError("study.storage", f"{url!r}: the driver of this database is not installed") from None
    except sqlalchemy.exc.SQLAlchemyError as e:  # sqlite's "file is not a database", a server refusing
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise UserError(f"study.storage={url}: cannot open the study's database: {reason}") from None


def tune(cfg: DictConfig) -> optuna.Study:
    OmegaConf.resolve(cfg)  # now: each trial points ${hydra:...} at its own folder
    hydra_cfg, tune_hydra = HydraConfig.get(), HydraConfig.instance().cfg
    study_dir = Path(hydra_cfg.runtime.output_dir)
    space, settings = search_space(cfg.hparams_search.params), cfg.study
    check_choice("study.mode", settings.mode, ("min", "max"))
    train_overrides = [
        o for o in hydra_cfg.overrides.task if o.lstrip("+~").split("=")[0].split(".")[0] not in TUNE_KEYS
    ]
    compose_trial(train_overrides, study_dir)  # a bad train override stops here, before any trial
    HydraConfig.instance().cfg = tune_hydra

    study = open_study(settings)

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial, name, spec) for name, spec in space.items()}
        run_dir = study_dir / str(trial.number)
        overrides = [
            *train_overrides,
            *(f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()),
        ]
        write_overrides(run_dir, overrides)  # as a Hydra run has them
        trial.set_user_attr("overrides", overrides)
        pruning = PruningCallback(trial, settings.monitor)
        try:
            summary = train(compose_trial(overrides, run_dir), callbacks=[pruning])
            value = summary["best"].get(settings.monitor)
            if value is None:
                raise UserError(f"study.monitor: the trial logged no {settings.monitor!r}")
        except Exception as e:  # noqa: BLE001 (a failed trial is recorded and the study goes on)
            failure = record_failure(run_dir, e)
            print(f"error: trial {trial.number} failed: {failure['error']}", file=sys.stderr)
            return float("nan")  # Optuna marks the trial failed and goes on (raising would print a traceback)
        finally:
            HydraConfig.instance().cfg = tune_hydra
        if pruning.pruned_at is not None:
            summary.update(status="pruned", pruned_at_epoch=pruning.pruned_at)
            write_summary(run_dir, summary)
            raise optuna.TrialPruned(f"at epoch {pruning.pruned_at}")
        return value

    remaining = settings.n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining > 0:
        # n_trials bounds this process; MaxTrialsCallback stops it once all processes together reach the total
        study.optimize(
            objective,
            n_trials=remaining,
            callbacks=[optuna.study.MaxTrialsCallback(settings.n_trials, states=FINISHED)],
        )

    rows = write_leaderboard(study_dir)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise UserError(f"study {settings.name!r}: no trial completed (see {study_dir / 'leaderboard.md'})")
    best = study.best_trial
    choices = OmegaConf.to_container(
        compose("train", best.user_attrs["overrides"], return_hydra_config=True).hydra.runtime.choices
    )
    header = (
        f"# best trial {best.number} of study {settings.name!r}: {settings.monitor} = {best.value:.6g}\n"
        f"# re-run: cnncli train --config-dir {study_dir} --config-name best\n"
    )
    (study_dir / "best.yaml").write_text(
        header + yaml.safe_dump(best_config(best.user_attrs["overrides"], choices), sort_keys=False)
    )
    print(
        f"best trial {best.number}: {settings.monitor} = {best.value:.6g} with "
        + " ".join(f"{k}={v}" for k, v in best.params.items())
    )
    print(f"re-run it: cnncli train --config-dir {study_dir} --config-name best")
    if any(row["status"] == "failed" for row in rows):
        sys.exit(1)
    return study
