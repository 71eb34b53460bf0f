"""`cnncli params`: the counting engine (cnncli/layer_table.py) in-process against published figures, then
the command as a user runs it."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torchvision
from conftest import cnncli
from torch import nn

from cnncli.layer_table import layer_table, shape_text
from cnncli.models.lenet import lenet5

VGG16_WEIGHT_LAYERS = [1_792, 36_928, 73_856, 147_584, 295_168, 590_080, 590_080, 1_180_160, 2_359_808,
                       2_359_808, 2_359_808, 2_359_808, 2_359_808, 102_764_544, 16_781_312, 4_097_000]  # fmt: skip


def on_meta(builder, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return builder(*args, **kwargs)


@pytest.fixture(scope="module")
def tables():
    """Torchvision's reference networks, counted once: no weight is allocated."""
    models = {
        "vgg16": torchvision.models.vgg16,
        "resnet50": torchvision.models.resnet50,
        "alexnet": torchvision.models.alexnet,
        "convnext_tiny": torchvision.models.convnext_tiny,
    }
    return {name: layer_table(on_meta(builder), (3, 224, 224)) for name, builder in models.items()}


def rows_of(table, kind):
    return [row for row in table.rows if row.type.split()[0] == kind]


# ------------------------------------------------------------------------------------------------- engine


def test_lenet5_totals_and_formulas():
    table = layer_table(on_meta(lenet5), (1, 32, 32))
    assert (table.totals.params, table.totals.macs) == (61_706, 416_520)
    assert (table.totals.flops, table.totals.depth, table.totals.weight_layers) == (833_040, 5, 5)
    c1, c3 = rows_of(table, "Conv2d")
    assert (c1.formula, c1.params, c1.macs, c1.output) == ("(5*5*1)*6+6", 156, 117_600, "28x28x6")
    assert (c3.formula, c3.params, c3.output_shape) == ("(5*5*6)*16+16", 2_416, [16, 10, 10])
    assert [(r.formula, r.params) for r in rows_of(table, "Linear")] == [
        ("400*120+120", 48_120), ("120*84+84", 10_164), ("84*10+10", 850)]  # fmt: skip
    assert sum(r.percent for r in table.rows) == pytest.approx(100)
    assert table.totals.param_bytes == 61_706 * 4 and table.totals.buffers == 0


def test_vgg16(tables):
    table = tables["vgg16"]
    assert table.totals.params == 138_357_544
    assert table.totals.macs == pytest.approx(15.470e9, rel=1e-3)
    weights = [r for r in table.rows if r.type in ("Conv2d", "Linear")]
    assert [r.params for r in weights] == VGG16_WEIGHT_LAYERS
    assert (weights[2].formula, weights[2].output) == ("(3*3*64)*128+128", "112x112x128")
    assert weights[-1].formula == "4096*1000+1000"
    assert table.totals.depth == 16


def test_resnet50_and_alexnet(tables):
    resnet = tables["resnet50"].totals
    assert resnet.params == 25_557_032
    assert resnet.macs == pytest.approx(4.089e9, rel=1e-3)
    assert (resnet.depth, resnet.weight_layers) == (50, 54)  # the 4 projection shortcuts are off the long path
    bn1 = next(r for r in tables["resnet50"].rows if r.name == "bn1")
    assert (bn1.formula, bn1.params, bn1.buffer_formula, bn1.buffers) == ("2*64", 128, "2*64+1", 129)
    assert resnet.buffers == sum(r.buffers for r in tables["resnet50"].rows)
    relu = next(r for r in tables["resnet50"].rows if r.name == "layer1.0.relu")
    assert relu.calls == 3  # one ReLU module, called three times per bottleneck
    assert tables["alexnet"].totals.macs == pytest.approx(0.714e9, rel=1e-3)


def test_a_module_placed_under_two_names_gets_a_row_for_each_call():
    conv, norm = nn.Conv2d(3, 8, 3), nn.LocalResponseNorm(5)
    shared = nn.Sequential(conv, norm, nn.MaxPool2d(2), norm, nn.Conv2d(8, 4, 1))  # `norm` twice, one instance
    table = layer_table(shared, (3, 10, 10))
    rows = {row.name: row for row in table.rows}
    assert [(rows[n].output, rows[n].calls, rows[n].shared_with) for n in ("1", "3")] == [
        ("8x8x8", 1, ""), ("4x4x8", 1, "1")
    ]  # fmt: skip

    class Alias(nn.Module):  # a layer with weights registered under two names (an alias), called once
        def __init__(self):
            super().__init__()
            self.conv = self.stem = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.conv(x)

    rows = {row.name: row for row in layer_table(Alias(), (3, 10, 10)).rows}
    assert (rows["conv"].params, rows["stem"].params, rows["stem"].shared_with) == (224, 0, "conv")
    assert sum(row.params for row in rows.values()) == 224  # counted once


