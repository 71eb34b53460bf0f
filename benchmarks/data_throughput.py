"""Training throughput of `cnncli train` against a hand-written PyTorch loop: LeNet-5 on 60,000 28x28x1 images.

    python benchmarks/data_throughput.py [--batch-size 128] [--repeats 1] [--epochs 2] [--threads N] [--profile]

Both sides train the same network (conf/model/lenet5.yaml, built by cnncli.models.build_model from the same
seed) with the same Adam (conf/optimizer/adam.yaml: lr 1e-3) and batch size, on the same uint8 tensor
(data=fake, train_size=60000: cnncli/data/fake.py), shuffled each epoch and normalized per batch with the
same mean and std. Each runs one warm-up epoch, then `--epochs` timed epochs; images/s = training images /
time of the timed epochs.

The cnncli side is the real code path, in process: the train config is composed with Hydra's compose API
(`data=fake data.train_size=60000 data.channels=1 data.image_size=28 model=lenet5 ...`) and handed to
cnncli.commands.train.train itself, which builds the data module, ImageClassifier, callbacks, CSV logger
and Trainer as `cnncli train` does. In process rather than a timed subprocess, because subtracting a
measured start-up (imports, ~8 s here) from a whole run would leave a noisier number than timing the
epochs themselves. A timing callback joins the configured ones (train's `callbacks` argument): it counts
from the start of each training epoch to the end of its last training batch, so it covers everything
`cnncli train` does per batch (DataLoader over `__getitems__`, forward, loss, metrics updates and logging,
backward, Adam, hooks) and leaves out the validation pass and checkpoint writing at the epoch's end, which
the plain loop does not have. Two variants: the defaults (rich progress bar on) and
`trainer.enable_progress_bar=false`, as the tests run it.

The plain loop: torch.randperm per epoch, `images[index].float().div_(255).sub_(mean).div_(std)`,
model, F.cross_entropy, zero_grad, backward, step. Nothing else.

Reports a markdown table: images/s of each (median and best timed epoch: on a shared machine other work only
ever slows an epoch down, so the best epoch is the steadier figure), and the ratio cnncli / plain (the
project's bar: >= 0.9). `--repeats` runs every loop that many times, interleaved.
`--profile` also prints the top functions by cumulative time of one cnncli epoch (cProfile).
"""

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from report import emit

from cnncli import config_dir
from cnncli.commands.train import train
from cnncli.config import call_target
from cnncli.models import build_model

DATA = ["data=fake", "data.train_size=60000", "data.channels=1", "data.image_size=28", "model=lenet5"]


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine the CPU time of a single-threaded run
    (--threads 1) is what other work disturbs least."""
    return time.perf_counter(), time.process_time()


class TrainTimer(L.Callback):
    """Wall and CPU seconds and images of each training epoch's batches (validation, checkpointing excluded)."""

    epochs: list[tuple[int, float, float, int]] = []
    profile: cProfile.Profile | None = None  # set: profile the second epoch

    def on_train_epoch_start(self, trainer, module):
        self.images, self.started = 0, clocks()
        if TrainTimer.profile is not None and trainer.current_epoch == 1:
            TrainTimer.profile.enable()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.images += len(batch[1])
        if batch_idx == trainer.num_training_batches - 1:
            if TrainTimer.profile is not None and trainer.current_epoch == 1:
                TrainTimer.profile.disable()
            wall, cpu = (now - then for now, then in zip(clocks(), self.started))
            TrainTimer.epochs.append((trainer.current_epoch, wall, cpu, self.images))


def compose_train(overrides: list[str], run_dir: Path):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)  # as @hydra.main does: ${hydra:runtime.output_dir} resolves
    with open_dict(cfg):
        del cfg["hydra"]  # and the task sees the config without its `hydra` node
    return cfg


def cnncli_run(batch_size: int, epochs: int, progress_bar: bool) -> list[tuple[float, float]]:
    """(images per wall second, per CPU second) of each timed epoch of `cnncli train`, called in process."""
    TrainTimer.epochs = []
    overrides = [
        *DATA,
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={1 + epochs}",
        f"trainer.enable_progress_bar={str(progress_bar).lower()}",
        "callbacks.early_stopping=null",  # never stops before the last timed epoch
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        train(compose_train(overrides, Path(run_dir)), callbacks=(TrainTimer(),))
    return [(images / wall, images / cpu) for epoch, wall, cpu, images in TrainTimer.epochs if epoch >= 1]


def plain_run(batch_size: int, epochs: int) -> list[tuple[float, float]]:
    """(images per wall second, per CPU second) of each timed epoch of a hand-written loop, same tensor."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_train([*DATA, f"data.batch_size={batch_size}"], Path(run_dir))
    L.seed_everything(cfg.seed, verbose=False)
    data = call_target("data", cfg.data)
    model = build_model(cfg.model)
    data.setup("fit")
    images, labels = data.splits["train"].images, data.splits["train"].labels
    mean, std = (torch.tensor(data.normalization[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas))
    model.train()
    rates = []
    for epoch in range(1 + epochs):
        started = clocks()
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), batch_size):
            index = order[start : start + batch_size]
            x = images[index].float().div_(255).sub_(mean).div_(std)
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch >= 1:
            rates.append(tuple(len(labels) / (now - then) for now, then in zip(clocks(), started)))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each loop, interleaved; the median counts")
    parser.add_argument("--profile", action="store_true", help="cProfile one cnncli epoch (progress bar off)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = f"{os.getloadavg()[0]:.2f}"

    loops = {
        "plain PyTorch loop": lambda: plain_run(args.batch_size, args.epochs),
        "cnncli train (enable_progress_bar=false)": lambda: cnncli_run(args.batch_size, args.epochs, False),
        "cnncli train (defaults: rich progress bar)": lambda: cnncli_run(args.batch_size, args.epochs, True),
    }
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    for _ in range(args.repeats):  # interleaved, so a slow spell on a shared machine hits every loop
        for name, run in loops.items():
            rates[name] += run()

    lines = [
        f"LeNet-5, 60,000 x 28x28x1 uint8 images, batch {args.batch_size}, Adam; {args.repeats} x {args.epochs} "
        f"timed epochs, each run after 1 warm-up epoch; {torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}; load average before/after: {load_before} / {os.getloadavg()[0]:.2f}",
        "",
        "| loop | images/s, median epoch | images/s, best epoch | images per CPU-s, median | ratio (median) "
        "| ratio (best) | ratio (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base, headline = None, {}
    for name, values in rates.items():
        wall = [w for w, _ in values]
        row = statistics.median(wall), max(wall), statistics.median([c for _, c in values])
        base = base or row
        ratios = [r / b for r, b in zip(row, base)]
        lines.append(f"| {name} | {row[0]:,.0f} | {row[1]:,.0f} | {row[2]:,.0f} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")
        headline[f"ratio_median {name}"] = round(ratios[0], 3)
    emit("\n".join(lines), headline, args.json)

    if args.profile:
        TrainTimer.profile = cProfile.Profile()
        cnncli_run(args.batch_size, 1, progress_bar=False)
        out = io.StringIO()
        pstats.Stats(TrainTimer.profile, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
