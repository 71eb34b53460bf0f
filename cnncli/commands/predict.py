"""cnncli predict: the top-k classes of image files, preprocessed exactly as the run evaluated its test split
(channels, resize, the run's normalization), from a checkpoint or an exported ONNX file. A segmentation
model writes, for each image, its mask (an indexed PNG with the run's palette: pixel value = class id) and an
overlay PNG into `masks_dir`, and the fraction of the pixels of each class in the table and the CSV.

From an ONNX file nothing imports torch (onnxruntime, numpy and PIL only): that is the deployment path.
A checkpoint needs torch, imported by CheckpointModel."""

import csv
import json
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from cnncli import config_dir
from cnncli.data import images
from cnncli.errors import UserError, check_output_file, reports_user_errors, require


def image_files(inputs: list[str]) -> list[Path]:
    """The files named, and the image files found (recursively, sorted) in the folders named."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in images.IMAGE_EXTENSIONS)
        elif item.exists():
            files.append(item)
        else:
            raise UserError(f"no such file or folder: {item}")
    if not files:
        raise UserError(f"no image files in {', '.join(inputs)}")
    return files


class CheckpointModel:
    """A checkpoint's network with what predicting needs: input shape, normalization, class names."""

    def __init__(self, path: str, trust_code: bool, device: str = "cpu"):
        from cnncli.checkpoint import Checkpoint
        from cnncli.device import resolve_device

        self.device = resolve_device(device)
        checkpoint = Checkpoint(path)
        self.model = checkpoint.network(trust_code).to(self.device)
        pre = checkpoint.preprocessing
        self.channels, self.image_size, self.resize, self.mean, self.std = (
            pre.channels, pre.image_size, pre.resize, pre.mean, pre.std)  # fmt: skip
        self.class_names = checkpoint.class_names
        self.task = checkpoint.task
        self.palette = checkpoint.palette if self.task == "segmentation" else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


class OnnxModel:
    """A file from `cnncli export format=onnx`, run by onnxruntime, fed as its embedded metadata says."""

    def __init__(self, path: str):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("model_file needs onnxruntime: pip install 'cnncli[export]'") from None
        if Path(path).is_dir():
            raise UserError(f"model_file: {path} is a directory, not an .onnx file")
        if not Path(path).is_file():
            raise UserError(f"model file not found: {path}")
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            meta = json.loads(self.session.get_modelmeta().custom_metadata_map["cnncli"])
        except Exception as e:  # noqa: BLE001 (onnxruntime raises its own untyped errors for a bad file)
            raise UserError(f"{path} is not an ONNX file written by cnncli export ({str(e).splitlines()[0]})") from None
        self.channels, self.image_size = meta["channels"], meta["image_size"][0]
        self.resize = meta.get("resize", "stretch")
        self.mean, self.std, self.class_names = meta["mean"], meta["std"], meta["class_names"]
        self.input_name = meta["input_name"]
        self.task, self.palette = meta.get("task", "classification"), meta.get("palette")

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))  # shifted so exp cannot overflow
    return exp / exp.sum(axis=1, keepdims=True)


def predict(cfg: DictConfig) -> list[dict]:
    require(cfg, "inputs", "[FILE_OR_FOLDER,...] (the images to classify)")
    if (cfg.ckpt_path is None) == (cfg.model_file is None):
        raise UserError("give exactly one of ckpt_path=PATH (a checkpoint) or model_file=PATH (an .onnx file)")
    if cfg.top_k < 1:
        raise UserError(f"top_k: must be >= 1, got {cfg.top_k}")
    if cfg.output:  # checked now, not after every image was predicted; a device (/dev/stdout) is opened, kept
        check_output_file("output", cfg.output, devices=True)
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    files = image_files(inputs)
    if cfg.ckpt_path is not None:
        model = CheckpointModel(cfg.ckpt_path, cfg.trust_model_code, cfg.device)
    else:
        model = OnnxModel(cfg.model_file)
    # the evaluation preprocessing: the pixels of image folders (cnncli/data/images.py), the run's statistics
    mean, std = (np.array(v, dtype=np.float32).reshape(-1, 1, 1) for v in (model.mean, model.std))
    pictures, readable, failures = [], [], []
    for path in files:
        try:
            pictures.append((images.read(str(path), model.channels, model.image_size, model.resize) - mean) / std)
            readable.append(path)
        except images.UnreadableImage as e:
            failures.append((path, str(e)))
    if model.task == "segmentation":
        rows = segment(cfg, model, pictures, readable, mean, std)
        return _finish(cfg, failures, files, rows)
    rows = []
    k = min(cfg.top_k, len(model.class_names))
    for start in range(0, len(pictures), cfg.batch_size):
        probabilities = softmax(model.logits(np.stack(pictures[start : start + cfg.batch_size])))
        for path, p in zip(readable[start : start + cfg.batch_size], probabilities.tolist()):
            top = sorted(range(len(p)), key=lambda c: -p[c])[:k]  # stable: ties keep the class order
            rows.append({"path": str(path), "top": [(model.class_names[c], p[c]) for c in top]})
    _print(rows)
    if cfg.output:
        with open(cfg.output, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "rank", "class", "probability"])
            for row in rows:
                for rank, (name, p) in enumerate(row["top"], 1):
                    writer.writerow([row["path"], rank, name, f"{p:.6f}"])
        print(f"wrote {cfg.output}")
    return _finish(cfg, failures, files, rows)


