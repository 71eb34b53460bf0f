"""Tasks: what a run learns. Each task is one file holding its LightningModule, metrics and reports;
the trainer, data, run folders, checkpoints and export are shared.

    classification   a class per image: cnncli/tasks/classification.py (the data configs without `task:`)
    segmentation     a class per pixel: cnncli/tasks/segmentation.py (data configs with `task: segmentation`)

A run's task is its data's (`data.task`); the model must be made for it (its card's `task`)."""

import importlib

from omegaconf import DictConfig, OmegaConf

from cnncli.errors import ConfigError, UserError, check_choice

TASKS = ("classification", "segmentation")
# the zoo's models of each task, for the one line that says which fit (cnncli/models/<family>.py cards)
WHAT = {"classification": "a class per image", "segmentation": "a class per pixel"}


def task_of(cfg) -> str:
    """The task of a run config: its data's."""
    task = cfg.data.get("task", "classification") if cfg.get("data") is not None else "classification"
    check_choice("data.task", task, TASKS)
    return task


def module(task: str):
    """The task's file: build_module, check_config, describe_run, plot_run, print_summary, NonFiniteLoss."""
    return importlib.import_module(f"cnncli.tasks.{task}")


def check_model_fits(model_target: str, task: str, data_name: str | None) -> None:
    """A classifier given masks, or a segmentation network given class labels: one line naming both."""
    from cnncli.models import model_card, task_models

    card = model_card(model_target, trusted=True)
    if card is None or card.task == task:
        return
    name = str(model_target).rsplit(".", 1)[-1]
    fits = ", ".join(task_models(task))
    raise ConfigError(
        "model",
        f"{name} is a {card.task} model ({WHAT[card.task]}); data={data_name} is a {task} data set "
        f"({WHAT[task]}): choose a {task} model ({fits}) or a {card.task} data set",
    )


def check_checkpoint_task(path, checkpoint_task: str, wanted: str, why: str) -> None:
    """A checkpoint of one task given where the other is needed (`why`: "data=shapes is a segmentation
    data set", say)."""
    if checkpoint_task != wanted:
        raise UserError(
            f"{path} is a {checkpoint_task} checkpoint ({WHAT[checkpoint_task]}), but {why}: it needs a {wanted} "
            "checkpoint"
        )


MONITOR_KEYS = ("callbacks.early_stopping.monitor", "callbacks.model_checkpoint.monitor", "scheduler.monitor")


def check_monitors(cfg, metrics: tuple[str, ...]) -> None:
    """The metric names early stopping, the checkpoint and a plateau schedule watch must be ones the task
    logs (`metrics`, as train/NAME and val/NAME), else Lightning fails at the end of the first epoch."""
    logged = [f"{split}/{metric}" for split in ("train", "val") for metric in metrics]
    for key in MONITOR_KEYS:
        name = OmegaConf.select(cfg, key, default=None)
        if name is not None and name not in logged:
            raise ConfigError(key, f"{name!r} is not a logged metric; choose from: {', '.join(logged)}")


def prepare_run(cfg: DictConfig) -> str:
    """What train and lr-find check before a run is built: the speed options, that the model is made for the
    data's task, the task's own options (loss, monitored metrics); then data.root and data.cache_dir made
    absolute in cfg. Returns the task's name."""
    from cnncli.config import absolute_data_paths
    from cnncli.trainer import check_speed_options

    check_speed_options(cfg)
    task_name = task_of(cfg)  # the data's: classification or segmentation
    check_model_fits(cfg.model._target_, task_name, cfg.data.get("name"))
    module(task_name).check_config(cfg)  # a metric name that is never logged would fail after an epoch
    absolute_data_paths(cfg)
    return task_name


def build_run(cfg: DictConfig, optimization, starting_weights: bool = True):
    """What a run config trains, seeded: the data module (set up for fit), the network, the task's
    LightningModule and the run's CPU threads (a Lightning callback). The data module names an image
    folder's classes into cfg.data when the config leaves them null."""
    import lightning as L

    from cnncli import checkpoint
    from cnncli.augment import build_augmentation
    from cnncli.config import call_target
    from cnncli.models import build_model, model_parts
    from cnncli.trainer import ThreadChoice, prepare_model

    task_name = task_of(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ignore_index = cfg.data.get("ignore_index") if task_name == "segmentation" else None  # masks move too
    augment = build_augmentation(cfg.augmentation, cfg.data.image_size, ignore_index)
    datamodule = call_target("data", cfg.data, augment=augment)
    for key in ("num_classes", "class_names"):  # an image folder's classes are its class folders unless set
        if cfg.data.get(key) is None and getattr(datamodule, key, None) is not None:
            cfg.data[key] = getattr(datamodule, key)
    # set before anything is computed: the data's statistics are float sums too, which the thread count changes
    threads = ThreadChoice(cfg, workers=getattr(datamodule, "num_workers", 0))
    model = build_model(cfg.model, starting_weights=starting_weights)  # resumed: last.ckpt holds every weight
    datamodule.setup("fit")
    run_config = OmegaConf.to_container(cfg, resolve=True)
    metadata = checkpoint.metadata(run_config, datamodule.class_names, datamodule.normalization, task_name)
    head = model_parts(run_config["model"], model).head
    lightning_module = module(task_name).build_module(
        cfg, prepare_model(cfg, model), datamodule, metadata, head, optimization
    )
    return datamodule, model, lightning_module, threads
