"""Each model's facts are declared once, on its card (cnncli/models/<family>.py MODELS), and they are true of
the network the builder makes. Adding an architecture is one model file and one yaml (docs/models.md): the
last test does exactly that, with a tiny net, in a copy of the installed package."""

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import cnncli
from cnncli import config_dir
from cnncli.errors import ConfigError
from cnncli.models import build_model, builder, model_card, model_parts

MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
VARIANTS = {
    "lenet5": ["model.variant=paper"],
    "alexnet": ["model.variant=torchvision"],
    "googlenet": ["model.variant=torchvision", "model.aux_logits=true"],
    "nin": ["model.variant=imagenet"],
    "simple_cnn": ["model.batch_norm=true"],
}


def model_options(name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("name", MODELS)
def test_every_zoo_model_has_a_card_that_its_network_bears_out(name):
    options = model_options(name)
    card = model_card(options["_target_"])
    assert card is not None, f"{options['_target_']} has no card in its family's MODELS"
    defaults = {k: p.default for k, p in inspect.signature(builder(options["_target_"], False)).parameters.items()}
    assert (defaults["in_channels"], defaults["image_size"], defaults["num_classes"]) == (
        card.channels, card.image_size, card.num_classes)  # fmt: skip
    paper = [f"model.{key}={value}" for key, value in card.paper_options.items()]  # U-Net: the 572x572 network
    for extra in [paper, [*paper, *VARIANTS.get(name, [])]]:
        size = max(card.image_size, card.fact("min_size", model_options(name, *extra)))  # NiN's ImageNet variant
        native = model_options(name, *extra, f"data.channels={card.channels}", "data.num_classes=7",
                               f"data.image_size={size}")  # fmt: skip
        with torch.device("meta"):
            model = build_model(native)
        parts = model_parts(native, model)
        assert parts.head and set(parts.head) <= set(parts.classifier) | set(parts.head)
        for layer in parts.head:  # the head outputs one score per class (LeNet-5's RBF codes: a buffer)
            module = model.get_submodule(layer)
            weight = next(iter([*module.parameters(recurse=False), *module.buffers(recurse=False)]))
            assert weight.shape[0] == 7, f"{name} {extra}: {layer} is not a head"
        if parts.first_conv is not None:
            assert model.get_submodule(parts.first_conv).in_channels == card.channels
        smallest = card.fact("min_size", native)
        if smallest > 1:  # the declared minimum is the real one: one pixel less is refused
            with torch.device("meta"), pytest.raises(ConfigError, match="needs inputs of at least"):
                build_model({**native, "image_size": smallest - 1})


TINYNET = '''"""TinyNet: one conv, a global pool, a dense head (a test's model, added as docs/models.md says)."""

from torch import nn

from cnncli.models import ModelCard
from cnncli.models.common import check_input_size


def tinynet(in_channels=3, num_classes=10, image_size=32, width=8) -> nn.Module:
    check_input_size("tinynet", image_size, 3)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(width, num_classes),
    )


MODELS = {
    "tinynet": ModelCard(channels=3, image_size=32, num_classes=10, min_size=3, head=("-1",),
                         classifier=("-1",), first_conv="0", paper_params=123, paper_source="a test"),
}
'''
TINYNET_YAML = """# TinyNet: cnncli/models/tinynet.py
_target_: cnncli.models.tinynet.tinynet
in_channels: ${data.channels}
num_classes: ${data.num_classes}
image_size: ${data.image_size}
width: 8
pretrained: false
weights: null
freeze: none
"""


@pytest.mark.slow
def test_adding_an_architecture_is_one_model_file_and_one_yaml(tmp_path):
    package = tmp_path / "site" / "cnncli"
    shutil.copytree(Path(cnncli.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    if not (package / "conf").is_dir():  # a checkout: the configs sit beside the package, not in it
        shutil.copytree(config_dir(), package / "conf")
    (package / "models" / "tinynet.py").write_text(TINYNET)
    (package / "conf" / "model" / "tinynet.yaml").write_text(TINYNET_YAML)

    def run(*args):
        code = "import sys; sys.argv[0] = 'cnncli'; from cnncli.cli import main; main()"
        env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "PYTHONWARNINGS": "ignore"}
        result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                                env=env, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    run_dir = tmp_path / "run"
    run("train", "model=tinynet", "model.freeze=all_but_head", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false")  # fmt: skip
    table = run("params", "model=tinynet", "format=markdown")
    assert "123 params (a test)" in table and "32x32x3" in table  # the card's paper figure and native input
    evaluated = run("eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}")  # no trust_model_code needed
    assert "test split of digits" in evaluated


def test_the_zoo_table_of_the_docs_is_made_from_the_cards():
    from cnncli.models import zoo

    docs = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    assert zoo.markdown() in docs, "docs/models.md: paste the output of `python -m cnncli.models.zoo`"


def test_a_users_own_module_is_read_for_its_card_only_from_the_users_config(tmp_path, monkeypatch):
    (tmp_path / "mynets_card.py").write_text(TINYNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    options = {"_target_": "mynets_card.tinynet", "in_channels": 1, "num_classes": 4, "image_size": 16,
               "freeze": "all_but_head"}  # fmt: skip
    model = build_model(options)  # the user's config: trusted, its MODELS card read for the head
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["4.weight", "4.bias"]
    assert model_card("mynets_card.tinynet") is None  # as read from a file: never imported for its card
