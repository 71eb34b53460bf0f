"""cnncli export: a checkpoint's network as ONNX, TorchScript or a torch.export program, verified against PyTorch.

The exported file is checked before it gets its name: it is written to a hidden temporary file beside the
target, reloaded the way a consumer reloads it (onnxruntime for ONNX; for TorchScript and .pt2 a fresh
Python process that never imports cnncli) and run on real test-split images and on random inputs. Its
logits are compared with the checkpoint model's in PyTorch (a segmentation network's: its score maps, and
the pixels' argmax classes, its masks), at the verification batch and at batch 1 when the batch is
dynamic. Within `atol` and `min_top1_agreement` it is renamed to `out`; beyond
it, to `<stem>.unverified<suffix>`, and the command fails (exit 1). Either way `<file>.verify.json`
records the comparison.

Every file carries what a consumer needs to use it without cnncli, the same JSON document in each format
(see `export_metadata`): ONNX `metadata_props["cnncli"]`, TorchScript and .pt2 extra file `cnncli.json`.

onnx, onnxscript and onnxruntime are imported only here, and only for format=onnx. The command and its
checks are cnncli/commands/export.py, which imports none of this until the options are good.
"""

import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from cnncli import __version__
from cnncli.checkpoint import Checkpoint, load_file
from cnncli.commands.export import FORMATS
from cnncli.errors import ConfigError, UserError, check_output_file
from cnncli.runs import run_folder

METADATA_KEY = "cnncli"  # ONNX metadata_props key
EXTRA_FILE = "cnncli.json"  # TorchScript _extra_files / torch.export extra_files name
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # onnxscript: torch.onnx's (dynamo) exporter needs it
EXAMPLE_BATCH = 2  # the example input's batch when the batch is dynamic: 0 and 1 would be specialized
TEST_BATCH = 64  # verification batch of the test images when the batch is dynamic (random inputs: batch 1)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


# ---------------------------------------------------------------------------------------------- metadata