def test_convnext_counts_linear_layers_at_every_position(tables):
    table = tables["convnext_tiny"]
    assert table.totals.macs == pytest.approx(4.456e9, rel=5e-3)
    pointwise = next(r for r in table.rows if r.name == "features.1.0.block.3")
    assert (pointwise.type, pointwise.output, pointwise.output_shape) == ("Linear", "56x56x384", [56, 56, 384])
    assert pointwise.macs == 56 * 56 * 96 * 384  # torchinfo counts 96*384 here
    depthwise = next(r for r in table.rows if r.name == "features.1.0.block.0")
    assert (depthwise.formula, depthwise.macs) == ("(7*7*1)*96+96", 96 * 56 * 56 * 7 * 7)
    layer_scale = next(r for r in table.rows if r.name == "features.1.0")
    assert (layer_scale.type, layer_scale.params, layer_scale.macs) == ("CNBlock (layer_scale)", 96, 0)


def test_totals_agree_with_torch_flop_counter_and_formulas_evaluate(tables):
    from torch.utils.flop_counter import FlopCounterMode

    for name in ("resnet50", "convnext_tiny"):
        builder = getattr(torchvision.models, name)
        with FlopCounterMode(display=False) as counter:
            on_meta(builder).eval()(torch.zeros(1, 3, 224, 224, device="meta"))
        assert tables[name].totals.macs == counter.get_total_flops() // 2
    for table in tables.values():
        assert sum(r.params for r in table.rows) == table.totals.params
        for row in table.rows:
            assert eval(row.formula) == row.params, (row.name, row.formula)  # plain arithmetic, no names


def test_depth_folds_layers_into_their_parent(tables):
    vgg = on_meta(torchvision.models.vgg16)
    folded = layer_table(vgg, (3, 224, 224), depth=1)
    assert [(r.name, r.type, r.folded) for r in folded.rows] == [
        ("features", "Sequential", 13),
        ("avgpool", "AdaptiveAvgPool2d", 0),
        ("classifier", "Sequential", 3),
    ]
    assert [r.params for r in folded.rows] == [sum(VGG16_WEIGHT_LAYERS[:13]), 0, sum(VGG16_WEIGHT_LAYERS[13:])]
    assert sum(r.macs for r in folded.rows) == tables["vgg16"].totals.macs
    assert folded.rows[0].output == "7x7x512"
    (whole,) = layer_table(vgg, (3, 224, 224), depth=0).rows
    assert (whole.name, whole.params, whole.macs) == ("(model)", 138_357_544, tables["vgg16"].totals.macs)


def test_grouped_conv_spatial_linear_and_a_blocks_own_matmul():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
            self.grouped = nn.Conv2d(32, 64, 1, groups=4)
            self.proj = nn.Linear(64, 16)

        def forward(self, x):
            x = self.grouped(self.depthwise(x)).permute(0, 2, 3, 1)  # [N, H, W, C]
            y = self.proj(x)
            return y @ y.transpose(-1, -2)  # a matmul of two activations in the block's own code (attention's kind)

    table = layer_table(on_meta(Block), (32, 8, 8))
    matmul, depthwise, grouped, proj = table.rows  # the block has no parameters of its own: only its matmul's row
    assert (depthwise.formula, depthwise.macs) == ("(3*3*1)*32", 32 * 8 * 8 * 9)
    assert (grouped.formula, grouped.macs) == ("(1*1*8)*64+64", 64 * 8 * 8 * 8)
    assert (proj.macs, proj.output) == (8 * 8 * 64 * 16, "8x8x16")  # channels-last: still H x W x C
    assert (matmul.name, matmul.params, matmul.macs) == (
        "(model) (attention)",
        0,
        8 * 8 * 8 * 16,
    )  # [8, 8, 16] @ [8, 16, 8]
    assert matmul.macs_formula == "8*16*8*8" and eval(matmul.macs_formula) == matmul.macs
    assert table.totals.macs_outside_layers == 0
    assert table.totals.macs == depthwise.macs + grouped.macs + proj.macs + 8 * 8 * 8 * 16


def test_meta_model_stays_unallocated_and_modes_are_restored():
    model = on_meta(lenet5)
    model.train()
    model[0].eval()
    layer_table(model, (1, 32, 32))
    assert all(p.is_meta for p in model.parameters())
    assert model.training and not model[0].training
    assert shape_text([1, 96, 55, 55]) == "55x55x96" and shape_text([1, 4096]) == "4096"


