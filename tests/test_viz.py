"""cnncli viz as a user runs it: feature maps, filters, CAM / Grad-CAM and occlusion of a LeNet-5 trained on
digits, CAM of a ResNet-20, and the one-line errors."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, cnncli, cnncli_here, edited_checkpoint
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from cnncli import config_dir
from cnncli.commands.viz import command_line
from cnncli.data.digits import DigitsDataModule
from cnncli.errors import ConfigError
from cnncli.models.googlenet import googlenet
from cnncli.models.lenet import lenet5
from cnncli.models.nin import nin
from cnncli.visualize import (
    _DeconvReLU,
    _GuidedReLU,
    attention_weights,
    computes_relu,
    default_cam_layer,
    feature_map_layers,
    project_units,
    reaches_classifier_by_global_average,
    rollout,
    visualize,
)

MODES = ("featuremaps", "filters", "cam", "occlusion", "deconv", "guided", "guided_gradcam")


def assert_picture(path, size):
    """A PNG of the expected pixel size whose content is not a blank canvas: pictures cover much of it."""
    image = Image.open(path)
    assert image.size == size, path
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert (pixels < 250).mean() > 0.3 and pixels.std() > 40, path


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """The first '3' of the digits test split as a 32x32 grayscale PNG, and an RGB copy of another size."""
    folder = tmp_path_factory.mktemp("images")
    data = DigitsDataModule(name="digits", channels=1, image_size=32, num_classes=10, class_names=list("0123456789"))
    data.setup()
    split = data.splits["test"]
    n = int((split.labels == 3).nonzero()[0, 0])
    Image.fromarray(split.images[n][0].numpy()).save(folder / "three.png")
    Image.open(folder / "three.png").convert("RGB").resize((50, 40)).save(folder / "three_rgb.png")
    return folder / "three.png"


@pytest.fixture(scope="module")
def lenet_viz(short_run, three, tmp_path_factory):
    """Every mode on the 3-epoch LeNet-5, in one process (-m). occlusion.fill=0: on digits' black
    background a black patch erases strokes, where the default mean-grey patch would draw new ones."""
    out = tmp_path_factory.mktemp("lenet_viz")
    result = cnncli(
        "viz",
        "-m",
        f"mode={','.join(MODES)}",
        f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}",
        f"image={three}",
        f"out={out}",
        "occlusion.fill=0",
        "ascent.steps=30",
        cwd=out,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A ResNet-20 (global average pooling) and an MLP (no conv layer), one epoch of two batches each."""
    folder = tmp_path_factory.mktemp("sweep")
    result = cnncli(
        "train",
        "-m",
        "model=resnet20,mlp",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        f"hydra.sweep.dir={folder}",
        *QUIET,
        cwd=folder,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"resnet20": folder / "0" / "checkpoints" / "best.ckpt", "mlp": folder / "1" / "checkpoints" / "best.ckpt"}


@pytest.mark.slow
def test_every_written_file_is_printed(lenet_viz):
    out, stdout = lenet_viz
    printed = {line for line in stdout.splitlines() if line.startswith(str(out))}
    assert printed == {str(p) for p in out.iterdir()}
    # four layers' maps, kernels + maximized, cam, occlusion png + npy, deconv, guided, guided Grad-CAM
    assert len(printed) == 4 + 2 + 1 + 2 + 1 + 1 + 1


def test_featuremaps_one_grid_per_conv_and_pool_layer(lenet_viz):
    out, _ = lenet_viz
    # LeNet-5 is a Sequential: C1 is module 0, S2 module 2, C3 module 3, S4 module 5
    assert_picture(out / "featuremaps_three_0.png", (960, 220))  # 6 maps of 28x28: one row
    assert_picture(out / "featuremaps_three_2.png", (960, 220))
    assert_picture(out / "featuremaps_three_3.png", (1280, 390))  # 16 maps of 10x10: two rows of 8
    assert_picture(out / "featuremaps_three_5.png", (1280, 390))
    assert not (out / "featuremaps_three_1.png").exists()  # a ReLU is neither conv nor pooling


