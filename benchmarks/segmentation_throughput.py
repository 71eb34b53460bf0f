"""Training throughput of `cnncli train` against a hand-written PyTorch loop: a U-Net segmenting shapes (issue 17).

    python benchmarks/segmentation_throughput.py [--batch-size 16] [--repeats 1] [--epochs 2] [--chunk 10]
                                                 [--train-size 2000] [--threads N]

Both sides train the same network (conf/model/unet.yaml: variant same, base_channels 16, depth 3, batch norm;
built by cnncli.models.build_model from the same seed) with per-pixel cross-entropy and Adam at a constant
rate, on the same tensors (data=shapes: uint8 images 48x48x3 and uint8 masks, cnncli/data/shapes.py),
shuffled each epoch and normalized per batch with the same mean and std. cnncli runs with `loss=ce
scheduler=none` so both do the same arithmetic (its default recipe adds a Dice term and a one-cycle schedule).

As benchmarks/data_throughput.py (whose Interleave callback and compose_train this script uses): the real
`cnncli train` code path in process, the two loops taking turns every `--chunk` batches on their own clocks so
both see the same machine; epoch 0 warms up and is not counted; validation and checkpoints are not timed.
cnncli's clock covers its DataLoader over `__getitems__`, forward, loss, the confusion-matrix metric
(torchmetrics, every step), backward, Adam and Lightning's hooks.

Reports a markdown table: images/s of each over the timed epochs, and the ratio cnncli / plain of every timed
epoch (the issue's bar: >= 0.9): median, lowest and highest.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from data_throughput import Interleave, compose_train, rate
from report import emit

from cnncli.commands.train import train
from cnncli.config import call_target
from cnncli.models import build_model

PLAIN = "plain loop"
PLAIN_FUSED = "plain loop, fused Adam"


def data_overrides(train_size: int) -> list[str]:
    return ["model=unet", "loss=ce", "scheduler=none", f"data.train_size={train_size}"]


class PlainLoop:
    """The hand-written loop over the shapes tensors, a few batches at a time."""

    def __init__(self, batch_size: int, train_size: int, fused: bool = False):
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = compose_train([*data_overrides(train_size), f"data.batch_size={batch_size}"], Path(run_dir))
        data = call_target("data", cfg.data)
        data.setup("fit")
        self.images, self.masks = data.splits["train"].images, data.splits["train"].masks
        self.mean, self.std = (torch.tensor(data.normalization[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
        self.batch_size = batch_size
        L.seed_everything(cfg.seed, verbose=False)
        self.model = build_model(cfg.model)
        self.model.train()
        lr, betas = cfg.optimizer.lr, tuple(cfg.optimizer.betas)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=betas, fused=fused or None)
        self.order, self.position = torch.randperm(len(self.masks)), 0

    def run(self, batches: int) -> int:
        seen = 0
        for _ in range(batches):
            if self.position >= len(self.masks):
                self.order, self.position = torch.randperm(len(self.masks)), 0
            index = self.order[self.position : self.position + self.batch_size]
            self.position += self.batch_size
            x = self.images[index].float().div_(255).sub_(self.mean).div_(self.std)
            loss = F.cross_entropy(self.model(x), self.masks[index].long())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            seen += len(index)
        return seen


def interleaved_run(batch_size: int, train_size: int, epochs: int, chunk: int) -> list[dict]:
    plains = {PLAIN: PlainLoop(batch_size, train_size), PLAIN_FUSED: PlainLoop(batch_size, train_size, fused=True)}
    timer = Interleave(plains, chunk)
    overrides = [
        *data_overrides(train_size),
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={1 + epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks.early_stopping.patience=1000",
        f"trainer.threads={torch.get_num_threads()}",  # the plain loop's, in this process
        "test=false",
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        train(compose_train(overrides, Path(run_dir)), callbacks=(timer,))
    return [figures for figures in timer.epochs if figures["epoch"] >= 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10, help="batches each loop runs before the others' turn")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = f"{os.getloadavg()[0]:.2f}"
    rows = []
    for _ in range(args.repeats):
        rows += interleaved_run(args.batch_size, args.train_size, args.epochs, args.chunk)
    ratios = {
        plain: [(e["cnncli"][1] / e["cnncli"][0]) / (e[plain][1] / e[plain][0]) for e in rows]
        for plain in (PLAIN, PLAIN_FUSED)
    }
    median = statistics.median(ratios[PLAIN])
    lines = [
        f"U-Net (variant same, base 16, depth 3, batch norm; 482,788 parameters), {args.train_size} x 48x48x3 "
        f"shapes with masks, batch {args.batch_size}, per-pixel cross-entropy, Adam; the loops take turns every "
        f"{args.chunk} batches in one process; {args.repeats} run(s) x {args.epochs} timed epochs after 1 warm-up "
        f"epoch; {torch.get_num_threads()} CPU threads, torch {torch.__version__}; load average before/after: "
        f"{load_before} / {os.getloadavg()[0]:.2f}",
        "",
        f"| cnncli images/s | {PLAIN} images/s | ratio, median epoch | lowest | highest | {PLAIN_FUSED} images/s "
        "| ratio to it, median epoch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {rate(rows, 'cnncli'):,.0f} | {rate(rows, PLAIN):,.0f} | {median:.3f} | {min(ratios[PLAIN]):.3f} | "
        f"{max(ratios[PLAIN]):.3f} | {rate(rows, PLAIN_FUSED):,.0f} | {statistics.median(ratios[PLAIN_FUSED]):.3f} |",
    ]
    headline = {
        "ratio_median cnncli train unet": round(median, 3),
        "like_for_like_ratio cnncli train unet": round(statistics.median(ratios[PLAIN_FUSED]), 3),
    }
    emit("\n".join(lines), headline, args.json)


if __name__ == "__main__":
    main()
