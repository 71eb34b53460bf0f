"""cnncli eval: rebuild the network from a checkpoint's stored run, test it, report per-class metrics;
`errors=N` also draws the N worst-classified test images.

torch and co. are imported inside the functions that use them: --help and --cfg job never load them."""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from cnncli import config_dir
from cnncli.config import call_target, check_number
from cnncli.errors import UserError, check_output_folder, reports_user_errors, require
from cnncli.runs import run_folder
from cnncli.tasks import check_checkpoint_task, task_of


def predict(model, loader) -> tuple:
    """(logits, labels) of every batch of `loader`, concatenated."""
    import torch

    model.eval()
    with torch.inference_mode():
        logits, labels = zip(*((model(x), y) for x, y in loader))
    return torch.cat(logits), torch.cat(labels)


def evaluate(cfg: DictConfig) -> dict:
    require(cfg, "ckpt_path", "PATH (a checkpoint, such as RUN_FOLDER/checkpoints/best.ckpt)")
    check_number(cfg, "errors", 0, integer=True)
    check_number(cfg, "masks", 0, integer=True)
    if cfg.out:
        check_output_folder("out", cfg.out)
    import torch.nn.functional as F
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    from cnncli.checkpoint import Checkpoint
    from cnncli.plots import plot_confusion_matrix

    checkpoint = Checkpoint(cfg.ckpt_path)
    if cfg.get("data"):  # the data config's task (`data.task`), refused before the network or data is built
        task = task_of(cfg)
        check_checkpoint_task(cfg.ckpt_path, checkpoint.task, task, f"data={cfg.data.get('name')} is a {task} data set")
    model = checkpoint.network(trust_code=cfg.trust_model_code)
    pre = checkpoint.preprocessing
    if cfg.get("data"):  # the user's data config: other data, converted to what the network was trained on
        data_cfg = OmegaConf.merge(
            cfg.data,
            {"channels": pre.channels, "image_size": pre.image_size, "normalization": checkpoint.normalization},
        )
        datamodule, data_name = call_target("data", data_cfg), cfg.data.get("name")
        if datamodule.num_classes != checkpoint.num_classes:  # an image folder's: its class folders
            raise UserError(
                f"data {data_name!r} has {datamodule.num_classes} classes; "
                f"the checkpoint's model predicts {checkpoint.num_classes}"
            )
    else:  # the run's own data, with the run's own statistics: evaluation sees exactly what training saw
        datamodule, data_name = checkpoint.datamodule(cfg.trust_model_code), checkpoint.data_name
    datamodule.batch_size = cfg.batch_size
    datamodule.setup("test")
    out = Path(cfg.out) if cfg.out else run_folder(Path(cfg.ckpt_path))
    if checkpoint.task == "segmentation":
        return evaluate_segmentation(cfg, checkpoint, model, datamodule, data_name, out)
    logits, labels = predict(model, datamodule.test_dataloader())
    broken = int((~logits.isfinite().all(dim=1)).sum())
    if broken:  # finite weights can still overflow; a loss of nan is no result
        raise UserError(
            f"{cfg.ckpt_path}: the network's outputs are not finite (nan or inf) for {broken} of {len(labels)} "
            "test images: its weights overflow"
        )

    n = checkpoint.num_classes
    names = checkpoint.class_names
    per_class = {
        metric: fn(logits, labels, num_classes=n, average=None).tolist()
        for metric, fn in (
            ("precision", multiclass_precision),
            ("recall", multiclass_recall),
            ("f1", multiclass_f1_score),
        )
    }
    matrix = multiclass_confusion_matrix(logits, labels, num_classes=n)
    results = {
        "checkpoint": str(cfg.ckpt_path),
        "data": data_name,
        "samples": len(labels),
        # the loss as training measured it: weighted when the run used class weights
        "test/loss": F.cross_entropy(logits, labels, weight=checkpoint.class_weights).item(),
        "test/acc1": multiclass_accuracy(logits, labels, num_classes=n, top_k=1, average="micro").item(),
        "test/acc5": multiclass_accuracy(logits, labels, num_classes=n, top_k=min(5, n), average="micro").item(),
        "per_class": {
            str(name): {m: per_class[m][i] for m in per_class} | {"support": int(matrix[i].sum())}
            for i, name in enumerate(names)
        },
        "confusion_matrix": matrix.tolist(),
    }
    if cfg.errors:
        results["worst"] = worst_classified(logits, labels, cfg.errors)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    model_name = checkpoint.model_name.rsplit(".", 1)[-1]  # cnncli.models.lenet.lenet5 -> lenet5
    title = f"{model_name} on {data_name}: test top-1 {results['test/acc1']:.4f} ({len(labels)} images)"
    plot_confusion_matrix(matrix.numpy(), [str(x) for x in names], out / "confusion_matrix.png", title=title)
    written = [out / "eval.json", out / "confusion_matrix.png"]
    if cfg.errors:
        written.append(out / "errors.png")
        plot_errors(
            results["worst"], datamodule.test_dataloader().dataset, checkpoint.normalization, names, written[-1]
        )
    _print(results, written)
    return results