def test_filters_kernels_and_inputs_that_maximize_them(lenet_viz):
    out, stdout = lenet_viz
    assert_picture(out / "filters_0.png", (960, 220))  # C1's 6 kernels
    # default layer: the last conv, C3's 16 filters; the name carries the option set away from its default
    assert_picture(out / "filters_3_maximized_steps30.png", (1280, 390))
    found = re.search(r"16 filters (-?[\d.]+) at the start, (-?[\d.]+) after 30 steps", stdout)
    before, after = map(float, found.groups())
    assert after > before + 1  # gradient ascent raised the filters' mean activation


def test_cam_of_lenet_is_grad_cam_of_its_last_feature_maps(lenet_viz):
    out, stdout = lenet_viz
    assert_picture(out / "cam_three_layer5_class3.png", (1200, 440))
    assert "predicted '3'" in stdout  # the network gets this digit right
    assert "Grad-CAM of layer 5 (MaxPool2d): 16 x 5 x 5 for class '3'" in stdout  # S4 reaches a dense layer


def test_occlusion_hurts_most_on_the_digits_strokes(lenet_viz, three):
    out, stdout = lenet_viz
    assert "predicted '3'" in stdout  # a digit the network gets right
    # the default patch is a third of the 32-pixel input, its stride a quarter of the patch
    assert_picture(out / "occlusion_three_class3_patch10_stride2_fill0.png", (1200, 440))
    probability = np.load(out / "occlusion_three_class3_patch10_stride2_fill0.npy")
    image = np.asarray(Image.open(three), dtype=float) / 255
    assert probability.shape == image.shape == (32, 32)
    row, col = np.unravel_index(probability.argmin(), probability.shape)
    assert image[row, col] > 0.5  # the lowest probability of '3' is with the patch on a stroke
    strokes, background = image > 0.5, image < 0.1
    assert probability[strokes].mean() < probability[background].mean() - 0.05
    assert probability.min() < 0.9 and probability.max() <= 1


@pytest.mark.slow
def test_cam_of_resnet20_is_cam_and_an_rgb_image_is_converted(sweep, three, tmp_path):
    result = cnncli(
        "viz",
        "cam",
        f"ckpt_path={sweep['resnet20']}",
        f"image={three.with_name('three_rgb.png')}",
        f"out={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # the last residual stage reaches the classifier through global average pooling: CAM exactly
    assert "CAM of layer layers (Sequential): 64 x 8 x 8" in result.stdout and "Grad-CAM" not in result.stdout
    (picture,) = tmp_path.glob("cam_three_rgb_layerlayers_class*.png")  # of whichever class 2 batches predict
    assert_picture(picture, (1200, 440))


@pytest.mark.parametrize(
    "build, size, cam",
    [
        (lambda: nin(1, 10, 32), 32, True),
        (lambda: googlenet(1, 10, 64, aux_logits=False), 64, True),
        (lambda: lenet5(1, 10, 32), 32, False),
    ],
    ids=["nin", "googlenet", "lenet5"],
)
def test_cam_is_told_from_grad_cam_by_the_gradient(build, size, cam):
    # the default layer's maps reach the classifier by global average pooling (CAM) or through dense layers
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(1, 1, size, size)
    shapes = feature_map_layers(model, x)
    layer = dict(model.named_modules())[default_cam_layer(model, shapes)]
    assert reaches_classifier_by_global_average(model, layer, x, target=3) is cam


@pytest.mark.parametrize(
    "mode, says",
    [
        ("featuremaps", "featuremaps draws the 2-D maps that conv and pooling layers compute"),
        # an MLP computes ReLUs: what it lacks for the projections is a conv layer's units
        ("deconv", "deconv projects units of a conv layer's feature maps back to the pixels"),
        ("guided_gradcam", "guided Grad-CAM weights the feature maps of a conv layer"),
    ],
    ids=["featuremaps", "deconv", "guided_gradcam"],
)
def test_a_network_without_conv_layers_is_explained(sweep, three, tmp_path, mode, says):
    result = cnncli_here("viz", mode, f"ckpt_path={sweep['mlp']}", f"image={three}", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {says}")
    assert "no conv layer" in result.stderr and "viz occlusion" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("*.png"))


def test_an_unknown_layer_lists_the_layers(short_run, three, tmp_path):
    # in-process (the config composed as the CLI composes it): the message, not the exit path, is under test
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "viz",
            [
                f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}",
                f"image={three}",
                "mode=featuremaps",
                "layer=conv9",
                f"out={tmp_path}",
            ],
        )
    with pytest.raises(ConfigError) as error:
        visualize(cfg)
    assert str(error.value) == (
        "layer: 'conv9' is not a layer with feature maps; the layers are: "
        "0 (Conv2d), 1 (ReLU), 2 (MaxPool2d), 3 (Conv2d), 4 (ReLU), 5 (MaxPool2d)"
    )


