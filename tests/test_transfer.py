"""Transfer learning: starting weights (a cnncli checkpoint, a state_dict, torchvision's ImageNet weights from
torch's hub cache), the head replaced for the new classes, frozen layers, a lower rate for pretrained layers,
and digit subsets (data.classes) to transfer between."""

import json
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import QUIET, train
from conftest import cnncli as run_cnncli
from hydra import compose, initialize_config_dir

import cnncli
from cnncli.data.digits import DigitsDataModule
from cnncli.errors import ConfigError, UserError
from cnncli.models import build_model, model_parts
from cnncli.optim import optimization

pytestmark = pytest.mark.slow  # trains real runs: `pytest -m "not slow"` leaves them out

LOW_DIGITS = ["data.classes=[0,1,2,3,4]", "data.num_classes=5"]
HIGH_DIGITS = ["data.classes=[5,6,7,8,9]", "data.num_classes=5"]
LENET_CONVS = ("model.0.weight", "model.0.bias", "model.3.weight", "model.3.bias")  # C1, C3: the features


def weights(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def low_digits_run(tmp_path_factory):
    """LeNet-5 trained on the digits 0-4."""
    run_dir = tmp_path_factory.mktemp("low") / "run"
    train(run_dir, *LOW_DIGITS, "trainer.max_epochs=3")
    return run_dir


SEEDS = "seed=1,2,3"  # one process, three runs: the comparison is of means, not of one lucky draw


def sweep(sweep_dir, *overrides: str) -> list[tuple]:
    """A multirun that must succeed: (run folder, summary.json) of each of its runs."""
    result = run_cnncli("train", "-m", f"hydra.sweep.dir={sweep_dir}", *QUIET, *overrides, cwd=sweep_dir.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = sorted(path for path in sweep_dir.iterdir() if (path / "summary.json").is_file())
    return [(run, json.loads((run / "summary.json").read_text())) for run in runs]


@pytest.fixture(scope="module")
def fine_tuned(low_digits_run):
    """One epoch on the digits 5-9 from the 0-4 checkpoint, convolutions frozen; three seeds."""
    ckpt = low_digits_run / "checkpoints" / "best.ckpt"
    overrides = (*HIGH_DIGITS, f"model.weights={ckpt}", "model.freeze=features", "trainer.max_epochs=1", SEEDS)
    return sweep(low_digits_run.parent / "fine_tuned", *overrides)


@pytest.fixture(scope="module")
def random_features(low_digits_run):
    """The same epoch on 5-9 with the convolutions frozen at their random initialization."""
    return sweep(
        low_digits_run.parent / "random_features", *HIGH_DIGITS, "model.freeze=features", "trainer.max_epochs=1", SEEDS
    )


def test_fine_tuning_with_frozen_features_changes_only_the_classifier(low_digits_run, fine_tuned):
    before = weights(low_digits_run)
    for run_dir, _ in fine_tuned:
        after = weights(run_dir)
        for key in LENET_CONVS:
            assert torch.equal(before[key], after[key]), f"{key} is frozen but changed"
        for key in ("model.7.weight", "model.10.weight", "model.13.weight"):  # C5, F6, output: trained
            assert not torch.equal(before[key], after[key]), f"{key} should have trained"
    stored = torch.load(fine_tuned[0][0] / "checkpoints" / "best.ckpt", weights_only=True)["cnncli"]
    assert stored["class_names"] == ["5", "6", "7", "8", "9"]
    assert stored["config"]["data"]["classes"] == [5, 6, 7, 8, 9]


def test_features_learned_on_0_to_4_beat_random_features_on_5_to_9(low_digits_run, fine_tuned, random_features):
    low = json.loads((low_digits_run / "summary.json").read_text())
    assert low["test"]["test/acc1"] > 0.9  # 5 classes; test split: the 0-4 share of the 270 test images
    pretrained, random = (
        [summary["test"]["test/acc1"] for _, summary in runs] for runs in (fine_tuned, random_features)
    )
    assert len(pretrained) == len(random) == 3
    # measured (seeds 1, 2, 3): 0.873, 0.918, 0.896 (mean 0.896) vs 0.813, 0.799, 0.881 (mean 0.831)
    assert sum(pretrained) / 3 > sum(random) / 3 + 0.03, (pretrained, random)


def test_eval_reproduces_the_fine_tuned_runs_test_accuracy(fine_tuned, tmp_path):
    run_dir, summary = fine_tuned[0]
    result = run_cnncli("eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["test/acc1"] == pytest.approx(summary["test"]["test/acc1"], abs=1e-6)
    assert list(evaluated["per_class"]) == ["5", "6", "7", "8", "9"]


# ----------------------------------------------------------------------------- torchvision's ImageNet weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache, and no network: a download is refused at once (a proxy on a closed port)."""
    env = {
        "TORCH_HOME": str(tmp_path / "torch"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "no_proxy": "",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def fake_imagenet_resnet18(torch_home: dict) -> dict:
    """A resnet18 state_dict saved where torch's cache expects ResNet18_Weights (random values, real file)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub/checkpoints
    assert str(folder).startswith(torch_home["TORCH_HOME"])
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, folder / Path(torchvision.models.ResNet18_Weights.DEFAULT.url).name)
    return state


@pytest.fixture(scope="module")
def compose_train():
    with initialize_config_dir(str(cnncli.config_dir()), version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))


def test_offline_pretrained_names_the_file_and_where_the_cache_wants_it(compose_train, torch_home, monkeypatch):
    def offline(url, destination, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        build_model(compose_train("model=resnet18", "model.pretrained=true").model)
    message = str(error.value)  # what `cnncli train` prints after "error: ", one line
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert (
        message.startswith(f"model.pretrained: cannot download {url} (<urlopen error [Errno -3]")
        and "\n" not in message
    )
    assert f"put that file at {torch_home['TORCH_HOME']}/hub/checkpoints/resnet18-f37072fd.pth" in message


def test_weights_placed_in_the_cache_are_used_head_replaced_gray_input_adapted(compose_train, torch_home):
    imagenet = fake_imagenet_resnet18(torch_home)
    # digits: 1 channel, 10 classes. The first conv gets the sum of the RGB filters, the 1000-class fc a fresh
    # 10-class one.
    model = build_model(compose_train("model=resnet18", "model.pretrained=true").model)
    state = model.state_dict()
    assert torch.equal(state["conv1.weight"], imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    for key in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var", "layer3.0.downsample.0.weight"):
        assert torch.equal(state[key], imagenet[key])
    assert state["fc.weight"].shape == (10, 512)
    # the summed filters see a gray image as the RGB weights see it copied to 3 channels
    rgb_model = build_model(compose_train("model=resnet18", "model.pretrained=true", "data.channels=3").model)
    features, rgb_features = (torch.nn.Sequential(*list(m.eval().children())[:-1]) for m in (model, rgb_model))
    gray = torch.rand(2, 1, 32, 32)
    assert torch.allclose(features(gray), rgb_features(gray.expand(-1, 3, -1, -1)), atol=1e-5)


def test_two_learning_rates_in_a_real_run_from_cached_weights(tmp_path, torch_home):
    fake_imagenet_resnet18(torch_home)
    run_dir = tmp_path / "run"
    result = run_cnncli(
        "train", f"hydra.run.dir={run_dir}", *QUIET, "model=resnet18", "model.pretrained=true", "optimizer=sgd",
        "optimizer.backbone_lr_mult=0.1", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", cwd=tmp_path, env=torch_home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # what transfer did, on the terminal and in train.log, once
    said = "transfer: weights from ResNet18_Weights.IMAGENET1K_V1 (model.pretrained) into all but the head (fc"
    assert result.stdout.count(said) == 1 and said in (run_dir / "train.log").read_text()
    header, first = (run_dir / "metrics.csv").read_text().splitlines()[:2]
    rates = dict(zip(header.split(","), first.split(",")))
    assert float(rates["lr-SGD/pg1"]) == 0.01 and float(rates["lr-SGD/pg2"]) == pytest.approx(0.001)  # head, the rest


def test_pretrained_without_torchvision_weights_lists_the_models_that_have_them(compose_train):
    with pytest.raises(
        ConfigError, match=r"model.pretrained: no ImageNet weights for cnncli.models.lenet.lenet5; .*resnet18"
    ):
        build_model(compose_train("model.pretrained=true").model)
    with pytest.raises(ConfigError, match="alexnet \\(variant=torchvision\\)"):
        build_model(compose_train("model=alexnet", "data.image_size=67", "model.pretrained=true").model)


# ------------------------------------------------------------------------------------------ weights files


def test_weights_file_head_of_another_size_starts_fresh_other_mismatches_name_the_key(compose_train, tmp_path):
    torch.manual_seed(0)
    ten_classes = build_model(compose_train().model)
    torch.save(ten_classes.state_dict(), tmp_path / "lenet10.pt")
    five = build_model(compose_train(f"model.weights={tmp_path / 'lenet10.pt'}", *LOW_DIGITS).model).state_dict()
    assert all(torch.equal(five[k], ten_classes.state_dict()[k]) for k in ("0.weight", "3.weight", "10.weight"))
    assert five["13.weight"].shape == (5, 84)  # the head: fresh, for 5 classes

    with pytest.raises(UserError, match=r"lenet10.pt: 0.weight is not a weight of this model"):
        build_model(compose_train("model=resnet20", f"model.weights={tmp_path / 'lenet10.pt'}").model)
    with pytest.raises(
        UserError, match=r"lenet10.pt: 0.weight has shape \(6, 1, 5, 5\), the model's is \(6, 3, 5, 5\)"
    ):
        build_model(compose_train("data.channels=3", f"model.weights={tmp_path / 'lenet10.pt'}").model)
    (tmp_path / "junk.pt").write_text("not a tensor file")
    torch.save({"weights": ten_classes.state_dict(), "code": DigitsDataModule}, tmp_path / "pickled_class.pt")
    with pytest.raises(UserError, match="pickled_class.pt: it holds Python objects other than tensors"):
        build_model(compose_train(f"model.weights={tmp_path / 'pickled_class.pt'}").model)
    with pytest.raises(UserError, match="junk.pt: not a PyTorch file"):
        build_model(compose_train(f"model.weights={tmp_path / 'junk.pt'}").model)
    with pytest.raises(ConfigError, match="model.weights: file not found"):
        build_model(compose_train(f"model.weights={tmp_path / 'missing.pt'}").model)


def test_transfer_says_where_the_weights_came_from_what_is_frozen_and_what_trains(compose_train, tmp_path, caplog):
    torch.save(build_model(compose_train().model).state_dict(), tmp_path / "lenet10.pt")
    caplog.set_level("INFO", logger="cnncli.models.transfer")
    build_model(compose_train(f"model.weights={tmp_path / 'lenet10.pt'}", "model.freeze=features").model)
    assert caplog.messages == [
        f"transfer: weights from {tmp_path / 'lenet10.pt'} (model.weights) into all but the head (13, which starts "
        "fresh): 8 of 10 tensors",
        "transfer: frozen: features (2 layers); trainable 59,134 of 61,706 parameters",  # C1, C3: 156 + 2,416
    ]
    caplog.clear()
    build_model(compose_train("model=resnet20", "model.freeze=all_but_head").model)
    assert caplog.messages == ["transfer: frozen: all_but_head (38 layers); trainable 650 of 269,434 parameters"]
    caplog.clear()
    build_model(compose_train().model)  # no starting weights, nothing frozen: nothing to say
    assert caplog.messages == []


def test_freeze_options_and_their_errors(compose_train):
    def trainable(model):
        return sorted({n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad})

    assert trainable(build_model(compose_train("model.freeze=features").model)) == ["10", "13", "7"]
    assert trainable(build_model(compose_train("model.freeze=all_but_head").model)) == ["13"]
    assert trainable(build_model(compose_train("model=resnet20", "model.freeze=features").model)) == ["fc"]
    with pytest.raises(ConfigError, match="model.freeze: features: this model has no layers outside its classifier"):
        build_model(compose_train("model=mlp", "model.freeze=features").model)
    with pytest.raises(ConfigError, match="model.freeze: 'conv' is not one of: none, features, all_but_head"):
        build_model(compose_train("model.freeze=conv").model)


def test_backbone_lr_mult_makes_a_slower_group_and_leaves_frozen_layers_out(compose_train):
    cfg = compose_train("model=resnet20", "optimizer=sgd", "optimizer.backbone_lr_mult=0.1", "scheduler=onecycle")
    model = build_model(cfg.model)
    model.conv1.weight.requires_grad_(False)
    planned, head_layers = optimization(cfg), model_parts(cfg.model, model).head
    # the groups' own rates, before a schedule moves them
    head, rest = replace(planned, scheduler=None).configure(model.named_parameters(), head_layers, 10).param_groups
    assert [p.shape for p in head["params"]] == [(10, 64), (10,)] and head["lr"] == 0.01
    assert rest["lr"] == pytest.approx(0.001) and len(rest["params"]) == len(list(model.parameters())) - 3
    optimizer = planned.configure(model.named_parameters(), head_layers, 10)["optimizer"]
    # one-cycle peaks at each group's own rate
    assert [group["max_lr"] for group in optimizer.param_groups] == pytest.approx([0.01, 0.001])
    with pytest.raises(ConfigError, match="optimizer.backbone_lr_mult: must be a number > 0"):
        optimization(compose_train("optimizer.backbone_lr_mult=0"))


def test_data_classes_selects_and_relabels_digits():
    common = {"name": "digits", "channels": 1, "image_size": 8, "class_names": None}
    data, everything = (
        DigitsDataModule(**common, num_classes=3, classes=[9, 0, 4]),
        DigitsDataModule(**common, num_classes=10),
    )
    data.setup()
    everything.setup()
    assert data.class_names == ["9", "0", "4"]
    for split in ("train", "val", "test"):
        labels = everything.splits[split].labels
        kept = (labels == 9) | (labels == 0) | (labels == 4)
        assert data.splits[split].labels.tolist() == [{9: 0, 0: 1, 4: 2}[c] for c in labels[kept].tolist()]
        assert torch.equal(data.splits[split].images, everything.splits[split].images[kept])
    with pytest.raises(ConfigError, match="classes: selects 2 classes; set data.num_classes=2 too"):
        DigitsDataModule(**common, num_classes=10, classes=[1, 2])
    with pytest.raises(ConfigError, match="classes: lists a class twice"):
        DigitsDataModule(**common, num_classes=2, classes=[1, 1])
    with pytest.raises(ConfigError, match="digits has no images of class 12 in its train split"):
        DigitsDataModule(**common, num_classes=2, classes=[1, 12]).setup()


def test_a_fine_tuned_checkpoint_needs_none_of_its_starting_weights(low_digits_run, fine_tuned, tmp_path):
    """eval, predict, export and viz rebuild the network without `model.weights`: the checkpoint holds it all,
    so they work after the run it started from was moved away."""
    from PIL import Image
    from sklearn.datasets import load_digits

    run_dir, summary = fine_tuned[0]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    image = tmp_path / "seven.png"
    Image.fromarray((load_digits().images[7] * 15).astype("uint8")).resize((32, 32)).save(image)
    moved = tmp_path / "moved"
    low_digits_run.rename(moved)
    try:
        for args in (
            ["eval", f"ckpt_path={ckpt}", f"out={tmp_path / 'eval'}"],
            ["predict", f"ckpt_path={ckpt}", f"inputs=[{image}]"],
            ["export", f"ckpt_path={ckpt}", "format=torchscript", f"out={tmp_path / 'model.ts'}"],
            ["viz", "featuremaps", f"ckpt_path={ckpt}", f"image={image}", f"out={tmp_path / 'viz'}"],
        ):
            result = run_cnncli(*args, cwd=tmp_path)
            assert result.returncode == 0, f"{args[0]}: {result.stderr[-2000:]}"
            assert "transfer:" not in result.stdout + result.stderr  # a rebuild, not a transfer
    finally:
        moved.rename(low_digits_run)
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluated["test/acc1"] == pytest.approx(summary["test"]["test/acc1"], abs=1e-6)
    assert (tmp_path / "model.ts").is_file()