def evaluate_segmentation(cfg: DictConfig, checkpoint, model, datamodule, data_name: str, out: Path) -> dict:
    """A segmentation checkpoint: pixel accuracy, mean IoU / Dice and per class, the pixel confusion matrix,
    and masks.png: image | true mask | predicted mask for the `masks` worst and best test images by IoU."""
    import torch

    from cnncli.plots import plot_confusion_matrix, plot_segmentation_grid
    from cnncli.tasks import segmentation

    results, per_image = segmentation.evaluate(model, datamodule.test_dataloader(), checkpoint)
    results = {"checkpoint": str(cfg.ckpt_path), "data": data_name, "samples": len(per_image), **results}
    ranked = sorted(per_image, key=lambda row: row["miou"])
    count = min(cfg.masks, len(ranked) // 2)
    results["worst"], results["best"] = ranked[:count], ranked[::-1][:count]
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    names = checkpoint.class_names
    model_name = checkpoint.model_name.rsplit(".", 1)[-1]
    title = f"{model_name} on {data_name}: test mean IoU {results['test/miou']:.4f} ({len(per_image)} images, pixels)"
    plot_confusion_matrix(torch.tensor(results["confusion_matrix"]).numpy(), names, out / "confusion_matrix.png", title)
    written = [out / "eval.json", out / "confusion_matrix.png"]
    if count:
        dataset, palette = datamodule.test_dataloader().dataset, checkpoint.palette
        mean, std = (torch.tensor(checkpoint.normalization[k]).view(-1, 1, 1) for k in ("mean", "std"))
        rows = []
        for label, picked in (("worst", results["worst"]), ("best", results["best"])):
            for row in picked:
                image, mask = dataset[row["index"]]
                with torch.inference_mode():
                    logits = model(image[None])
                predicted = segmentation.predicted_classes(logits)[0]
                mask = segmentation.crop_to(mask, logits)
                picture = segmentation.crop_to((image * std + mean).clamp(0, 1), logits).permute(1, 2, 0)
                picture = picture.expand(-1, -1, 3) if picture.shape[-1] == 1 else picture
                true, guess = (
                    segmentation.colour_masks(m, palette, checkpoint.ignore_index) for m in (mask, predicted)
                )
                rows.append(
                    (
                        picture.numpy(),
                        true.numpy(),
                        guess.numpy(),
                        f"{label}: image {row['index']}, IoU {row['miou']:.3f}",
                    )
                )
        written.append(out / "masks.png")
        plot_segmentation_grid(rows, names, palette, written[-1], title=title)
    segmentation.print_evaluation(results, data_name, written)
    return results


def worst_classified(logits, labels, count: int) -> list[dict]:
    """The `count` test images given the lowest probability of their true class, worst first."""
    import torch

    probabilities = logits.softmax(dim=1)
    true_probability = probabilities[torch.arange(len(labels)), labels]
    worst = true_probability.argsort()[:count]
    return [
        {
            "index": int(i),
            "true": int(labels[i]),
            "predicted": int(probabilities[i].argmax()),
            "p_true": float(true_probability[i]),
            "p_predicted": float(probabilities[i].max()),
        }
        for i in worst
    ]


def plot_errors(worst: list[dict], dataset, normalization: dict, names: list[str], path: Path) -> None:
    """The worst-classified test images, as the network saw them (normalization undone), with their labels."""
    import torch

    from cnncli.plots import plot_worst_classified

    mean, std = (torch.tensor(normalization[k]).view(-1, 1, 1) for k in ("mean", "std"))
    pictures = []
    for row in worst:
        pixels = (dataset[row["index"]][0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        pictures.append(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    plot_worst_classified(pictures, worst, [str(name) for name in names], path)  # red: wrong; blue: right, unsure


def _print(results: dict, written: list[Path]) -> None:
    console = Console()
    overall = Table(title=f"test split of {results['data']} ({results['samples']} images)")
    for column in ("loss", "top-1", "top-5"):
        overall.add_column(column, justify="right")
    overall.add_row(*(f"{results[k]:.4f}" for k in ("test/loss", "test/acc1", "test/acc5")))
    console.print(overall)
    classes = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        classes.add_column(column, justify="right")
    for name, m in results["per_class"].items():
        classes.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    console.print(classes)
    console.print(f"wrote {', '.join(map(str, written))}", soft_wrap=True, highlight=False)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
@reports_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
