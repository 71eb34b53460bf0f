"""The model zoo: exact parameter counts, output shapes, minimum input sizes, and every conf/model/*.yaml.

Big networks are built on the meta device (shapes only, no memory); each family also runs one real CPU
forward at a small input it accepts.
"""

import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

import cnncli
from cnncli.errors import ConfigError
from cnncli.models import alexnet, build_model, convnext, googlenet, lenet, mlp, nin, resnet, simple_cnn, swin, vgg, vit
from cnncli.models import model_card as card_of
from cnncli.optim import Optimization
from cnncli.tasks.classification import ImageClassifier

MODEL_CONFIGS = sorted(path.stem for path in (Path(cnncli.config_dir()) / "model").glob("*.yaml"))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(builder, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return builder(**kwargs)


def native(in_channels: int, num_classes: int, image_size: int, **options) -> dict:
    return dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)


IMAGENET = native(3, 1000, 224)
CIFAR = native(3, 10, 32)

# (test id, builder, arguments at the native input, exact parameter total)
PARAMETER_TOTALS = [
    ("mlp", mlp.mlp, native(1, 10, 28), 235_146),
    ("simple_cnn", simple_cnn.simple_cnn, native(3, 6, 64), 182_950),
    ("lenet5", lenet.lenet5, native(1, 10, 32), 61_706),
    ("lenet5-classic", lenet.lenet5, native(1, 10, 32, variant="classic"), 61_706),
    ("lenet5-paper", lenet.lenet5, native(1, 10, 32, variant="paper"), 60_000),
    ("alexnet", alexnet.alexnet, native(3, 1000, 227), 62_378_344),
    ("alexnet-two_tower", alexnet.alexnet, native(3, 1000, 227, variant="two_tower"), 60_965_224),
    ("alexnet-bn", alexnet.alexnet, native(3, 1000, 227, batch_norm=True), 62_378_344 + 2_752),
    ("alexnet-torchvision", alexnet.alexnet, native(3, 1000, 224, variant="torchvision"), 61_100_840),
    ("zfnet", alexnet.zfnet, IMAGENET, 62_357_608),
    ("vgg11", vgg.vgg11, IMAGENET, 132_863_336),
    ("vgg13", vgg.vgg13, IMAGENET, 133_047_848),
    ("vgg16", vgg.vgg16, IMAGENET, 138_357_544),
    ("vgg19", vgg.vgg19, IMAGENET, 143_667_240),
    ("vgg11-bn", vgg.vgg11, {**IMAGENET, "batch_norm": True}, 132_863_336 + 5_504),
    ("vgg13-bn", vgg.vgg13, {**IMAGENET, "batch_norm": True}, 133_047_848 + 5_888),
    ("vgg16-bn", vgg.vgg16, {**IMAGENET, "batch_norm": True}, 138_357_544 + 8_448),
    ("vgg19-bn", vgg.vgg19, {**IMAGENET, "batch_norm": True}, 143_667_240 + 11_008),
    ("nin", nin.nin, CIFAR, 966_986),
    ("nin-imagenet", nin.nin, {**IMAGENET, "variant": "imagenet"}, 7_595_176),
    ("googlenet", googlenet.googlenet, IMAGENET, 6_998_552),
    ("googlenet-aux", googlenet.googlenet, {**IMAGENET, "aux_logits": True}, 13_378_280),
    ("googlenet-torchvision", googlenet.googlenet, {**IMAGENET, "variant": "torchvision"}, 6_624_904),
    ("resnet18", resnet.resnet18, IMAGENET, 11_689_512),
    ("resnet34", resnet.resnet34, IMAGENET, 21_797_672),
    ("resnet50", resnet.resnet50, IMAGENET, 25_557_032),
    ("resnet101", resnet.resnet101, IMAGENET, 44_549_160),
    ("resnet152", resnet.resnet152, IMAGENET, 60_192_808),
    ("resnet20", resnet.resnet20, CIFAR, 269_722),
    ("resnet32", resnet.resnet32, CIFAR, 464_154),
    ("resnet44", resnet.resnet44, CIFAR, 658_586),
    ("resnet56", resnet.resnet56, CIFAR, 853_018),
    ("resnet110", resnet.resnet110, CIFAR, 1_727_962),
    ("convnext_tiny", convnext.convnext_tiny, IMAGENET, 28_589_128),
    ("convnext_small", convnext.convnext_small, IMAGENET, 50_223_688),
    ("convnext_base", convnext.convnext_base, IMAGENET, 88_591_464),
    ("swin_t", swin.swin_t, IMAGENET, 28_288_354),
    ("swin_s", swin.swin_s, IMAGENET, 49_606_258),
    ("swin_b", swin.swin_b, IMAGENET, 87_768_224),
    ("vit_b_16", vit.vit_b_16, IMAGENET, 86_567_656),
    ("vit_b_32", vit.vit_b_32, IMAGENET, 88_224_232),
    ("vit_tiny", vit.vit_tiny, CIFAR, 3_722_250),
]
TOTALS_IDS = [row[0] for row in PARAMETER_TOTALS]
TOTALS_ROWS = [row[1:] for row in PARAMETER_TOTALS]