def config_sha256(config: dict) -> str:
    """sha256 of the run config's canonical JSON: keys sorted, no spaces (json.dumps defaults otherwise)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def export_metadata(
    checkpoint: Checkpoint, fmt: str, dynamic_batch: bool, batch_size: int, output_size: list[int] | None = None
) -> dict:
    """What a consumer needs to feed the file and read its output, stored inside it. `output_size`: a
    segmentation network's score map [H', W'] (the paper U-Net's is smaller than its input)."""
    pre = checkpoint.preprocessing
    channels, size = pre.channels, pre.image_size
    segmentation = checkpoint.task == "segmentation"
    return {
        "format": fmt,
        "task": checkpoint.task,
        "model": checkpoint.model_name,
        "data": checkpoint.data_name,
        "class_names": checkpoint.class_names,
        "num_classes": checkpoint.num_classes,
        "channels": channels,
        "image_size": [size, size],
        "resize": pre.resize,  # how the run fitted images to image_size (cnncli/data/folder.py)
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": ["batch" if dynamic_batch else batch_size, channels, size, size],
        "input": "float32 NCHW: pixel values / 255, then (x - mean) / std per channel",
        "output": (
            "logits [N, classes, H', W'], one map per class (argmax over the classes: the mask; H' x W' may be the "
            "input's centre, smaller)"
            if segmentation
            else "logits, one per class (softmax for probabilities)"
        ),
        **(
            {"palette": checkpoint.palette, "ignore_index": checkpoint.ignore_index, "output_size": output_size}
            if segmentation
            else {}
        ),
        "mean": pre.mean,
        "std": pre.std,
        "cnncli_version": __version__,
        "checkpoint_cnncli_version": checkpoint.cnncli_version,
        "config_sha256": config_sha256(checkpoint.run_config),
    }


# ------------------------------------------------------------------------------------------ the exporters


def require_onnx() -> None:
    """format=onnx needs three packages; a missing one is named in one line."""
    missing = []
    for package in ONNX_PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise UserError(
            f"format=onnx needs the Python package{'s' * (len(missing) > 1)} {', '.join(missing)}, "
            f"not installed: pip install {' '.join(missing)}"
        )


def without_aux_heads(model: nn.Module) -> nn.Module:
    """GoogLeNet's train-time auxiliary classifiers (cnncli's and torchvision's) are dropped: they never run in
    eval mode, and keeping them would only carry their weights into TorchScript files."""
    for name in ("aux1", "aux2"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, None)
    if getattr(model, "aux_logits", None) is True:
        model.aux_logits = False
    return model.eval()


def export_model(
    model: nn.Module,
    fmt: str,
    path: Path,
    example: torch.Tensor,
    metadata: dict,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> dict:
    """Write `model` (in eval mode) to `path` in format `fmt`, with `metadata` embedded. `example` is an
    input batch: its batch size is kept only when `dynamic_batch` is false. Returns details for the report
    (the ONNX opset)."""
    model = without_aux_heads(model)
    text = json.dumps(metadata)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the verification decides
        if fmt == "onnx":
            return {"opset": _export_onnx(model, path, example, text, opset, dynamic_batch)}
        if fmt == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: text})
            return {}
        if fmt == "exported_program":
            shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            program = torch.export.export(model, (example,), dynamic_shapes=shapes, strict=False)
            torch.export.save(program, str(path), extra_files={EXTRA_FILE: text})
            return {}
    raise ConfigError("format", f"{fmt!r} is not one of: {', '.join(FORMATS)}")


def _export_onnx(model, path: Path, example, text: str, opset, dynamic_batch: bool) -> int:
    import onnx

    for logger in ("onnxscript", "onnx_ir", "torch.onnx"):  # their graph passes log each step at INFO
        logging.getLogger(logger).setLevel(logging.WARNING)

    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,  # torch.export based; the TorchScript-based one cannot give AdaptiveAvgPool a free batch
        verbose=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None,
        external_data=False,
    )
    program.model.metadata_props[METADATA_KEY] = text
    program.model.doc_string = f"exported by cnncli {__version__}; metadata_props[{METADATA_KEY!r}]: how to feed it"
    # one self-contained file: the zoo's largest (VGG-19, 0.6 GB) is well under protobuf's 2 GB limit
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return program.model.opset_imports.get("", None)


def metadata_summary(metadata: dict) -> str:
    c, (h, w), k = metadata["channels"], metadata["image_size"], metadata["num_classes"]
    if metadata.get("task") == "segmentation":
        oh, ow = metadata["output_size"]
        return f"{metadata['model']}: {h}x{w}x{c} -> {oh}x{ow}x{k}, a score map per class (argmax: the mask)"
    return f"{metadata['model']}: {h}x{w}x{c} -> {k} classes"


# ------------------------------------------------------------------------------------------ the runners


def _chunks(x: torch.Tensor, batch: int, fixed: bool) -> list[tuple[torch.Tensor, int]]:
    """(batch, real rows) pairs; a fixed-batch graph gets its last chunk padded with zeros."""
    chunks = []
    for part in x.split(batch):
        n = len(part)
        if fixed and n < batch:
            part = torch.cat([part, part.new_zeros(batch - n, *part.shape[1:])])
        chunks.append((part, n))
    return chunks


@torch.inference_mode()
def run_pytorch(model: nn.Module, inputs: dict, batches: dict, fixed: bool) -> dict[str, torch.Tensor]:
    model.eval()
    out = {}
    for key, x in inputs.items():
        parts = []
        for part, n in _chunks(x, batches[key], fixed):
            logits = model(part)
            if not isinstance(logits, torch.Tensor):
                raise UserError(f"the model returns a {type(logits).__name__} in eval mode; export needs one tensor")
            parts.append(logits[:n])
        out[key] = torch.cat(parts)
    return out


def run_onnx(path: Path, inputs: dict, batches: dict, fixed: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """Logits from onnxruntime (CPU) and the metadata read back from the file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    props = session.get_modelmeta().custom_metadata_map  # the file's metadata_props
    out = {}
    for key, x in inputs.items():
        parts = [
            torch.from_numpy(session.run(None, {name: part.numpy()})[0][:n])
            for part, n in _chunks(x, batches[key], fixed)
        ]
        out[key] = torch.cat(parts)
    return out, json.loads(props.get(METADATA_KEY, "null"))


# Run in a fresh interpreter: loads a TorchScript or .pt2 file with plain torch, as a consumer would, and
# returns its logits on the saved inputs, the embedded metadata and whether cnncli got imported.
FRESH_PROCESS_RUNNER = r"""
import json, sys
import torch
fmt, model_path, inputs_path, out_path, batches, fixed = sys.argv[1:7]
batches, fixed = json.loads(batches), fixed == "1"
extra = {"cnncli.json": ""}
if fmt == "torchscript":
    model = torch.jit.load(model_path, map_location="cpu", _extra_files=extra)
else:
    model = torch.export.load(model_path, extra_files=extra).module()
inputs = torch.load(inputs_path, weights_only=True)
logits = {}
with torch.inference_mode():
    for key, x in inputs.items():
        b, parts = batches[key], []
        for part in x.split(b):
            n = len(part)
            if fixed and n < b:
                part = torch.cat([part, part.new_zeros(b - n, *part.shape[1:])])
            parts.append(model(part)[:n])
        logits[key] = torch.cat(parts)
meta = extra["cnncli.json"]
torch.save({"logits": logits, "metadata": meta.decode() if isinstance(meta, bytes) else meta,
            "imported_cnncli": "cnncli" in sys.modules}, out_path)
"""