def test_native_input_comes_from_the_builders_defaults():
    from cnncli.commands.params import native_input

    assert native_input("cnncli.models.lenet.lenet5") == {"channels": 1, "image_size": 32, "num_classes": 10}
    assert native_input("cnncli.models.mlp.mlp") == {"channels": 1, "image_size": 28, "num_classes": 10}
    assert native_input("cnncli.models.simple_cnn.simple_cnn") == {"channels": 3, "image_size": 64, "num_classes": 6}
    assert native_input("torchvision.models.vgg16") == {"channels": 3, "image_size": 224, "num_classes": 1000}


def test_an_input_the_model_cannot_take_is_a_config_error():
    from cnncli.commands.params import _count
    from cnncli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^input_size: linear cannot take a 4x4x1 input \("):
        _count({"_target_": "torch.nn.Linear", "in_features": 5, "out_features": 3}, (1, 4, 4), None, "linear")


# ----------------------------------------------------------------------------------------------------- CLI


PEAK_RSS = """
import resource, sys
sys.argv = ["cnncli", *sys.argv[1:]]
from cnncli.cli import main
main()
assert not any(m.split(".")[0] in ("lightning", "pytorch_lightning") for m in sys.modules), "imported lightning"
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def peak_rss(*args: str, cwd) -> subprocess.CompletedProcess:
    """`cnncli ARGS` in a Python that reports its own peak RSS on stderr (and checks it never loaded Lightning)."""
    return subprocess.run([sys.executable, "-c", PEAK_RSS, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every command line this file runs, started together (each one is mostly Python start-up)."""
    cwd = tmp_path_factory.mktemp("params")
    commands = {
        "lenet5": (peak_rss, "params", "model=lenet5"),
        "vgg19": (peak_rss, "params", "model=vgg19", "format=csv"),
        "json": (cnncli, "params", "model=lenet5", "format=json"),
        "compare": (cnncli, "params", "model=lenet5,mlp"),
        "vgg16": (cnncli, "params", "model=vgg16"),
        "alexnet": (cnncli, "params", "model=alexnet", "format=markdown"),
        "unknown": (cnncli, "params", "model=lenet6"),
        "too_small": (cnncli, "params", "model=lenet5", "input_size=8"),
        "unet": (cnncli, "params", "model=unet"),
        "unet_shapes": (cnncli, "params", "model=unet", "data=shapes", "format=json"),
        "unet_same": (cnncli, "params", "model=unet", "model.variant=same", "input_size=576", "format=json"),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(run, *args, cwd=cwd) for key, (run, *args) in commands.items()}
        results = {key: future.result() for key, future in futures.items()}
    results["cwd"] = cwd
    return results


def ok(result) -> str:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def table_rows(stdout: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("│ ").split("│")] for line in stdout.splitlines() if "│" in line]


def test_cli_lenet5_table(cli):
    out = ok(cli["lenet5"])
    rows = {row[0]: row for row in table_rows(out)}
    assert rows["0"][1:5] == ["Conv2d", "28x28x6", "(5*5*1)*6+6", "156"]
    assert rows["7"][3:6] == ["400*120+120", "48,120", "48,000"]
    assert rows["total"][-3:] == ["61,706", "416,520", "100.00%"]
    assert "input 32x32x1 (native), 10 classes" in out
    assert "FLOPs = 2 x MACs = 833,040" in out and "x 4 bytes (float32)" in out
    assert "buffers:" in out and "parameter memory:" in out and "activation memory:" in out
    assert list(cli["cwd"].iterdir()) == []  # nothing written


def test_cli_json(cli):
    data = json.loads(ok(cli["json"]))
    assert data["model"] == "lenet5" and data["device"] == "cpu"  # small: counted on the CPU (CPU_MAX_PARAMS)
    assert data["input"] == {"channels": 1, "height": 32, "width": 32, "from": "native"}
    assert (data["totals"]["params"], data["totals"]["macs"], data["totals"]["depth"]) == (61_706, 416_520, 5)
    c1 = data["rows"][0]
    assert (c1["formula"], c1["output_shape"], c1["macs"]) == ("(5*5*1)*6+6", [6, 28, 28], 117_600)
    assert data["paper"]["params"] == 60_000


def test_cli_comparison_of_several_models(cli):
    rows = {row[0]: row for row in table_rows(ok(cli["compare"]))}
    assert rows["lenet5"][1:4] == ["32x32x1", "10", "61,706"] and rows["lenet5"][7] == "5"
    assert rows["mlp"][1:4] == ["28x28x1", "10", "235,146"] and rows["mlp"][7] == "3"


def test_cli_vgg16(cli):
    rows = table_rows(ok(cli["vgg16"]))
    weights = [row for row in rows if row[1] in ("Conv2d", "Linear")]
    assert [int(row[4].replace(",", "")) for row in weights] == VGG16_WEIGHT_LAYERS
    assert weights[0][3] == "(3*3*3)*64+64" and weights[-1][3] == "4096*1000+1000"
    assert rows[-1][4:6] == ["138,357,544", "15,470,264,320"]