@pytest.mark.parametrize("builder, kwargs, total", TOTALS_ROWS, ids=TOTALS_IDS)
def test_parameter_total_at_native_size(builder, kwargs, total):
    assert count(on_meta(builder, **kwargs)) == total


@pytest.mark.parametrize("builder, kwargs, total", TOTALS_ROWS, ids=TOTALS_IDS)
def test_forward_at_native_size(builder, kwargs, total):
    """Small networks run for real; the big ones on the meta device (shapes only)."""
    small = total < 1_000_000
    device = torch.device("cpu" if small else "meta")
    with device:
        model = builder(**kwargs).eval()
        images = torch.randn(2, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
        with torch.no_grad():
            logits = model(images)
    assert logits.shape == (2, kwargs["num_classes"])
    if small:
        assert torch.isfinite(logits).all()


def test_alexnet_layer_by_layer():
    model = on_meta(alexnet.alexnet, **native(3, 1000, 227))
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [count(m) for m in layers] == [
        34_944, 614_656, 885_120, 1_327_488, 884_992, 37_752_832, 16_781_312, 4_097_000
    ]  # fmt: skip
    shapes = []
    for module in model.features:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            module.register_forward_hook(lambda m, i, out: shapes.append((type(m).__name__, tuple(out.shape[1:]))))
    with torch.device("meta"):
        model(torch.zeros(1, 3, 227, 227))
    assert shapes == [
        ("Conv2d", (96, 55, 55)),
        ("MaxPool2d", (96, 27, 27)),
        ("Conv2d", (256, 27, 27)),
        ("MaxPool2d", (256, 13, 13)),
        ("Conv2d", (384, 13, 13)),
        ("Conv2d", (384, 13, 13)),
        ("Conv2d", (256, 13, 13)),
        ("MaxPool2d", (256, 6, 6)),
    ]


def test_zfnet_maps_are_the_papers():
    model = on_meta(alexnet.zfnet, **IMAGENET)
    sizes = []
    for module in model.features:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            module.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1]))
    with torch.device("meta"):
        model(torch.zeros(1, 3, 224, 224))
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]


def test_lenet5_paper_is_the_1998_network():
    model = lenet.lenet5(variant="paper")
    assert all(p.requires_grad for p in model.parameters())
    c3 = model[4]
    assert c3.weight.shape == (60, 5, 5)  # 6*3 + 9*4 + 1*6 connected kernels, not 16*6
    rbf_codes = dict(model.named_buffers())["15.codes"]
    assert rbf_codes.shape == (10, 84) and set(rbf_codes.unique().tolist()) == {-1.0, 1.0}  # fixed, not trained
    # a C3 map depends on exactly the S2 maps of table 1: map 0 sees maps 0, 1, 2 only
    x = torch.zeros(1, 6, 14, 14, requires_grad=True)
    c3(x)[0, 0].sum().backward()
    touched = (x.grad.abs().sum(dim=(0, 2, 3)) > 0).tolist()
    assert touched == [True, True, True, False, False, False]
    # and it trains: every parameter gets a gradient
    logits = model(torch.randn(4, 1, 32, 32))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_modern_and_classic_lenet5_are_unchanged():
    for variant, (activation, pool) in (("modern", (nn.ReLU, nn.MaxPool2d)), ("classic", (nn.Tanh, nn.AvgPool2d))):
        model = lenet.lenet5(variant=variant)
        kinds = [type(m) for m in model]
        assert kinds.count(activation) == 4 and kinds.count(pool) == 2


