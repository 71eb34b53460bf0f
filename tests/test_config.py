"""Every option of every config group composes, resolves and passes validation; bad values are caught
before anything is built, each with the key that is wrong."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from cnncli import config_dir
from cnncli.config import call_target, validate_train_config
from cnncli.errors import ConfigError
from cnncli.optim import optimization

GROUPS = ("model", "data", "optimizer", "scheduler", "augmentation", "trainer", "callbacks", "logger")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((config_dir() / g).glob("*.yaml"))]


def compose_train(*overrides: str, resolve: bool = False):
    """The config `cnncli train OVERRIDES` runs with; resolved as in a run (output folder: /tmp/run)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    if not resolve:
        return cfg
    cfg.hydra.runtime.output_dir = "/tmp/run"
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def test_defaults_are_the_documented_ones():
    cfg = compose_train()
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.data, choices.optimizer, choices.scheduler, choices.augmentation) == (
        "lenet5",
        "digits",
        "adam",
        "none",
        "none",
    )


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_validates(group, option):
    cfg = compose_train(f"{group}={option}", resolve=True)
    validate_train_config(cfg)
    optimization(cfg)
    assert cfg.model.in_channels == cfg.data.channels
    assert cfg.model.num_classes == cfg.data.num_classes
    for entry in [*cfg.callbacks.values(), *cfg.logger.values()]:
        assert entry is None or entry._target_.startswith(("lightning.pytorch.", "cnncli.progress.", "cnncli.trainer."))
        assert entry is None or "/tmp/run" in str(entry.get("dirpath", entry.get("save_dir", "/tmp/run")))


