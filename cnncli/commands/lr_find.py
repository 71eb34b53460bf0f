"""cnncli lr-find: the learning-rate range test of a run config, with every group and key of `cnncli train`
(the test itself: cnncli/lr_finder.py). Writes lr_find.png, lr_find.json and config.yaml into its folder
(outputs/lr_find/DATE) and prints the suggested rate; `-m` runs one test per job and prints their table."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnncli import config_dir, runs
from cnncli.config import validate_train_config
from cnncli.errors import UserError, reports_user_errors
from cnncli.lr_finder import RangeTestFailed, record_failure


def lr_find(cfg: DictConfig, run_dir: Path) -> dict:
    validate_train_config(cfg)
    from cnncli import tasks
    from cnncli.lr_finder import find_lr

    tasks.prepare_run(cfg)
    found = find_lr(cfg, run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))  # with the classes the data named
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("optimizer.lr=", "lr_find."))]
    command = " ".join(["cnncli train", *overrides, f"optimizer.lr={found['suggestion']:.3g}"])
    print(f"{run_dir / found['plot']}\ntrain at it: {command}")
    return found


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="lr_find")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """One test (once per job in a multirun, where a failed job is recorded and the sweep goes on; the table
    at its end lists it and the command exits 1)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        lr_find(cfg, run_dir)
    except UserError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            record_failure(run_dir, e)
            print(f"error: job {HydraConfig.get().job.num}: {e}", file=sys.stderr)
            return
        # a bad value or input: no folder left; a failed test: its curve is kept
        runs.release(run_dir, discard=not isinstance(e, RangeTestFailed))
        raise
