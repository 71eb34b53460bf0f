"""cnncli train: compose model, data, optimizer, ... into a Lightning run; write everything it used and
produced to its run folder (config.yaml, checkpoints/, metrics.csv, curves.png, summary.json).

As lightning-hydra-template's train(): compose, instantiate, fit, test, write the run. The rest lives in
its own place: resuming in cnncli/resume.py, the Trainer, speed options and DDP in cnncli/trainer.py, the
task's module and reports in cnncli/tasks/classification.py, the run folder in cnncli/runs.py."""

import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnncli import config_dir, runs
from cnncli.config import validate_train_config
from cnncli.errors import UserError, reports_user_errors
from cnncli.lr_finder import RangeTestFailed
from cnncli.resume import override_key, resume_arguments

log = logging.getLogger("cnncli")  # the terminal and train.log (conf/hydra/job_logging/run.yaml)
logfile = logging.getLogger("cnncli.logfile")  # train.log only: what the terminal shows in its own way


def train(cfg: DictConfig, callbacks: tuple = ()) -> dict:
    """One run into the Hydra output folder; `callbacks` join the configured ones (cnncli tune's pruning)."""
    validate_train_config(cfg)  # plain values: a bad one is refused before torch is imported
    # torch and Lightning are imported here, not above: --help, --cfg job and a refused value never load them
    from lightning.pytorch.callbacks import LambdaCallback
    from lightning.pytorch.utilities import rank_zero_only

    from cnncli import optim, tasks
    from cnncli.resume import keep_metrics_csv, resume_checkpoint
    from cnncli.trainer import build_trainer, interrupted

    lr_auto = cfg.optimizer.get("lr") == "auto"  # a range test chooses it, below
    # factories, checked now; the module builds them once
    optimization = optim.optimization(optim.with_lr(cfg, cfg.lr_find.min_lr) if lr_auto else cfg)
    task_name = tasks.prepare_run(cfg)
    task = tasks.module(task_name)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resume = resume_checkpoint(cfg, run_dir)
    if resume and (done := finished(cfg, run_dir)):
        log.info(f"resume: nothing left to train in {run_dir}: {done}")
        return runs.read_summary(run_dir)
    is_rank_zero = rank_zero_only.rank == 0  # under DDP only rank 0 writes files (Lightning: checkpoints, logs)
    lr_found = None
    if lr_auto:  # the range test first, on the run built alike; its suggestion is the run's rate
        from cnncli import lr_finder

        # a resumed run keeps the rate its own test chose
        lr_found = (resume and lr_finder.recorded(run_dir)) or lr_finder.find_lr(cfg, run_dir if is_rank_zero else None)
        cfg = optim.with_lr(cfg, lr_found["suggestion"])  # config.yaml and the checkpoints record the rate chosen
        optimization = optim.optimization(cfg)
    datamodule, model, module, threads = tasks.build_run(cfg, optimization, starting_weights=not resume)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if is_rank_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(run_config))
    if resume and is_rank_zero:  # Hydra wrote no .hydra/ for it (cnncli/resume.py): once last.ckpt has loaded
        overrides = list(HydraConfig.get().overrides.task)
        callbacks = (*callbacks, LambdaCallback(on_train_start=lambda *_: runs.write_overrides(run_dir, overrides)))
    trainer = build_trainer(cfg, run_dir, (threads, *callbacks))
    if resume and is_rank_zero:
        keep_metrics_csv(trainer, resume)
    if is_rank_zero:
        task.describe_run(cfg, model, datamodule, run_dir)

    params = sum(p.numel() for p in model.parameters())
    for logger in trainer.loggers:  # the trackers get what was run and how big it is
        logger.log_hyperparams({**run_config, "params": params})
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except SystemExit:  # how Lightning ends a fit stopped by SIGTERM (SIGTERMException) or Ctrl-C (exit 1)
        if not trainer.interrupted:
            raise
    except RuntimeError as e:
        if not (resume and "loading state_dict" in str(e)):
            raise
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise UserError(
            f"resume: {resume} does not fit this run's network ({lines[1] if len(lines) > 1 else lines[0]}); "
            "resume with the run's own model options"
        ) from None
    except task.NonFiniteLoss as e:  # the run folder still says what happened and shows the epochs completed
        if is_rank_zero:
            failure = runs.record_failure(run_dir, e, module.history)
            task.plot_run(failure, run_dir / "curves.png", cfg.data.num_classes)
        raise
    # read now: testing the best checkpoint below restores the callbacks' state saved with it
    summary = runs.summarize(run_dir, cfg, module.history, trainer.checkpoint_callback,
                             trainer.early_stopping_callback, params, time.perf_counter() - started, test={},
                             interrupted=trainer.interrupted, threads=threads.result)  # fmt: skip
    summary |= {"task": task_name, "loss": cfg.loss} | ({"lr_find": lr_found} if lr_found else {})
    for logger in trainer.loggers:  # and where its weights are
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        logger.log_hyperparams({"best_checkpoint": summary["best_checkpoint"], "last_checkpoint": last})
    if cfg.test and not trainer.interrupted:
        best = summary["best_checkpoint"] or None
        (results,) = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        summary["test"] = {k: float(v) for k, v in results.items()}
    if not is_rank_zero:
        return summary
    runs.write_summary(run_dir, summary)
    task.plot_run(summary, run_dir / "curves.png", cfg.data.num_classes)
    task.print_summary(summary)
    files = sorted(f"{f.name}/" if f.is_dir() else f.name for f in run_dir.iterdir() if not f.name.startswith("."))
    tested = "".join(f", {name} {value:.4f}" for name, value in summary["test"].items())
    logfile.info(f"{summary['status']}{tested}; {run_dir} holds: {', '.join(files)}")
    if trainer.interrupted:
        raise interrupted(trainer, run_dir)
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    """The Hydra task: one run (called once per job in a multirun). In a multirun a run that fails is
    recorded (summary.json: failed, the error's last line) and the sweep goes on; the leaderboard at its
    end lists it and the command exits 1 (cnncli.leaderboard.SweepLeaderboard)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            train(cfg)
        except UserError as e:
            logfile.error(f"error: {e}")  # the terminal shows it as its error line
            # a bad value or input before any training: no run folder left; a failed range test: its curve is kept
            runs.release(run_dir, discard=not isinstance(e, RangeTestFailed))
            raise
        return
    try:
        train(cfg)
    except Exception as e:  # noqa: BLE001 (a sweep records any failed run and goes on, as Hydra would not)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # train() may have recorded the failure already, with more detail
        failure = runs.read_summary(run_dir) or runs.record_failure(run_dir, e)
        print(f"error: run {HydraConfig.get().job.num} failed: {failure['error']}", file=sys.stderr)


# Lightning's DDP launcher starts ranks 1.. by running argv[0] again with rank 0's overrides: this file.
PROGRAM = __file__


def command_line(args: list[str]) -> list[str]:
    """The overrides Hydra parses. Hydra fixes the run folder before the task runs, so `resume=` becomes the
    resumed run's overrides here (cnncli/resume.py); a DDP rank > 0 does not write the run's log."""
    check_launcher(args)
    args = resume_arguments(args)
    if {"-m", "--multirun"} & set(args) and {"-c", "--cfg"} & set(args):
        show_sweep(args)  # Hydra refuses -m with --cfg; a user wants to see what a sweep would run
        sys.exit(0)
    # a DDP rank above 0 writes no log and runs in rank 0's folder, which rank 0 holds (cnncli.runs.claim)
    return [*args, "hydra/job_logging=disabled", "~hydra.callbacks.run_folder"] if _is_ddp_rank_above_zero() else args


def finished(cfg: DictConfig, run_dir: Path) -> str:
    """Why a run resumed from `run_dir` has nothing left to train ("" if it has): it completed its epochs, or
    early stopping ended it (its state is resumed too, so it would stop again after one epoch)."""
    summary = runs.read_summary(run_dir) or {}
    if summary.get("status") != "completed":
        return ""
    if summary.get("stopped_early_at") is not None and cfg.callbacks.get("early_stopping"):
        return (
            f"early stopping ended it at epoch {summary['stopped_early_at']}; callbacks.early_stopping=null "
            "with a larger trainer.max_epochs trains it on"
        )
    if summary.get("epochs", 0) >= cfg.trainer.max_epochs:
        return (
            f"it trained its {summary['epochs']} epochs (trainer.max_epochs={cfg.trainer.max_epochs}); a larger "
            "trainer.max_epochs trains it on"
        )
    return ""


def check_launcher(args: list[str]) -> None:
    """hydra/launcher=slurm needs a Hydra plugin from an extra; without it Hydra's own error is a page long."""
    launchers = [arg.split("=", 1)[-1] for arg in args if override_key(arg) == "hydra/launcher"]
    wants_submitit = any("slurm" in name or "submitit" in name for name in launchers)
    if wants_submitit and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        raise UserError('hydra/launcher=slurm needs hydra-submitit-launcher: pip install "cnncli[slurm]"')