# (test id, builder, options, smallest input side): checked against the layers themselves below
MINIMUM_SIZES = [
    ("simple_cnn", simple_cnn.simple_cnn, {}, 6),
    ("lenet5", lenet.lenet5, {}, 16),
    ("lenet5-paper", lenet.lenet5, {"variant": "paper"}, 16),
    ("alexnet", alexnet.alexnet, {}, 67),
    ("alexnet-two_tower", alexnet.alexnet, {"variant": "two_tower"}, 67),
    ("alexnet-torchvision", alexnet.alexnet, {"variant": "torchvision"}, 63),
    ("zfnet", alexnet.zfnet, {}, 47),
    ("vgg11", vgg.vgg11, {}, 32),
    ("vgg19-bn", vgg.vgg19, {"batch_norm": True}, 32),
    ("nin", nin.nin, {}, 4),
    ("nin-imagenet", nin.nin, {"variant": "imagenet"}, 39),
    ("googlenet", googlenet.googlenet, {}, 31),
    ("googlenet-torchvision", googlenet.googlenet, {"variant": "torchvision"}, 15),
    ("resnet18", resnet.resnet18, {}, 1),
    ("resnet152", resnet.resnet152, {}, 1),
    ("resnet20", resnet.resnet20, {}, 1),
    ("convnext_tiny", convnext.convnext_tiny, {}, 32),
    ("convnext_small", convnext.convnext_small, {}, 32),
    ("swin_t", swin.swin_t, {}, 4),
]


@pytest.mark.parametrize(
    "builder, options, minimum", [row[1:] for row in MINIMUM_SIZES], ids=[row[0] for row in MINIMUM_SIZES]
)
def test_minimum_input_size_is_exact(builder, options, minimum):
    """The recorded minimum runs; one pixel less breaks the layers, and the builder refuses it first."""
    with torch.device("meta"):
        model = builder(in_channels=1, num_classes=10, image_size=minimum, **options).eval()
        assert model(torch.zeros(2, 1, minimum, minimum)).shape == (2, 10)
        if minimum > 1:
            with pytest.raises(RuntimeError):
                model(torch.zeros(2, 1, minimum - 1, minimum - 1))
    if minimum > 1:
        with pytest.raises(ConfigError, match=f"at least {minimum}x{minimum}") as error:
            builder(in_channels=1, num_classes=10, image_size=minimum - 1, **options)
        assert error.value.key == "image_size"


# One real CPU forward and backward per family at a small input it accepts, one input channel, 10 classes.
SMALL_REAL = [
    ("simple_cnn", simple_cnn.simple_cnn, {"batch_norm": True}, 16),
    ("alexnet-two_tower", alexnet.alexnet, {"variant": "two_tower"}, 67),
    ("zfnet", alexnet.zfnet, {}, 47),
    ("vgg11-bn", vgg.vgg11, {"batch_norm": True}, 32),
    ("nin-imagenet", nin.nin, {"variant": "imagenet"}, 39),
    ("googlenet-torchvision", googlenet.googlenet, {"variant": "torchvision"}, 32),
    ("resnet18", resnet.resnet18, {}, 16),
    ("convnext_tiny", convnext.convnext_tiny, {}, 32),
    ("swin_t", swin.swin_t, {}, 8),
    ("vit_tiny", vit.vit_tiny, {"num_layers": 2}, 16),
]