def run_fresh_process(
    fmt: str, path: Path, inputs: dict, batches: dict, fixed: bool, timeout: float = 600
) -> tuple[dict[str, torch.Tensor], dict]:
    """Logits and metadata from `path` reloaded by plain torch in a new Python process without cnncli."""
    with tempfile.TemporaryDirectory(prefix="cnncli-export-") as scratch:
        scratch = Path(scratch)
        torch.save(inputs, scratch / "inputs.pt")
        # cwd: an empty folder, so that `python -c` (which puts the cwd on sys.path) finds nothing of ours
        args = [
            sys.executable,
            "-c",
            FRESH_PROCESS_RUNNER,
            fmt,
            str(path.resolve()),
            "inputs.pt",
            "outputs.pt",
            json.dumps(batches),
            "1" if fixed else "0",
        ]
        result = subprocess.run(
            args,
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["(no message)"]
            raise RuntimeError(f"a fresh Python process could not run it: {lines[-1]}")
        reply = load_file(scratch / "outputs.pt", "the fresh process's reply")
    if reply["imported_cnncli"]:
        raise RuntimeError("the fresh process imported cnncli: the file is not self-contained")
    return reply["logits"], json.loads(reply["metadata"] or "null")


def run_exported(fmt: str, path: Path, inputs: dict, batches: dict, fixed: bool):
    if fmt == "onnx":
        return run_onnx(path, inputs, batches, fixed)
    return run_fresh_process(fmt, path, inputs, batches, fixed)


def compare(reference: dict, exported: dict) -> dict:
    """Per input set: samples, max |logit difference| and the fraction of equal top-1 predictions (of a
    segmentation network's maps: of the pixels whose class agrees)."""
    return {
        key: {
            "samples": len(ref),
            "max_abs_diff": (exported[key] - ref).abs().max().item(),
            "top1_agreement": (exported[key].argmax(1) == ref.argmax(1)).float().mean().item(),
        }
        for key, ref in reference.items()
    }


# ------------------------------------------------------------------------------------------ the command


def output_path(out, ckpt_path: Path, suffix: str) -> Path:
    """`out`, or `<run>/export/model<suffix>`; `out=DIR/` (or an existing folder) -> DIR/model<suffix>."""
    if not out:
        path = run_folder(ckpt_path) / "export" / f"model{suffix}"
    else:
        path = Path(str(out))
        if path.is_dir() or str(out).endswith(("/", os.sep)):
            path = path / f"model{suffix}"
    if path.suffix == ".ckpt" or (path.exists() and path.resolve() == ckpt_path.resolve()):
        raise UserError(f"out={path} would overwrite a checkpoint; export to another file name")
    # each name a file may be renamed to: a rename replaces whatever is there (as root, even /dev/full)
    for file in (path, unverified_path(path)):
        check_output_file("out", file)
        check_output_file("out", verify_json_path(file))
    return path


def unverified_path(out: Path) -> Path:
    """Where a file that failed verification is kept."""
    return out.with_name(f"{out.stem}.unverified{out.suffix}")


def verify_json_path(file: Path) -> Path:
    return Path(f"{file}.verify.json")


def verification_inputs(checkpoint: Checkpoint, test_images: int | None, random_images: int, trust_code: bool) -> dict:
    """The first `test_images` images of the run's test split (null: all of it), normalized as in
    training, and `random_images` N(0, 1) inputs (seeded) of the same shape."""
    inputs = {}
    if test_images != 0:
        data = checkpoint.datamodule(trust_code)
        data.setup("test")
        images, seen = [], 0
        for x, _ in data.test_dataloader():
            images.append(x)
            seen += len(x)
            if test_images is not None and seen >= test_images:
                break
        inputs["test"] = torch.cat(images)[:test_images]
    pre = checkpoint.preprocessing
    shape = (pre.channels, pre.image_size, pre.image_size)
    inputs["random"] = torch.randn(random_images, *shape, generator=torch.Generator().manual_seed(0))
    return inputs


def export(cfg: DictConfig) -> dict:
    """The export of cfg (checked by cnncli/commands/export.py), verified; the report."""
    fmt = cfg.format
    if fmt == "onnx":
        require_onnx()
    ckpt_path = Path(str(cfg.ckpt_path))
    checkpoint = Checkpoint(ckpt_path)
    out = output_path(cfg.out, ckpt_path, FORMATS[fmt])
    model = without_aux_heads(checkpoint.network(cfg.trust_model_code))

    dynamic = bool(cfg.dynamic_batch)
    fixed_batch = int(cfg.batch_size)
    inputs = verification_inputs(checkpoint, cfg.test_images, int(cfg.random_images), cfg.trust_model_code)
    batches = {"test": TEST_BATCH, "random": 1} if dynamic else dict.fromkeys(inputs, fixed_batch)
    example = inputs["random"][:1].expand(EXAMPLE_BATCH if dynamic else fixed_batch, -1, -1, -1).contiguous()
    reference = run_pytorch(model, inputs, batches, fixed=not dynamic)
    output_size = list(reference["random"].shape[2:]) or None  # a score map's [H', W']; none for class scores
    metadata = export_metadata(checkpoint, fmt, dynamic, fixed_batch, output_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    try:
        started = time.perf_counter()
        try:
            details = export_model(model, fmt, partial, example, metadata, opset=cfg.opset, dynamic_batch=dynamic)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 (torch.onnx/jit/export fail with any type; the user gets its first line)
            raise UserError(f"{fmt} export of {metadata['model']} failed: {_first_line(e)}") from None
        export_s = time.perf_counter() - started
        error, read_back, results = None, None, {}
        try:
            exported, read_back = run_exported(fmt, partial, inputs, batches, fixed=not dynamic)
            results = compare(reference, exported)
        except Exception as e:  # noqa: BLE001 (any failure to reload or run the file is a verification failure)
            error = _first_line(e)
        problems = _problems(results, read_back, metadata, error, cfg)
        final = out if not problems else unverified_path(out)
        os.replace(partial, final)  # atomic: the name never holds a half-written or unchecked file
    finally:
        partial.unlink(missing_ok=True)

    report = {
        "file": str(final),
        "verified": not problems,
        "problems": problems,
        "format": fmt,
        "checkpoint": str(ckpt_path),
        "atol": cfg.atol,
        "min_top1_agreement": cfg.min_top1_agreement,
        "inputs": {key: {"batch": batches[key], **value} for key, value in results.items()},
        "dynamic_batch": dynamic,
        "opset": details.get("opset"),
        "export_seconds": round(export_s, 2),
        "bytes": final.stat().st_size,
        "torch": torch.__version__,
        "metadata": metadata,
    }
    if fmt == "onnx":
        report["onnxruntime"] = importlib.import_module("onnxruntime").__version__
    verify_json = verify_json_path(final)
    partial_json = verify_json.with_name(f".{verify_json.name}.partial-{os.getpid()}")
    partial_json.write_text(json.dumps(report, indent=2))
    os.replace(partial_json, verify_json)
    _print(report, verify_json)
    if problems:
        raise UserError(
            f"the {fmt} file failed verification ({'; '.join(problems)}); kept as {final}, "
            f"not {out.name}; details in {verify_json.name}"
        )
    return report


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def agreement_label(metadata: dict) -> str:
    """What top1_agreement counts: images whose top class agrees, or a segmentation's pixels whose argmax
    (mask) class agrees."""
    return "argmax mask agreement of the pixels" if metadata["task"] == "segmentation" else "top-1 agreement"


def _problems(results: dict, read_back, metadata: dict, error, cfg: DictConfig) -> list[str]:
    if error:
        return [error]
    problems = []
    for key, r in results.items():
        if not r["max_abs_diff"] <= cfg.atol:  # also catches NaN
            problems.append(f"{key} inputs: max |logit difference| {r['max_abs_diff']:.3g} > atol={cfg.atol:g}")
    if "test" in results and results["test"]["top1_agreement"] < cfg.min_top1_agreement:
        problems.append(
            f"test images: {agreement_label(metadata)} {results['test']['top1_agreement']:.4f} "
            f"< min_top1_agreement={cfg.min_top1_agreement:g}"
        )
    if read_back != metadata:
        problems.append("the metadata read back from the file differs from what was written")
    return problems


def _print(report: dict, verify_json: Path) -> None:
    console = Console()
    table = Table(title=f"{report['format']} export vs PyTorch (atol {report['atol']:g})")
    agree = "mask agree (pixels)" if report["metadata"]["task"] == "segmentation" else "top-1 agree"
    for column in ("inputs", "samples", "batch", "max |Δ logit|", agree, "within atol"):
        table.add_column(column, justify="right")
    labels = {"test": "test images", "random": "random N(0,1)"}
    for key, r in report["inputs"].items():
        ok = r["max_abs_diff"] <= report["atol"]
        table.add_row(
            labels.get(key, key),
            str(r["samples"]),
            str(r["batch"]),
            f"{r['max_abs_diff']:.2e}",
            f"{r['top1_agreement']:.4f}",
            "yes" if ok else "[red]no[/red]",
        )
    console.print(table)
    m = report["metadata"]
    console.print(f"{metadata_summary(m)}, mean {m['mean']}, std {m['std']}, config sha256 {m['config_sha256'][:12]}")
    verdict = "verified" if report["verified"] else "[red]NOT verified[/red]"
    console.print(f"{verdict}: wrote {report['file']} ({report['bytes'] / 1e6:.2f} MB) and {verify_json}")