def test_unknown_mode_is_refused(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit:
        command_line(["saliency", "ckpt_path=x.ckpt"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown viz mode 'saliency'; choose from: featuremaps, filters, cam, occlusion, deconv, guided, "
        "guided_gradcam, attention"
    )


def test_help_lists_the_modes(tmp_path):
    result = cnncli("viz", "--help", cwd=tmp_path)
    assert result.returncode == 0 and all(f"  {mode} " in result.stdout for mode in MODES)


def test_outputs_of_other_targets_and_options_never_replace_one_another(short_run, three, tmp_path):
    # in-process: visualize() as the CLI calls it (the modes themselves are drawn in lenet_viz)
    ckpt = short_run / "checkpoints" / "best.ckpt"

    def draw(*overrides):
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("viz", [f"ckpt_path={ckpt}", f"image={three}", f"out={tmp_path}", *overrides])
        return [path.name for path in visualize(cfg)]

    assert draw("mode=cam", "target=3") == ["cam_three_layer5_class3.png"]
    assert draw("mode=cam", "target=8") == ["cam_three_layer5_class8.png"]
    assert draw("mode=cam", "target=8", "layer=3") == ["cam_three_layer3_class8.png"]
    assert draw("mode=occlusion", "target=8", "occlusion.patch=4", "occlusion.stride=4") == [
        "occlusion_three_class8_patch4_stride4.png",
        "occlusion_three_class8_patch4_stride4.npy",
    ]
    assert draw("mode=featuremaps", "layer=3", "max_maps=4") == ["featuremaps_three_3_first4.png"]
    assert draw("mode=filters", "ascent.steps=2", "ascent.start=blank", "max_maps=4") == [
        "filters_0_first4.png",
        "filters_3_maximized_first4_steps2_startblank.png",
    ]
    assert len(list(tmp_path.iterdir())) == 8  # every picture kept


def test_the_same_name_again_says_it_replaced_the_file(short_run, three, tmp_path, capsys):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("viz", [f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}", f"image={three}",
                              f"out={tmp_path}", "mode=cam", "target=3"])  # fmt: skip
    visualize(cfg)
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "cam_three_layer5_class3.png")
    visualize(cfg)
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"{tmp_path / 'cam_three_layer5_class3.png'} (replaced the earlier one)"
    )