def test_every_model_option_is_listed_in_the_config_folder():
    assert {"lenet5", "mlp"} <= {o for g, o in OPTIONS if g == "model"}


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay"),
        ("optimizer.l1=-0.5", "optimizer.l1"),
        ("optimizer=sgd optimizer.momentum=1.5", "optimizer.momentum"),
        ("data.batch_size=2.5", "data.batch_size"),
        ("trainer.max_epochs=-1", "trainer.max_epochs"),
        ("label_smoothing=1.0", "label_smoothing"),
        ("seed=abc", "seed"),
        ("optimizer._target_=torch.optim.LBFGSX", "optimizer._target_"),
        ("scheduler=step scheduler._target_=torch.optim.lr_scheduler.Linear", "scheduler._target_"),
        ("optimizer._partial_=false", "optimizer._partial_"),
        ("optimizer=adam +optimizer.momentum_typo=0.9", "optimizer.momentum_typo"),
        ("scheduler=step +scheduler.warmup=3", "scheduler.warmup"),
        ("scheduler=step +scheduler.interval=batch", "scheduler.interval"),
        ("optimizer.backbone_lr_mult=-1", "optimizer.backbone_lr_mult"),
        # torch takes these silently: milestones as text never decay the rate
        ("scheduler=multistep scheduler.milestones=[a,b]", "scheduler.milestones"),
        ("scheduler=multistep scheduler.milestones=[60,30]", "scheduler.milestones"),
        ("scheduler=step scheduler.gamma=abc", "scheduler.gamma"),
        ("scheduler=step scheduler.step_size=true", "scheduler.step_size"),
        ("optimizer=sgd optimizer.nesterov=yes", "optimizer.nesterov"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(override, key):
    cfg = compose_train(*override.split(), resolve=True)
    with pytest.raises(ConfigError) as error:
        validate_train_config(cfg)
        optimization(cfg)
    assert error.value.key == key


def test_an_option_the_class_does_not_take_is_named_with_the_ones_it_takes():
    with pytest.raises(ConfigError) as error:
        optimization(compose_train("optimizer=sgd", "+optimizer.betas=[0.9,0.99]", resolve=True))
    assert str(error.value).startswith("optimizer.betas: SGD takes no option 'betas'; it takes: lr, momentum, ")
    assert str(error.value).endswith(", l1, backbone_lr_mult")


def test_optimizer_and_schedule_are_torch_factories_built_once_with_the_given_options():
    opt = optimization(compose_train("optimizer=sgd", "optimizer.lr=0.05", "scheduler=step", resolve=True))
    assert opt.optimizer.func is torch.optim.SGD and opt.optimizer.keywords["lr"] == 0.05
    assert opt.scheduler.func is torch.optim.lr_scheduler.StepLR and opt.scheduler.keywords["step_size"] == 10
    configured = opt.configure([("w", torch.zeros(1, requires_grad=True))], head=[], total_steps=5)
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9
    assert schedule["scheduler"].optimizer is optimizer and schedule["interval"] == "epoch"
    # docs/training.md: any keyword of the class, any other torch class
    sgd = optimization(compose_train("optimizer=sgd", "+optimizer.dampening=0.1", resolve=True))
    assert sgd.optimizer.keywords["dampening"] == 0.1
    nadam = optimization(compose_train("optimizer._target_=torch.optim.NAdam", "~optimizer.fused", resolve=True))
    params = [("w", torch.zeros(1, requires_grad=True))]
    assert type(nadam.configure(params, head=[], total_steps=5)) is torch.optim.NAdam
    # a value torch refuses is one line naming the group, when the module builds it
    bad = optimization(compose_train("optimizer.betas=[1.5,0.9]", resolve=True))
    with pytest.raises(ConfigError, match=r"^optimizer: Adam: Invalid beta parameter at index 0: 1.5$"):
        bad.configure([("w", torch.zeros(1, requires_grad=True))], head=[], total_steps=5)


def test_lr_schedules_follow_their_definitions():
    """Each schedule, stepped as Lightning steps it, gives the learning rates of its formula."""

    def rates(scheduler_override: str, epochs: int = 4, steps_per_epoch: int = 1):
        cfg = compose_train(f"scheduler={scheduler_override.split()[0]}", *scheduler_override.split()[1:])
        configured = optimization(cfg).configure(
            [("w", torch.zeros(1, requires_grad=True))], head=[], total_steps=epochs * steps_per_epoch
        )
        optimizer, config = configured["optimizer"], configured["lr_scheduler"]
        seen = []
        for _ in range(epochs * steps_per_epoch):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if config["interval"] == "step":
                config["scheduler"].step()
            elif len(seen) % steps_per_epoch == 0:
                sched = config["scheduler"]
                sched.step(1.0) if config.get("monitor") else sched.step()
        return seen

    assert rates("step scheduler.step_size=2 scheduler.gamma=0.5") == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    assert rates("exponential scheduler.gamma=0.5") == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    assert rates("cosine trainer.max_epochs=4")[2] == pytest.approx(5e-4)  # half way down the cosine
    plateau = rates("plateau scheduler.patience=0 scheduler.factor=0.5")  # the metric never improves
    assert plateau == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])
    onecycle = rates("onecycle scheduler.pct_start=0.5", epochs=2, steps_per_epoch=5)
    assert onecycle[0] == pytest.approx(1e-3 / 25) and max(onecycle) == pytest.approx(1e-3, rel=0.05)
    assert onecycle.index(max(onecycle)) in (4, 5)  # warm-up for half the steps, then anneal


def test_config_folder_is_the_one_packaged_with_cnncli():
    assert (config_dir() / "train.yaml").is_file() and (config_dir() / "eval.yaml").is_file()
    assert Path(config_dir()).name == "conf"


@pytest.mark.parametrize(
    "normalization",
    ["{mean:[0.5]}", "{mean:[0.5],std:[0.2,0.3]}", "{mean:[0.5],std:[0.0]}", "[0.5]"],
)
def test_bad_normalization_is_a_config_error_for_in_memory_and_folder_data(normalization, tmp_path):
    for data, extra in (("digits", []), ("imagefolder", [f"data.root={tmp_path}", "data.channels=1"])):
        cfg = compose_train(f"data={data}", f"data.normalization={normalization}", *extra, resolve=True)
        with pytest.raises(ConfigError) as error:
            call_target("data", cfg.data)
        assert error.value.key == "data.normalization"


@pytest.mark.parametrize(
    "override", ["callbacks.early_stopping.monitor=val/nonexist", "callbacks.model_checkpoint.monitor=val/acc",
                 "scheduler=plateau scheduler.monitor=loss"],
)  # fmt: skip
def test_a_monitored_metric_must_be_one_that_is_logged(override):
    from cnncli.tasks.classification import check_config

    cfg = compose_train(*override.split(), resolve=True)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert error.value.key == override.split()[-1].split("=")[0]
    assert "choose from: train/loss, train/acc1, train/acc5, val/loss, val/acc1, val/acc5" in str(error.value)
