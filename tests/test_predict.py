"""cnncli predict on image files reproduces what eval measures on the same test images."""

import csv
import json

import pytest
from conftest import cnncli, cnncli_here, cnncli_imports
from PIL import Image

from cnncli.data.digits import DigitsDataModule


@pytest.fixture(scope="module")
def test_pngs(tmp_path_factory):
    """The digits test split as PNG files in <label>/<n>.png: the 32x32 images the run tested on."""
    folder = tmp_path_factory.mktemp("pngs")
    data = DigitsDataModule(name="digits", channels=1, image_size=32, num_classes=10, class_names=list("0123456789"))
    data.setup()
    split = data.splits["test"]
    for n, (image, label) in enumerate(zip(split.images, split.labels)):
        (folder / str(int(label))).mkdir(exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / str(int(label)) / f"{n}.png")
    return folder


@pytest.mark.slow
def test_predict_on_the_test_pngs_reproduces_eval_accuracy(short_run, test_pngs, tmp_path):
    ckpt = short_run / "checkpoints" / "best.ckpt"
    evaluation = cnncli("eval", f"ckpt_path={ckpt}", f"out={tmp_path}", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    accuracy = json.loads((tmp_path / "eval.json").read_text())["test/acc1"]
    result = cnncli(
        "predict",
        f"ckpt_path={ckpt}",
        f"inputs=[{test_pngs}]",
        "top_k=3",
        f"output={tmp_path / 'preds.csv'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "preds.csv")))
    assert len(rows) == 270 * 3
    first = [r for r in rows if r["rank"] == "1"]
    correct = sum(r["path"].split("/")[-2] == r["class"] for r in first)
    assert correct / 270 == pytest.approx(accuracy, abs=1e-6)  # eval.json holds a float32
    probabilities = [float(r["probability"]) for r in rows[:3]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert "rank" in result.stdout and "probability" in result.stdout


def test_unreadable_files_are_listed_the_others_predicted_exit_1(short_run, test_pngs, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (50, 40), (200, 10, 10)).save(rgb)  # wrong channels and size: converted
    digit = next((test_pngs / "3").iterdir())
    result = cnncli(
        "predict",
        f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}",
        f"inputs=[{digit},{rgb},{tmp_path / 'notes.png'}]",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "notes.png" in result.stdout and "1 of 3 files could not be read" in result.stderr
    assert str(digit) in result.stdout and str(rgb) in result.stdout
    assert "Traceback" not in result.stderr


def test_missing_input_is_one_line(short_run, tmp_path):
    result = cnncli_here(
        "predict",
        f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}",
        f"inputs=[{tmp_path / 'nope.png'}]",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and result.stderr.strip() == f"error: no such file or folder: {tmp_path / 'nope.png'}"


@pytest.mark.slow
def test_predict_from_an_exported_onnx_file_matches_the_checkpoint(short_run, test_pngs, tmp_path):
    ckpt = short_run / "checkpoints" / "best.ckpt"
    exported = cnncli("export", f"ckpt_path={ckpt}", "format=onnx", f"out={tmp_path}/", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    outputs, imported = {}, {}
    for name, source in (("ckpt", f"ckpt_path={ckpt}"), ("onnx", f"model_file={tmp_path / 'model.onnx'}")):
        result, imported[name] = cnncli_imports(
            "predict", source, f"inputs=[{test_pngs}]", "top_k=1", f"output={tmp_path / name}.csv", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        outputs[name] = [(r["path"], r["class"]) for r in csv.DictReader(open(tmp_path / f"{name}.csv"))]
    assert outputs["onnx"] == outputs["ckpt"] and len(outputs["onnx"]) == 270
    # the deployment path: onnxruntime, numpy and PIL, no torch (a checkpoint needs it)
    assert {"onnxruntime", "numpy", "PIL"} <= imported["onnx"] and "torch" not in imported["onnx"]
    assert not {"torchvision", "lightning", "sklearn", "matplotlib"} & imported["onnx"]
    assert "torch" in imported["ckpt"]


def test_an_output_that_cannot_be_a_csv_file_is_one_line_before_predicting(short_run, test_pngs, tmp_path):
    digit = next((test_pngs / "3").iterdir())
    note = tmp_path / "notes.txt"
    note.write_text("keep")
    refused = {
        str(tmp_path): f"output={tmp_path} is a folder, not a file; give a file name",
        str(note / "preds.csv"): f"output={note / 'preds.csv'}: {note} is a file, not a folder",
    }
    for output, line in refused.items():
        result = cnncli_here(
            "predict", f"ckpt_path={short_run / 'checkpoints' / 'best.ckpt'}", f"inputs=[{digit}]", f"output={output}",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1 and result.stderr == f"error: {line}\n"
        assert result.stdout == ""  # refused before anything was predicted
    assert note.read_text() == "keep"


def test_a_device_torch_cannot_see_is_one_line(short_run, test_pngs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    ckpt = short_run / "checkpoints" / "best.ckpt"
    args = ("predict", f"ckpt_path={ckpt}", f"inputs=[{test_pngs}]")
    result = cnncli_here(*args, "device=cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: device: cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)"
    )
    result = cnncli_here(*args, "device=auto", "top_k=1", cwd=tmp_path)
    assert result.returncode == 0 and "probability" in result.stdout  # auto: the CPU here