def _finish(cfg: DictConfig, failures: list, files: list, rows: list[dict]) -> list[dict]:
    """The files that could not be read, listed (both tasks), then one error line and exit 1."""
    console = Console(soft_wrap=True)
    for _, reason in failures:
        console.print(f"[red]not predicted[/red] {reason}", highlight=False)
    if failures:
        print(f"error: {len(failures)} of {len(files)} files could not be read (listed above)", file=sys.stderr)
        sys.exit(1)
    return rows


def segment(cfg: DictConfig, model, pictures: list, paths: list[Path], mean, std) -> list[dict]:
    """A segmentation model: each image's mask (indexed PNG, the run's palette) and overlay (the image with
    the coloured mask blended in) in masks_dir, and the share of its pixels each class got. A network whose
    output is smaller than its input (U-Net's paper variant) gives the mask of the image's centre."""
    from PIL import Image

    out = Path(cfg.masks_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"masks_dir={out}: is a file, not a folder")
    named = {}  # a folder is searched recursively: two images of one stem would write one mask, refused first
    for path in paths:
        first = named.setdefault(path.stem, path)
        if first.resolve() != path.resolve():
            raise UserError(
                f"{first} and {path} would both be written as {out / path.stem}_mask.png: predict them in "
                "separate runs (another masks_dir) or rename one"
            )
    out.mkdir(parents=True, exist_ok=True)
    palette = np.array(model.palette, dtype=np.uint8)
    flat_palette = palette.flatten().tolist() + [255] * (768 - palette.size)  # PIL's 256-colour table
    rows, names = [], model.class_names
    for start in range(0, len(pictures), cfg.batch_size):
        batch = np.stack(pictures[start : start + cfg.batch_size])
        for picture, path, scores in zip(batch, paths[start : start + cfg.batch_size], model.logits(batch)):
            mask = scores.argmax(axis=0).astype(np.uint8)
            top, left = ((np.array(picture.shape[1:]) - mask.shape) // 2).tolist()
            pixels = (picture * std + mean).clip(0, 1)[:, top : top + mask.shape[0], left : left + mask.shape[1]]
            pixels = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
            indexed = Image.fromarray(mask, "P")
            indexed.putpalette(flat_palette)
            stem = out / Path(path).stem
            indexed.save(f"{stem}_mask.png")
            # a class drawn black (the background, in VOC's colours) leaves its pixels as they are
            alpha = OVERLAY_ALPHA * palette[mask].any(axis=-1, keepdims=True)
            overlay = alpha * palette[mask] + (1 - alpha) * 255 * pixels.transpose(1, 2, 0)
            Image.fromarray(overlay.round().astype(np.uint8), "RGB").save(f"{stem}_overlay.png")
            counts = np.bincount(mask.ravel(), minlength=len(names))[: len(names)]
            fractions = {name: float(c) / mask.size for name, c in zip(names, counts)}
            rows.append({"path": str(path), "fractions": fractions, "mask": f"{stem}_mask.png",
                         "overlay": f"{stem}_overlay.png"})  # fmt: skip
    console = Console(soft_wrap=True)
    for row in rows:
        console.print(f"{row['path']} -> {row['mask']}, {row['overlay']}", highlight=False)
        table = Table()
        table.add_column("class")
        table.add_column("pixels", justify="right")
        for name, fraction in row["fractions"].items():
            table.add_row(name, f"{100 * fraction:.1f}%")
        console.print(table)
    if cfg.output:
        with open(cfg.output, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "class", "pixel_fraction", "mask", "overlay"])
            for row in rows:
                for name, fraction in row["fractions"].items():
                    writer.writerow([row["path"], name, f"{fraction:.6f}", row["mask"], row["overlay"]])
        print(f"wrote {cfg.output}")
    print(f"wrote {len(rows)} masks and overlays to {out}")
    return rows


OVERLAY_ALPHA = 0.5  # the mask's share of an overlay pixel


def _print(rows: list[dict]) -> None:
    console = Console(soft_wrap=True)  # paths printed whole, never wrapped
    for row in rows:
        console.print(row["path"], highlight=False)
        table = Table()
        table.add_column("rank", justify="right")
        table.add_column("class")
        table.add_column("probability", justify="right")
        for rank, (name, p) in enumerate(row["top"], 1):
            table.add_row(str(rank), name, f"{p:.4f}")
        console.print(table)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)