def test_cli_alexnet_single_tower(cli):
    out = ok(cli["alexnet"])
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")][2:]
    weights = [row for row in rows if row[1] in ("Conv2d", "Linear")]
    assert [row[2] for row in weights] == ["55x55x96", "27x27x256", "13x13x384", "13x13x384", "13x13x256",
                                           "4096", "4096", "1000"]  # fmt: skip
    assert [row[2] for row in rows if row[1] == "MaxPool2d"][-1] == "6x6x256"
    assert "62,378,344" in out and "1,135,256,096" in out  # 1.135 G MACs at 227x227x3
    # each response normalization its own layer (one module placed twice showed as `LocalResponseNorm x2`)
    assert [(row[0], row[1], row[2]) for row in rows if row[1].startswith("LocalResponseNorm")] == [
        ("features.2.norm", "LocalResponseNorm", "55x55x96"), ("features.6.norm", "LocalResponseNorm", "27x27x256")
    ]  # fmt: skip


def test_cli_bad_input(cli):
    unknown = cli["unknown"]
    assert unknown.returncode != 0 and "Could not find 'model/lenet6'" in unknown.stderr
    assert "lenet5" in unknown.stderr  # Hydra's list of options
    small = cli["too_small"]
    assert small.returncode == 2 and "Traceback" not in small.stderr
    assert small.stderr.startswith("error: model.image_size: lenet5 needs inputs of at least")


def test_vgg19_costs_no_more_memory_than_lenet5(cli):
    """Built on the meta device: vgg19's float32 weights alone would be 548 MiB."""
    lenet, vgg19 = (int(ok(cli[key]) and cli[key].stderr.split("PEAK_RSS_KB")[-1]) for key in ("lenet5", "vgg19"))
    assert vgg19 - lenet < 50 * 1024, (lenet, vgg19)
    assert ok(cli["vgg19"]).splitlines()[-1].startswith("total,,,,,143667240,")


def test_an_image_folder_without_a_class_count_is_one_line(tmp_path):
    from conftest import cnncli_here

    result = cnncli_here("params", "data=imagefolder", "data.root=x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: data.num_classes: params does not read the image folder: give data.num_classes=N"
    )


def test_cli_unet_is_the_papers_network_with_its_up_convolution_and_crop_sizes(cli):
    """`cnncli params model=unet`: the paper's 572 -> 388 network (the model config trains a small padded one
    on shapes), each up-convolution's output side worked out, each crop's sizes."""
    out = ok(cli["unet"])
    assert "input 572x572x1 (native: the paper's network (variant=paper, base_channels=64, depth=4" in out
    rows = {row[0]: row for row in table_rows(out)}
    assert rows["up.0.up"][1:5] == [
        "ConvTranspose2d",
        "56x56x512  (28-1)x2-2x0+2 = 56",
        "(2*2*512)*1024+512",
        "2,097,664",
    ]
    assert rows["up.0.crop"][1:3] == ["Crop", "56x56x512  crop 64->56"]
    assert rows["up.3.crop"][2] == "392x392x64  crop 568->392"
    assert rows["head"][2] == "388x388x2"
    assert rows["total"][4] == "31,030,658"
    trained = json.loads(ok(cli["unet_shapes"]))  # data= given: the network cnncli trains
    assert trained["input"]["from"] == "data=shapes" and trained["totals"]["params"] == 482_788
    same = json.loads(ok(cli["unet_same"]))  # an option on the command line wins over the paper's
    assert same["totals"]["params"] == 31_030_658  # padding changes no parameter count
    assert not any(row["size_note"].startswith("crop") for row in same["rows"])
    up = next(row for row in same["rows"] if row["name"] == "up.0.up")
    assert up["size_note"] == "(36-1)x2-2x0+2 = 72" and up["output_shape"] == [512, 72, 72]


def test_unet_data_options_without_data_change_the_papers_input(tmp_path):
    """`data.image_size=576` without `data=` (the padded variant takes multiples of 16): the paper's network
    at that side, as the size error's hint says, not the shapes data's 48x48."""
    from conftest import cnncli_here

    args = ("params", "model=unet", "model.variant=same", "format=json")
    result = cnncli_here(*args, "data.image_size=576", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout)
    assert (info["input"]["height"], info["input"]["channels"], info["num_classes"]) == (576, 1, 2)
    assert info["input"]["from"] == "native, data.image_size=576: the paper's network (base_channels=64, depth=4, " \
        "batch_norm=False)"  # fmt: skip
    assert info["totals"]["params"] == 31_030_658
    result = cnncli_here(*args, cwd=tmp_path)  # 572 is no multiple of 16: one line with the hint
    assert result.returncode == 2 and result.stderr.strip().endswith("got 572 (set data.image_size)")