@pytest.mark.parametrize("builder, options, size", [row[1:] for row in SMALL_REAL], ids=[row[0] for row in SMALL_REAL])
def test_real_forward_and_backward_at_a_small_size(builder, options, size):
    torch.manual_seed(0)
    model = builder(in_channels=1, num_classes=10, image_size=size, **options).train()
    logits = model(torch.randn(2, 1, size, size))
    logits = logits[0] if isinstance(logits, tuple) else logits
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1 and first_conv.weight.grad is not None


@pytest.mark.filterwarnings("ignore:.*self.log.*")  # no Trainer here: the classifier's logging is a no-op
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_googlenet_aux_heads_train_through_the_classifier(variant):
    """In training the aux heads come back as (logits, aux1, aux2) and add 0.3 x their losses; eval: logits."""
    torch.manual_seed(0)
    model = googlenet.googlenet(1, 10, 32, variant=variant, aux_logits=True)
    classifier = ImageClassifier(model, num_classes=10, optimization=Optimization(partial(torch.optim.Adam, lr=1e-3)))
    images, labels = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    outputs = model.train()(images)
    assert isinstance(outputs, tuple) and [o.shape for o in outputs] == [(4, 10)] * 3
    loss = classifier.train().training_step((images, labels), 0)
    loss.backward()
    assert model.aux1.fc2.weight.grad.abs().sum() > 0 and model.aux2.fc2.weight.grad.abs().sum() > 0
    assert model.eval()(images).shape == (4, 10)


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="variant"):
        alexnet.alexnet(variant="three_tower")
    with pytest.raises(ConfigError, match="batch_norm"):
        vgg.vgg16(batch_norm="yes")
    with pytest.raises(ConfigError, match="batch_norm: true only for the variants"):
        alexnet.alexnet(variant="torchvision", batch_norm=True)
    with pytest.raises(ConfigError, match="dropout"):
        nin.nin(dropout=1.5)
    with pytest.raises(ConfigError, match="aux_logits"):
        googlenet.googlenet(aux_logits="no")
    with pytest.raises(ConfigError, match="stochastic_depth_prob"):
        convnext.convnext_tiny(stochastic_depth_prob=2)
    with pytest.raises(ConfigError, match="activation"):
        simple_cnn.simple_cnn(activation="swish")


@pytest.fixture(scope="module")
def compose_train():
    with initialize_config_dir(config_dir=str(cnncli.config_dir()), version_base="1.3"):
        yield lambda overrides: compose("train", overrides=overrides)


def is_segmentation(compose_train, name: str) -> bool:
    return card_of(compose_train([f"model={name}"]).model._target_).task == "segmentation"


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_builds_on_digits(compose_train, name):
    """Each conf/model/*.yaml composes with data=digits (32x32x1, 10 classes) and gives (2, 10) logits, or
    stops with a ConfigError naming the smallest input it needs. A segmentation model gives a score map per
    class, (2, 10, H, W)."""
    cfg = compose_train([f"model={name}", "data=digits"])
    try:
        with torch.device("meta"):
            model = build_model(cfg.model)
    except ConfigError as error:
        assert error.key == "model.image_size"
        minimum = re.search(r"at least (\d+)x\1", str(error))
        assert minimum and int(minimum.group(1)) > cfg.data.image_size
        return
    if count(model) < 1_000_000:  # small enough to run for real
        model = build_model(cfg.model)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 1, 32, 32, device=device))
    assert logits.shape == ((2, 10, 32, 32) if is_segmentation(compose_train, name) else (2, 10))


def test_alexnet_config_builds_at_its_native_size(compose_train):
    cfg = compose_train(["model=alexnet", "data=digits", "data.image_size=227"])
    with torch.device("meta"):
        model = build_model(cfg.model)
        assert model(torch.zeros(2, 1, 227, 227)).shape == (2, 10)


def _cnncli(*args, cwd):
    command = [sys.executable, "-c", "from cnncli.cli import main; main()", "train", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cnncli_trains_a_cifar_resnet(tmp_path):
    overrides = ["model=resnet20", "data=digits", "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}"]
    result = _cnncli(*overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_cnncli_refuses_alexnet_on_32x32_in_one_line(tmp_path):
    result = _cnncli("model=alexnet", "data=digits", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.image_size" in lines[0] and "at least 67x67" in lines[0]