def show_sweep(args: list[str]) -> None:
    """`cnncli train -m model=mlp,lenet5 --cfg job`: the config of each job the sweep runs (as Hydra's basic
    sweeper expands it), each headed by its overrides."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    config_name, overrides, search = "train", [], []
    flags = iter(args)
    for arg in flags:
        if arg in ("-c", "--cfg"):
            if (shown := next(flags, None)) != "job":
                raise UserError(f"with -m, --cfg shows each job's config: --cfg job (not {shown!r})")
        elif arg in ("-cd", "--config-dir"):  # as Hydra does: a folder added to the search path, before ours
            search.append(f"file://{Path(next(flags, '.')).resolve()}")
        elif arg in ("-cn", "--config-name"):
            config_name = next(flags, config_name)
        elif arg.startswith("-") and arg not in ("-m", "--multirun"):
            raise UserError(f"with -m and --cfg job, {arg} is not supported")
        elif not arg.startswith("-"):
            overrides.append(arg)
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]
    searchpath = [f"hydra.searchpath=[{','.join(search)}]"] if search else []
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for number, job in enumerate(jobs):
            try:
                config = compose(config_name, overrides=[*job, *searchpath])
            except HydraException as e:  # an unknown option or key: a config error, as Hydra's own exit says
                error = UserError(str(e).strip().splitlines()[0])
                error.exit_code = 2
                raise error from None
            print(f"# job {number}: {' '.join(job) or '(no overrides)'}")
            print(OmegaConf.to_yaml(config))


def _is_ddp_rank_above_zero() -> bool:
    """Lightning reads the rank from its launchers' variables; without any of them this is the only process
    (and torch is not imported for --help)."""
    if not {"RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"} & set(os.environ):
        return False
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank > 0


if __name__ == "__main__":  # a DDP rank, started by Lightning: the same path as `cnncli train`
    from cnncli import cli

    cli.run("train", sys.argv[1:])
