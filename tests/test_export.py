"""`cnncli export`: ONNX, TorchScript and torch.export files that reproduce the checkpoint's predictions
without cnncli, their embedded metadata, verification failures, errors, and an export sweep of the zoo.

The zoo sweep runs in two worker processes (this file run as a script), one model at a time each, so that
it takes about half the time on two cores: about 75 s for the 23 classifiers, plus about 20 s for the two
torchvision segmentation models (their COST; 215 s measured for all 26 on a busy machine).
CNNCLI_TEST_ZOO_SUBSET=1 sweeps only one model per architecture code path (14 models), not the deeper variants
of the same code.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cnncli, cnncli_here

FORMATS = {"onnx": ".onnx", "torchscript": ".ts", "exported_program": ".pt2"}


def _ckpt_copy(short_run: Path, root: Path) -> Path:
    """The short run's best checkpoint inside a run folder of our own: exports land in root/run/export/."""
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(short_run / "checkpoints" / "best.ckpt", ckpt)
    return ckpt


@pytest.fixture(scope="module")
def exported(short_run, tmp_path_factory):
    """Each format exported from one checkpoint with the default `out`, verified on the whole test split,
    and `cnncli eval` of the same checkpoint, the two commands side by side."""
    root = tmp_path_factory.mktemp("export")
    ckpt = _ckpt_copy(short_run, root)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    commands = {  # one multirun, so the three exports share one start-up
        "export": ["export", "-m", f"ckpt_path={ckpt}", f"format={','.join(FORMATS)}", "test_images=null"],
        "eval": ["eval", f"ckpt_path={ckpt}", f"out={root / 'eval'}"],
    }
    running = {
        name: subprocess.Popen(
            ["cnncli", *args], cwd=root, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, args in commands.items()
    }
    results = {name: (*p.communicate(timeout=600), p.returncode) for name, p in running.items()}
    for name, (out, err, rc) in results.items():
        assert rc == 0, f"{name}: {out[-3000:]}{err[-3000:]}"
    return {
        "ckpt": ckpt,
        "root": root,
        "stdout": {name: out for name, (out, _, _) in results.items()},
        "files": {fmt: root / "run" / "export" / f"model{suffix}" for fmt, suffix in FORMATS.items()},
    }


@pytest.fixture(scope="module")
def checkpoint_predictions(exported):
    """The checkpoint model's top-1 predictions on the whole test split, in PyTorch, as `cnncli eval`
    computes them, with the raw uint8 test images and their labels."""
    from cnncli.checkpoint import Checkpoint

    checkpoint = Checkpoint(exported["ckpt"])
    data = checkpoint.datamodule()
    data.setup("test")
    model = checkpoint.network()
    with torch.inference_mode():
        predictions = torch.cat([model(x).argmax(1) for x, _ in data.test_dataloader()])
    test = data.splits["test"]
    return {
        "predictions": predictions.tolist(),
        "labels": test.labels.tolist(),
        "images": test.images.numpy(),
        "stored": {
            "config": checkpoint.run_config,
            "normalization": checkpoint.normalization,
            "cnncli_version": checkpoint.cnncli_version,
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_is_verified_on_the_whole_test_split(exported, checkpoint_predictions, fmt):
    path = exported["files"][fmt]
    assert path.is_file()
    report = json.loads(Path(f"{path}.verify.json").read_text())
    assert report["verified"] is True and report["problems"] == []
    assert report["inputs"]["test"]["samples"] == len(checkpoint_predictions["labels"]) == 270
    for inputs in report["inputs"].values():
        assert inputs["max_abs_diff"] <= 1e-4 and inputs["top1_agreement"] == 1.0
    assert report["dynamic_batch"] is True
    assert f"{fmt} export vs PyTorch" in exported["stdout"]["export"]
    assert exported["stdout"]["export"].count("verified: wrote") == len(FORMATS)
    # atomic write: no temporary file left beside it
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_metadata_carries_what_a_consumer_needs(exported, checkpoint_predictions):
    stored = checkpoint_predictions["stored"]
    canonical = json.dumps(stored["config"], sort_keys=True, separators=(",", ":"))
    report = json.loads(Path(f"{exported['files']['onnx']}.verify.json").read_text())
    m = report["metadata"]
    assert m["class_names"] == [str(i) for i in range(10)] and m["num_classes"] == 10
    assert (m["channels"], m["image_size"]) == (1, [32, 32])
    assert m["input_shape"] == ["batch", 1, 32, 32]
    assert (m["mean"], m["std"]) == (stored["normalization"]["mean"], stored["normalization"]["std"])
    assert m["cnncli_version"] and m["checkpoint_cnncli_version"] == stored["cnncli_version"]
    assert m["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert report["opset"] >= 18 and report["onnxruntime"]


# A consumer with no cnncli: plain onnxruntime and plain torch, the embedded metadata and raw uint8 images.
CONSUMER = r"""
import json, sys
import numpy as np
onnx_path, ts_path, pt2_path = sys.argv[1:4]
images = np.load("images.npy")  # uint8 [N, C, H, W]

def prepare(meta):
    assert list(images.shape[1:]) == [meta["channels"], *meta["image_size"]]
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return (images.astype(np.float32) / 255 - mean) / std

import onnxruntime as ort
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
meta = json.loads(session.get_modelmeta().custom_metadata_map["cnncli"])
logits = session.run([meta["output_name"]], {meta["input_name"]: prepare(meta)})[0]
out = {"onnx": {"predictions": logits.argmax(1).tolist(), "class_names": meta["class_names"]}}

import torch
for fmt, path in (("torchscript", ts_path), ("exported_program", pt2_path)):
    extra = {"cnncli.json": ""}
    if fmt == "torchscript":
        model = torch.jit.load(path, _extra_files=extra)
    else:
        model = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["cnncli.json"])
    with torch.inference_mode():
        logits = model(torch.from_numpy(prepare(meta)))
    out[fmt] = {"predictions": logits.argmax(1).tolist(), "class_names": meta["class_names"]}

assert "cnncli" not in sys.modules, "the consumer imported cnncli"
print(json.dumps(out))
"""


def test_plain_runtimes_reproduce_the_checkpoints_predictions(exported, checkpoint_predictions, tmp_path):
    np.save(tmp_path / "images.npy", checkpoint_predictions["images"])
    files = [str(exported["files"][fmt]) for fmt in FORMATS]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", CONSUMER, *files], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    consumer = json.loads(result.stdout.strip().splitlines()[-1])

    labels = np.array(checkpoint_predictions["labels"])
    eval_matrix = json.loads((exported["root"] / "eval" / "eval.json").read_text())["confusion_matrix"]
    for fmt in FORMATS:
        predictions = consumer[fmt]["predictions"]
        assert predictions == checkpoint_predictions["predictions"], fmt
        matrix = np.zeros((10, 10), dtype=int)
        np.add.at(matrix, (labels, np.array(predictions)), 1)
        assert matrix.tolist() == eval_matrix, fmt  # the same confusion matrix as `cnncli eval`
        assert consumer[fmt]["class_names"] == [str(i) for i in range(10)]


@pytest.mark.slow
def test_fixed_batch_and_out_folder(short_run, tmp_path):
    ckpt = _ckpt_copy(short_run, tmp_path)
    # 6 random inputs at batch 4: the last batch is padded; test_images=0 skips loading the data set
    result = cnncli(
        "export",
        f"ckpt_path={ckpt}",
        "format=onnx",
        "dynamic_batch=false",
        "batch_size=4",
        "test_images=0",
        "random_images=6",
        f"out={tmp_path / 'fixed'}/",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "fixed" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 1, 32, 32]
    report = json.loads((tmp_path / "fixed" / "model.onnx.verify.json").read_text())
    assert report["verified"] and list(report["inputs"]) == ["random"]
    assert (report["inputs"]["random"]["batch"], report["inputs"]["random"]["samples"]) == (4, 6)
    assert json.loads(session.get_modelmeta().custom_metadata_map["cnncli"])["input_shape"] == [4, 1, 32, 32]


def test_failed_verification_keeps_the_file_marked_and_fails(short_run, tmp_path, monkeypatch):
    """A file whose logits differ by more than atol is kept as model.unverified.<ext>, never under the
    requested name, with "verified": false in its report, and the command fails with exit code 1."""
    from hydra import compose, initialize_config_dir

    from cnncli import config_dir
    from cnncli import export as command
    from cnncli.errors import UserError

    run_exported = command.run_exported

    def off_by_a_little(*args, **kwargs):
        logits, metadata = run_exported(*args, **kwargs)
        return {key: value + 1e-3 for key, value in logits.items()}, metadata

    monkeypatch.setattr(command, "run_exported", off_by_a_little)
    ckpt = _ckpt_copy(short_run, tmp_path)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={ckpt}", "format=torchscript", "test_images=16"])
    with pytest.raises(UserError) as error:
        command.export(cfg)
    assert UserError.exit_code == 1
    message = str(error.value)
    assert "failed verification" in message and "model.unverified.ts" in message and "\n" not in message
    folder = tmp_path / "run" / "export"
    assert not (folder / "model.ts").exists()
    assert (folder / "model.unverified.ts").is_file()
    report = json.loads((folder / "model.unverified.ts.verify.json").read_text())
    assert report["verified"] is False and "atol=0.0001" in report["problems"][0]
    assert sorted(p.name for p in folder.iterdir()) == ["model.unverified.ts", "model.unverified.ts.verify.json"]


def test_errors_are_one_line(short_run, tmp_path):
    ckpt = _ckpt_copy(short_run, tmp_path)
    before = ckpt.read_bytes()
    result = cnncli_here("export", f"ckpt_path={ckpt}", "format=tflite", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: format: 'tflite' is not one of: onnx, torchscript, exported_program"

    result = cnncli_here("export", f"ckpt_path={ckpt}", f"out={ckpt.parent / 'last.ckpt'}", cwd=tmp_path)
    assert result.returncode == 1 and "would overwrite a checkpoint" in result.stderr
    assert ckpt.read_bytes() == before and not (tmp_path / "run" / "export").exists()

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(before[: len(before) // 3])
    result = cnncli_here("export", f"ckpt_path={broken}", cwd=tmp_path)
    assert result.returncode == 1 and f"cannot read checkpoint {broken}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_is_written_only_as_a_regular_file(short_run, tmp_path):
    """A rename replaces whatever is at its target (as root, /dev/full became the ONNX file): anything at
    `out` (or at the names beside it that export may write) but a regular file is refused in one line, and
    left as it was; so is an `out` below an existing file."""
    ckpt = _ckpt_copy(short_run, tmp_path)
    fifo = tmp_path / "pipe.ts"
    os.mkfifo(fifo)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "model.ts").mkdir()  # out=busy/ means busy/model.ts
    (tmp_path / "taken.ts.verify.json").mkdir()
    note = tmp_path / "notes.txt"
    note.write_text("keep")
    folder = "is a folder, not a file; give a file name"
    refused = {
        str(fifo): f"out={fifo} is a named pipe (fifo), not a regular file; cnncli writes only regular files",
        f"{tmp_path / 'busy'}/": f"out={tmp_path / 'busy' / 'model.ts'} {folder}",
        str(tmp_path / "taken.ts"): f"out={tmp_path / 'taken.ts.verify.json'} {folder}",
        str(note / "model.ts"): f"out={note / 'model.ts'}: {note} is a file, not a folder",
    }
    for out, line in refused.items():
        result = cnncli_here("export", f"ckpt_path={ckpt}", "format=torchscript", f"out={out}", cwd=tmp_path)
        assert result.returncode == 1 and result.stderr == f"error: {line}\n", out
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and note.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "notes.txt", "pipe.ts", "run", "taken.ts.verify.json"]


def test_missing_onnxruntime_names_the_package(tmp_path):
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    result = cnncli(
        "export", f"ckpt_path={tmp_path / 'any.ckpt'}", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: format=onnx needs the Python package onnxruntime, not installed: pip install onnxruntime"
    )


def test_onnx_is_imported_only_by_export():
    """`cnncli train` (and every other subcommand) never imports onnx: only cnncli/export.py and
    commands/predict.py (for model_file=*.onnx) name it, and importing them does not import it either (it is
    imported inside the functions that need it)."""
    package = Path(__file__).resolve().parent.parent / "cnncli"
    naming = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "import onnx" in p.read_text())
    assert naming == ["commands/predict.py", "export.py"]
    code = (
        "import sys, cnncli.cli, cnncli.export, cnncli.commands.predict; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'onnx', 'onnxruntime', 'onnxscript'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


# ------------------------------------------------------------------------------------ a segmentation run


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory) -> Path:
    """A one-epoch paper-variant U-Net on 44x44 shapes (5 s): valid convolutions, so its score maps (4x4) are
    smaller than its input, which the export must say. Its best checkpoint."""
    cwd = tmp_path_factory.mktemp("tiny_unet")
    result = cnncli(
        "train", "model=unet", "model.variant=paper", "model.base_channels=4", "model.depth=2", "data.train_size=32",
        "data.val_size=8", "data.test_size=8", "data.image_size=44", "trainer.max_epochs=1",
        f"hydra.run.dir={cwd / 'run'}", cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd / "run" / "checkpoints" / "best.ckpt"


def test_a_unet_exports_with_its_task_palette_and_output_size(tiny_unet, tmp_path):
    """ONNX at a fixed batch of 3 (the 8 test images: the last batch padded) and TorchScript with a free
    batch verify: the score maps within atol and every test pixel's argmax class (the mask) the same; the
    metadata read back from the ONNX file itself has what predict reads (task, palette, output size ...)."""
    import onnx

    from cnncli.checkpoint import Checkpoint

    onnx_file, ts_file = tmp_path / "unet.onnx", tmp_path / "unet.ts"
    result = cnncli_here("export", f"ckpt_path={tiny_unet}", "dynamic_batch=false", "batch_size=3",
                         f"out={onnx_file}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "44x44x3 -> 4x4x4, a score map per class" in result.stdout and "mask agree" in result.stdout
    metadata = json.loads({p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}["cnncli"])
    checkpoint = Checkpoint(tiny_unet)
    assert metadata["task"] == "segmentation" and metadata["palette"] == checkpoint.palette
    assert metadata["palette"][:2] == [[0, 0, 0], [128, 0, 0]] and len(metadata["palette"]) == 4
    assert metadata["class_names"] == ["background", "circle", "square", "triangle"] and metadata["num_classes"] == 4
    assert (metadata["ignore_index"], metadata["output_size"], metadata["image_size"]) == (255, [4, 4], [44, 44])
    assert (metadata["channels"], metadata["input_shape"]) == (3, [3, 3, 44, 44])
    assert (metadata["mean"], metadata["std"]) == (checkpoint.preprocessing.mean, checkpoint.preprocessing.std)
    assert metadata["resize"] == checkpoint.preprocessing.resize
    result = cnncli_here("export", f"ckpt_path={tiny_unet}", "format=torchscript", f"out={ts_file}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for file, batch in ((onnx_file, 3), (ts_file, 64)):
        report = json.loads(Path(f"{file}.verify.json").read_text())
        assert report["verified"] and report["problems"] == [], file
        test = report["inputs"]["test"]
        assert (test["samples"], test["batch"]) == (8, batch), file
        assert test["max_abs_diff"] <= 1e-4 and test["top1_agreement"] == 1.0, file  # of the 8 x 4 x 4 pixels
    assert report["dynamic_batch"] and report["inputs"]["random"]["batch"] == 1  # the free batch, at 64 and 1
    assert report["metadata"] == {**metadata, "format": "torchscript", "input_shape": ["batch", 3, 44, 44]}


def test_a_unet_whose_masks_differ_fails_verification(tiny_unet, tmp_path, monkeypatch):
    """Score maps with the classes rotated (every pixel's class changes): beyond atol, and the masks' pixel
    agreement is named."""
    from hydra import compose, initialize_config_dir

    from cnncli import config_dir
    from cnncli import export as command
    from cnncli.errors import UserError

    run_exported = command.run_exported

    def swapped(*args, **kwargs):
        maps, metadata = run_exported(*args, **kwargs)
        return {key: value.roll(1, dims=1) for key, value in maps.items()}, metadata

    monkeypatch.setattr(command, "run_exported", swapped)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={tiny_unet}", "format=torchscript", f"out={tmp_path}/"])
    with pytest.raises(UserError, match="failed verification"):
        command.export(cfg)
    report = json.loads((tmp_path / "model.unverified.ts.verify.json").read_text())
    assert report["verified"] is False and not (tmp_path / "model.ts").exists()
    assert report["inputs"]["test"]["top1_agreement"] == 0.0
    assert "test images: argmax mask agreement of the pixels 0.0000 < min_top1_agreement=0.99" in report["problems"]


# ------------------------------------------------------------------------------------------ the zoo sweep

from cnncli import config_dir  # noqa: E402

MODELS = sorted(path.stem for path in (config_dir() / "model").glob("*.yaml"))
# The smallest convenient input each model accepts (32 for the rest).
SIZES = {"alexnet": 67, "zfnet": 47}
# One model per architecture code path; the others are deeper instances of the same code.
REPRESENTATIVES = {
    "mlp",
    "simple_cnn",
    "lenet5",
    "nin",
    "alexnet",
    "zfnet",
    "vgg11",
    "googlenet",
    "resnet18",
    "resnet50",
    "resnet20",
    "convnext_tiny",
    "swin_t",  # windowed attention (torch.roll, padding)
    "vit_tiny",  # nn.MultiheadAttention (vit_b_16 and vit_b_32: the same code, wider)
    "unet",  # segmentation: score maps [N, K, H, W]
    "fcn_resnet50",  # torchvision's segmentation models (deeplabv3_resnet50: the same wrapper)
}
SWEPT = sorted(REPRESENTATIVES) if os.environ.get("CNNCLI_TEST_ZOO_SUBSET") == "1" else MODELS
# Export cost in seconds (2-core CPU): the workers take the models dearest first.
COST = {
    "swin_b": 30,
    "swin_s": 24,
    "convnext_base": 22,
    "deeplabv3_resnet50": 22,
    "vit_b_16": 18,
    "vit_b_32": 17,
    "swin_t": 17,
    "fcn_resnet50": 20,
    "vgg19": 22,
    "vgg16": 22,
    "vgg13": 20,
    "resnet152": 20,
    "vgg11": 18,
    "resnet101": 16,
    "resnet110": 15,
    "convnext_small": 14,
    "resnet56": 12,
    "googlenet": 12,
    "resnet50": 12,
    "alexnet": 11,
    "convnext_tiny": 10,
    "vit_tiny": 10,
}


def _sweep_one(name: str) -> dict:
    """Build `name` untrained at a small input, give its BatchNorm layers statistics of a real batch (default
    statistics let the logits of deep ResNets explode), export to ONNX and TorchScript, compare logits.
    The tolerance is the larger of 1e-4 and 10x PyTorch's own float32 error (vs float64) on this model."""
    import copy
    import tempfile

    from hydra import compose, initialize_config_dir

    from cnncli.export import export_model, run_onnx
    from cnncli.models import build_model

    size = SIZES.get(name, 32)
    overrides = [f"model={name}", f"data.image_size={size}", "data.channels=3", "data.num_classes=10"]
    if name == "googlenet":
        overrides.append("model.aux_logits=true")  # the export must leave the auxiliary heads out
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for parameter in model.parameters():  # a head that starts at zero (ViT's) would make every logit 0
        if parameter.dim() > 1 and not parameter.detach().any():
            torch.nn.init.normal_(parameter, std=0.02)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, size, size))
    model.eval()
    x = torch.randn(3, 3, size, size)  # batch 3: not the export's example batch 2
    with torch.inference_mode():
        reference = model(x)
        float64_error = (copy.deepcopy(model).double()(x.double()) - reference.double()).abs().max().item()
    result = {"tolerance": max(1e-4, 10 * float64_error), "max_abs_logit": reference.abs().max().item()}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in ("onnx", "torchscript"):
            path = Path(folder) / f"{name}{FORMATS[fmt]}"
            names = []
            started = time.perf_counter()
            export_model(model, fmt, path, torch.randn(2, 3, size, size), {"model": name})
            if fmt == "onnx":
                logits, metadata = run_onnx(path, {"x": x}, {"x": 3}, fixed=False)
                logits = logits["x"]
                if name == "googlenet":
                    import onnx

                    names = [t.name for t in onnx.load(str(path)).graph.initializer]
            else:
                extra = {"cnncli.json": ""}
                loaded = torch.jit.load(str(path), _extra_files=extra)
                with torch.inference_mode():
                    logits = loaded(x)
                metadata = json.loads(extra["cnncli.json"])
                names = [n for n, _ in loaded.named_parameters()] if name == "googlenet" else []
            result[fmt] = {
                "max_abs_diff": (logits - reference).abs().max().item(),
                "top1_equal": bool((logits.argmax(1) == reference.argmax(1)).all()),
                "metadata": metadata,
                "aux_weights": sum("aux" in n for n in names),
                "seconds": round(time.perf_counter() - started, 1),
            }
    return result


def _sweep_worker(folder: Path, names: list[str]) -> None:
    """Take the next unclaimed model (claimed by creating its folder, atomic), sweep it, write result.json."""
    torch.set_num_threads(1)
    for name in names:
        try:
            (folder / name).mkdir()
        except FileExistsError:
            continue
        try:
            result = _sweep_one(name)
        except Exception as e:  # noqa: BLE001 (reported by the model's test)
            result = {"error": f"{type(e).__name__}: {e}"[:2000]}
        (folder / name / "result.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def zoo_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    order = sorted(SWEPT, key=lambda name: -COST.get(name, 3))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--sweep-worker", str(folder), *order],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [worker.communicate(timeout=1200)[0] for worker in workers]
    results = {}
    for name in SWEPT:
        path = folder / name / "result.json"
        results[name] = json.loads(path.read_text()) if path.is_file() else {"error": "\n".join(logs)[-3000:]}
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_exports_to_onnx_and_torchscript(name, zoo_sweep):
    if name not in zoo_sweep:
        pytest.skip("a deeper variant of a swept model's code, left out by CNNCLI_TEST_ZOO_SUBSET=1")
    result = zoo_sweep[name]
    assert "error" not in result, result["error"]
    assert result["max_abs_logit"] > result["tolerance"]  # logits beyond the tolerance: the comparisons can fail
    for fmt in ("onnx", "torchscript"):
        r = result[fmt]
        assert r["max_abs_diff"] <= result["tolerance"], (fmt, r, result["max_abs_logit"])
        assert r["top1_equal"], fmt
        assert r["metadata"] == {"model": name}, fmt
        assert r["aux_weights"] == 0, fmt  # GoogLeNet: exported without its auxiliary heads


if __name__ == "__main__" and sys.argv[1:2] == ["--sweep-worker"]:
    import warnings

    warnings.filterwarnings("ignore")
    _sweep_worker(Path(sys.argv[2]), sys.argv[3:])
