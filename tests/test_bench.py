"""`cnncli bench`: the speed table (a benchmark's output, not a timed test): its shape, positive figures, an
order that cannot be wrong (VGG-11 does 660x LeNet-5's work per image), the papers' figures in their own
columns, and one-line errors."""

import csv as csv_module
import io
import json

import pytest
from conftest import cnncli, cnncli_here


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("bench")
    result = cnncli(
        "bench", "model=lenet5,vgg11,swin_t", "input_size=32", "batch_size=4", "warmup=1", "runs=3", "train=true",
        "format=json", "threads=1", cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {model["model"]: model for model in json.loads(result.stdout)["models"]}


def test_the_table_measures_each_model_and_a_bigger_one_is_slower(bench):
    assert list(bench) == ["lenet5", "vgg11", "swin_t"]
    for model in bench.values():
        assert model["device"] == "cpu" and model["batch_size"] == 4 and model["precision"] == "32"
        for mode in ("inference", "train"):
            speed = model[mode]
            assert len(speed["batch_seconds"]) == 3 and all(s > 0 for s in speed["batch_seconds"])
            assert speed["images_per_second"] == pytest.approx(4 / sorted(speed["batch_seconds"])[1])
        assert model["train"]["images_per_second"] < model["inference"]["images_per_second"]
    lenet, vgg = bench["lenet5"], bench["vgg11"]
    assert (lenet["params"], lenet["macs"], lenet["input"]["channels"]) == (61_706, 416_520, 1)
    assert vgg["macs"] > 600 * lenet["macs"]
    assert vgg["inference"]["images_per_second"] < lenet["inference"]["images_per_second"]
    assert vgg["train"]["images_per_second"] < lenet["train"]["images_per_second"]


def test_the_papers_figures_stand_in_their_own_columns(bench):
    assert bench["lenet5"]["paper"] is None
    assert bench["swin_t"]["paper"] == {
        "images_per_second": 1325.6,
        "top1": 81.3,
        "hardware": "A100, TF32, channels last, 224x224",
        "source": "Liu et al. 2022, A100 table",
    }


def test_markdown_and_csv_have_the_same_columns(tmp_path):
    args = ("bench", "model=convnext_tiny,swin_t", "input_size=32", "batch_size=2", "warmup=0", "runs=1")
    markdown = cnncli(*args, "format=markdown", cwd=tmp_path)
    assert markdown.returncode == 0, markdown.stderr[-2000:]
    header, rule, *rows = [line for line in markdown.stdout.splitlines() if line.startswith("|")]
    assert header.split("|")[1:-1] == [
        " model ", " input (HxWxC) ", " params ", " MACs ", " batch ", " device ", " precision ", " infer img/s ",
        " paper img/s ", " paper top-1 ", " paper hardware ",
    ]  # fmt: skip
    convnext = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    assert convnext[:3] == ["convnext_tiny", "32x32x3", "28,589,128"] and convnext[-3:-1] == ["1,943.5", "82.1%"]
    assert "measured on the paper's hardware, not this machine" in markdown.stdout
    csv = cnncli(*args, "format=csv", "channels_last=true", "precision=bf16-mixed", cwd=tmp_path)
    assert csv.returncode == 0, csv.stderr[-2000:]
    table = list(csv_module.DictReader(io.StringIO(csv.stdout)))
    assert [row["model"] for row in table] == ["convnext_tiny", "swin_t"]
    assert (table[1]["precision"], table[1]["channels_last"], table[1]["paper_top1"]) == ("bf16-mixed", "True", "81.3")
    assert float(table[1]["inference_images_per_second"]) > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("precision=8",), "error: precision: '8' is not one of: 32, tf32, 16-mixed, bf16-mixed"),
        (("batch_size=0",), "error: batch_size: must be an integer >= 1, got 0"),
        (("train=yes",), "error: train: must be true or false, got 'yes'"),
        (("device=tpu",), "error: device: 'tpu' is not a device: auto, cpu, cuda, cuda:N or mps"),
        (("model=lenet5,mlp", "runs=0"), "error: runs: must be an integer >= 1, got 0"),
    ],
)
def test_bad_values_are_one_line(tmp_path, args, message):
    result = cnncli_here("bench", *args, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (2, message)


def test_a_gpu_that_is_not_there_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = cnncli_here("bench", "device=cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "error: device: cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)"
    )