def test_out_below_a_file_is_one_line(short_run, three, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    out = tmp_path / "notes.txt" / "viz"
    result = cnncli_here(
        "viz",
        "cam",
        f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}",
        f"image={three}",
        f"out={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: out={out}: {tmp_path / 'notes.txt'} is a file, not a folder"
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_unet_shows_its_up_convolutions_and_filters_and_refuses_cam(unet_run, tmp_path):
    """`cnncli viz featuremaps` of the shapes U-Net without layer=: its up-convolutions among the maps;
    filters: its first kernels and the inputs that maximize its class score maps; cam: one line naming those
    two, and nothing written."""
    from cnncli.data.shapes import draw

    ckpt = unet_run / "checkpoints" / "best.ckpt"
    image, _ = draw(np.random.default_rng(5), 48, 3)
    Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "shape.png")
    result = cnncli_here("viz", "featuremaps", f"ckpt_path={ckpt}", f"image={tmp_path / 'shape.png'}", "max_maps=8",
                         f"out={tmp_path / 'maps'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    # depth 3: three up-convolutions (64, 32, 16 maps: the first 8 drawn), and the head's 4 class score maps
    assert {f"featuremaps_shape_up.{i}.up_first8.png" for i in range(3)} <= set(names)
    assert "featuremaps_shape_head.png" in names and "featuremaps_shape_down.0.0_first8.png" in names
    result = cnncli_here("viz", "filters", f"ckpt_path={ckpt}", "ascent.steps=5", f"out={tmp_path / 'filters'}",
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "head: mean activation of its 4 filters" in result.stdout  # one per class
    assert sorted(p.name for p in (tmp_path / "filters").iterdir()) == [
        "filters_head_maximized_steps5.png", "filters_stem.0.png"]  # fmt: skip
    result = cnncli_here("viz", "cam", f"ckpt_path={ckpt}", f"image={tmp_path / 'shape.png'}",
                         f"out={tmp_path / 'cam'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: viz cam explains a classifier's score of one class for the whole image")
    assert result.stderr.strip().endswith("the modes that fit it: featuremaps, filters, deconv, guided")
    assert not (tmp_path / "cam").exists()


# ----------------------------------------------------------------------------- deconvnet, guided, attention


def test_deconv_guided_and_guided_gradcam_pictures(lenet_viz):
    out, stdout = lenet_viz
    assert_picture(out / "deconv_three_3_top9.png", (1280, 410))  # input + 9 projections: two rows of 8
    assert_picture(out / "guided_three_3_top9.png", (1280, 410))
    assert_picture(out / "guided_gradcam_three_layer5_class3.png", (1400, 400))
    assert (
        "3: the strongest unit of its 9 most active maps, projected to pixels by deconvnet (Zeiler & Fergus); "
        "receptive field up to 14x14 pixels" in stdout
    )


def test_projections_of_c3_units_stay_in_their_receptive_fields(short_run, three):
    """C3's unit (c, i, j) sees the 14x14 pixels from (2i, 2j): C1's 5x5 kernels, S2's 2x2 pools, C3's own 5x5
    (5 + 1 + 2 * 4 = 14). The boxes drawn are those, and neither rule projects anything outside them."""
    from cnncli.commands.predict import CheckpointModel
    from cnncli.visualize import load_image, receptive_fields

    net = CheckpointModel(str(short_run / "checkpoints" / "best.ckpt"), trust_code=False)
    x, _ = load_image(str(three), net)
    c3 = net.model[3]
    for rule in (_DeconvReLU, _GuidedReLU):
        found, units = project_units(net.model, c3, x, rule, count=9)
        boxes = receptive_fields(net.model, c3, x, units)
        assert boxes == [(2 * i, 2 * i + 13, 2 * j, 2 * j + 13) for _, i, j, _ in units]
        for projection, (top, bottom, left, right) in zip(found, boxes):
            assert projection[0, top : bottom + 1, left : right + 1].any()
            outside = projection.clone()
            outside[0, top : bottom + 1, left : right + 1] = 0
            assert not outside.any()
    # S4 adds its 2x2 pool: 16x16 from (4i, 4j); the boxes do not depend on which pool inputs were the maxima
    assert receptive_fields(net.model, net.model[5], x, [(0, 1, 2)]) == [(4, 19, 8, 23)]


def test_deconv_of_a_first_layer_unit_is_its_filter_in_its_receptive_field(short_run, three):
    """Below C1 there is no ReLU: the projection of C1's unit (c, i, j) is its 5x5 kernel placed on the unit's
    receptive field, zero everywhere else (the input is the network's normalized one, so exactly the kernel)."""
    from cnncli.commands.predict import CheckpointModel
    from cnncli.visualize import load_image

    net = CheckpointModel(str(short_run / "checkpoints" / "best.ckpt"), trust_code=False)
    x, _ = load_image(str(three), net)
    conv = net.model[0]
    found, units = project_units(net.model, conv, x, _DeconvReLU, count=6)
    assert [c for c, *_ in units] != [] and len(found) == 6
    with torch.no_grad():
        maps = conv(x)[0]
    for projection, (c, i, j, activation) in zip(found, units):
        assert activation == pytest.approx(maps[c].max().item())  # each map's strongest unit
        assert torch.equal(projection[0, i : i + 5, j : j + 5], conv.weight[c, 0].detach())
        outside = projection.clone()
        outside[0, i : i + 5, j : j + 5] = 0
        assert not outside.any()
    assert [a for *_, a in units] == sorted((a for *_, a in units), reverse=True)  # the most active maps first


def test_the_rules_differ_from_each_other_and_from_the_gradient(short_run, three):
    """Above C3's ReLU the three backward passes part: the gradient masks by the forward input, the
    deconvnet rectifies the signal only, guided backpropagation does both."""
    from cnncli.commands.predict import CheckpointModel
    from cnncli.visualize import load_image

    net = CheckpointModel(str(short_run / "checkpoints" / "best.ckpt"), trust_code=False)
    x, _ = load_image(str(three), net)
    deconv, units = project_units(net.model, net.model[5], x, _DeconvReLU, count=3)
    guided, same = project_units(net.model, net.model[5], x, _GuidedReLU, count=3)
    assert units == same
    pixels = x.clone().requires_grad_()
    saved = {}
    handle = net.model[5].register_forward_hook(lambda m, i, o: saved.update(maps=o))
    net.model(pixels)
    handle.remove()
    c, i, j, _ = units[0]
    (gradient,) = torch.autograd.grad(saved["maps"][0, c, i, j], pixels)
    assert not torch.allclose(deconv[0], guided[0]) and not torch.allclose(deconv[0], gradient[0])
    assert (guided[0] != 0).sum() <= (deconv[0] != 0).sum()  # the forward mask only removes paths


def test_relus_computed_by_f_relu_get_the_rule_too(sweep):
    """ResNet-20's blocks call F.relu (no nn.ReLU module): the rule still applies, and a network of GELUs has none."""
    from cnncli.commands.predict import CheckpointModel
    from cnncli.models.convnext import convnext_tiny

    resnet = CheckpointModel(str(sweep["resnet20"]), trust_code=False)
    assert not any(isinstance(m, torch.nn.ReLU) for m in resnet.model.modules())
    assert computes_relu(resnet.model, torch.zeros(1, 1, 32, 32))
    assert not computes_relu(convnext_tiny(num_classes=10, image_size=32).eval(), torch.zeros(1, 3, 32, 32))


def test_rollout_adds_the_residual_path_and_multiplies_through_the_blocks():
    uniform = torch.full((3, 3), 1 / 3)
    one = rollout([uniform])
    assert torch.allclose(one, 0.5 * uniform + 0.5 * torch.eye(3))
    two = rollout([uniform, torch.eye(3)])  # a block attending to itself only changes nothing
    assert torch.allclose(two, one) and torch.allclose(rollout([uniform] * 4).sum(dim=1), torch.ones(3))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A two-block vit_tiny, one epoch of two batches on the digits."""
    folder = tmp_path_factory.mktemp("vit")
    result = cnncli("train", f"hydra.run.dir={folder / 'run'}", "model=vit_tiny", "model.num_layers=2",
                    "model.hidden_dim=32", "model.num_heads=2", "model.mlp_dim=64", "trainer.max_epochs=1",
                    "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false", *QUIET,
                    cwd=folder)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder / "run" / "checkpoints" / "best.ckpt"


@pytest.mark.slow
def test_attention_rollout_of_a_vit(tiny_vit, three, tmp_path):
    from cnncli.commands.predict import CheckpointModel

    result = cnncli("viz", "attention", f"ckpt_path={tiny_vit}", f"image={three}", f"out={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_picture(tmp_path / "attention_three.png", (1200, 440))
    assert (tmp_path / "attention_three_blocks.png").is_file()
    assert "attention rollout of the class token through 2 blocks over a 8x8 grid of 4x4 patches" in result.stdout
    net = CheckpointModel(str(tiny_vit), trust_code=False)
    weights = attention_weights(net.model, torch.zeros(1, 1, 32, 32))
    assert [w.shape for w in weights] == [(65, 65)] * 2  # the class token and 64 patches, per block
    assert torch.allclose(weights[0].sum(dim=1), torch.ones(65))  # softmax rows, heads averaged
    assert torch.backends.mha.get_fastpath_enabled() and all(
        not m._forward_pre_hooks for m in net.model.modules())  # fmt: skip


@pytest.mark.slow
def test_each_mode_refuses_what_it_cannot_explain_naming_those_that_fit(tiny_vit, short_run, three, tmp_path):
    args = (f"image={three}", f"out={tmp_path / 'viz'}")
    result = cnncli_here("viz", "deconv", f"ckpt_path={tiny_vit}", *args, cwd=tmp_path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: viz deconv applies a rule for ReLUs (Zeiler & Fergus; Springenberg et al.)")
    assert result.stderr.strip().endswith("the modes that fit it: featuremaps, filters, cam, occlusion, attention")
    result = cnncli_here("viz", "attention", f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}", *args,
                         cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: viz attention draws a vision transformer's attention of its class token over the image patches; "
        "this network is a Sequential: the modes that fit it: featuremaps, filters, cam, occlusion, deconv, guided, "
        "guided_gradcam"
    )
    assert not (tmp_path / "viz").exists()  # a refusal leaves no folder it made


def test_the_rules_agree_with_captum_where_its_relu_hooks_reach():
    """captum's NeuronDeconvolution and NeuronGuidedBackprop hook nn.ReLU modules: on LeNet-5 (modules) they
    give exactly what the swapped rule gives. ResNet-20 calls F.relu: captum's hooks catch nothing and it
    returns the plain gradient, where the rule here still applies."""
    from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop

    from cnncli.models.resnet import resnet20

    torch.manual_seed(0)
    for model, layer, channels in ((lenet5(1, 10, 32), "3", 1), (resnet20(in_channels=3), "layers.5", 3)):
        model.eval()
        module = dict(model.named_modules())[layer]
        x = torch.randn(1, channels, 32, 32)
        deconv, units = project_units(model, module, x, _DeconvReLU, count=1)  # the strongest unit
        guided, _ = project_units(model, module, x, _GuidedReLU, count=1)
        for mine_deconv, mine_guided, (c, i, j, _) in zip(deconv, guided, units):
            theirs_deconv = NeuronDeconvolution(model, module).attribute(x, neuron_selector=(c, i, j))[0]
            theirs_guided = NeuronGuidedBackprop(model, module).attribute(x, neuron_selector=(c, i, j))[0]
            gradient = unit_gradient(model, module, x, (c, i, j))
            if layer == "3":
                assert torch.allclose(mine_deconv, theirs_deconv) and torch.allclose(mine_guided, theirs_guided)
                assert not torch.allclose(mine_deconv, gradient)
            else:
                assert torch.allclose(theirs_deconv, gradient) and torch.allclose(theirs_guided, gradient)
                assert not torch.allclose(mine_deconv, gradient) and not torch.allclose(mine_guided, gradient)


def unit_gradient(model, layer, x, unit):
    """The plain gradient of one unit (map, row, column) of `layer` with respect to the image x [1, C, H, W]."""
    pixels, saved = x.clone().requires_grad_(), {}
    handle = layer.register_forward_hook(lambda module, inputs, output: saved.update(maps=output))
    model(pixels)
    handle.remove()
    (gradient,) = torch.autograd.grad(saved["maps"][(0, *unit)], pixels)
    return gradient[0]


def test_the_attention_captured_is_the_blocks_own():
    """The hooks ask each block for its weights without changing what it computes; the first block's weights
    are softmax(q k^T / sqrt(d_head)) of its own projections, averaged over the heads, computed here by hand."""
    from cnncli.models.vit import vit_tiny

    torch.manual_seed(0)
    model = vit_tiny(in_channels=1, num_layers=2, hidden_dim=32, num_heads=2, mlp_dim=64).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
        weights = attention_weights(model, x)
        assert torch.equal(model(x), before)
        tokens = torch.cat([model.class_token, model._process_input(x)], dim=1) + model.encoder.pos_embedding
        block = model.encoder.layers[0]
        q, k, _ = F.linear(block.ln_1(tokens), block.self_attention.in_proj_weight,
                           block.self_attention.in_proj_bias).chunk(3, dim=-1)  # fmt: skip
        heads = [h.view(65, 2, 16).transpose(0, 1) for h in (q[0], k[0])]  # 2 heads of 16
        by_hand = (heads[0] @ heads[1].transpose(1, 2) / 16**0.5).softmax(dim=-1).mean(dim=0)
    assert len(weights) == 2 and torch.allclose(weights[0], by_hand, atol=1e-6)
    rolled = rollout(weights)
    assert torch.allclose(rolled.sum(dim=1), torch.ones(65))  # each token's rollout is a distribution
    assert rolled[0, 1:].reshape(8, 8).shape == (8, 8)  # the class token's share of each patch of the 8x8 grid


def test_swin_is_refused_by_attention_with_its_reason(three, tmp_path):
    """Swin's attention is local to windows and it has no class token: no rollout of a class token exists.
    (A two-block Swin of width 8: swin_t's refusal without building its 28M parameters.)"""
    from types import SimpleNamespace

    from torchvision.models import SwinTransformer

    from cnncli.errors import UserError
    from cnncli.visualize import attention

    swin = SwinTransformer([4, 4], embed_dim=8, depths=[2], num_heads=[1], window_size=[2, 2], num_classes=10)
    net = SimpleNamespace(model=swin.eval(), channels=3, image_size=32, task="classification")
    cfg = OmegaConf.create({"image": str(three)})
    with pytest.raises(UserError) as error:
        attention(cfg, net, torch.zeros(1, 3, 32, 32), None, tmp_path / "attention_three")
    message = str(error.value)
    assert message.startswith(
        "viz attention draws a vision transformer's attention of its class token over the image patches; this "
        "network is a SwinTransformer (Swin attends within windows and has no class token): the modes that fit it: "
    )
    assert "occlusion" in message and "attention" not in message.split("fit it: ")[1]
    assert "\n" not in message and not list(tmp_path.iterdir())


def test_a_tanh_lenet5_is_refused_by_the_relu_rules(short_run, three, tmp_path):
    """variant=classic: the same weights with tanh and average pooling (the checkpoint's config edited), no ReLU
    for the deconvnet's or guided backpropagation's rule to act on."""

    def classic(data):
        data["cnncli"]["config"]["model"]["variant"] = "classic"

    ckpt = edited_checkpoint(short_run, tmp_path, classic)
    for mode in ("deconv", "guided", "guided_gradcam"):
        result = cnncli_here("viz", mode, f"ckpt_path={ckpt}", f"image={three}", f"out={tmp_path / 'viz'}",
                             cwd=tmp_path)  # fmt: skip
        assert result.returncode == 1 and result.stderr.strip() == (
            f"error: viz {mode} applies a rule for ReLUs (Zeiler & Fergus; Springenberg et al.), and this network "
            "computes none (its layers: Conv2d, Tanh, AvgPool2d, Flatten, Linear, Dropout); the modes that fit it: "
            "featuremaps, filters, cam, occlusion"
        )
    assert not list((tmp_path / "viz").glob("*.png"))
