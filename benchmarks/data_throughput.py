"""Training throughput of `cnncli train` against a hand-written PyTorch loop: LeNet-5 on 60,000 28x28x1 images.

    python benchmarks/data_throughput.py [--batch-size 128] [--repeats 1] [--epochs 2] [--chunk 20] [--threads N]
                                         [--profile]

Both sides train the same network (conf/model/lenet5.yaml, built by cnncli.models.build_model from the same
seed) with the same Adam (conf/optimizer/adam.yaml: lr 1e-3) and batch size, on the same uint8 tensor
(data=fake, train_size=60000: cnncli/data/fake.py), shuffled each epoch and normalized per batch with the
same mean and std.

The cnncli side is the real code path, in process: the train config is composed with Hydra's compose API
(`data=fake data.train_size=60000 data.channels=1 data.image_size=28 model=lenet5 ...`) and handed to
cnncli.commands.train.train itself, which builds the data module, ImageClassifier, callbacks, CSV logger
and Trainer as `cnncli train` does. In process rather than a timed subprocess, because subtracting a
measured start-up (imports, ~6 s here) from a whole run would leave a noisier number than timing the
epochs themselves.

The two loops run interleaved, `--chunk` batches each in turn: a callback that joins the configured ones
(train's `callbacks` argument) stops cnncli's clock every `--chunk` training batches, runs as many batches of
the plain loop on its clock, and starts cnncli's clock again. A shared 2-core virtual machine changes speed
by 10-20% from one second to the next; alternating every ~0.1 s, both loops see the same machine, where
runs one after the other gave ratios from 0.7 to 1.15 for the same code. cnncli's clock covers everything
`cnncli train` does per batch (DataLoader over `__getitems__`, forward, loss, metric sums, backward, Adam,
Lightning's hooks and callbacks); it leaves out the validation pass and checkpoint writing at each epoch's
end, which the plain loop does not have. Epoch 0 of each run warms both loops up and is not counted. Two
variants: the defaults (rich progress bar on) and `trainer.enable_progress_bar=false`, as the tests run it.

The plain loop: torch.randperm per epoch, `images[index].float().div_(255).sub_(mean).div_(std)`,
model, F.cross_entropy, zero_grad, backward, step. Nothing else.

Reports a markdown table: images/s of each over the timed epochs, and the ratio cnncli / plain (the
project's bar: >= 0.9) of every timed epoch: median, lowest and highest. `--repeats` runs each variant that
many times. `--profile` also prints the top functions by cumulative time of one cnncli epoch (cProfile,
the plain loop's batches left out).
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


class PlainLoop:
    """The hand-written loop, run a few batches at a time so that its batches can alternate with cnncli's."""

    def __init__(self, batch_size: int, fused: bool = False):
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = compose_train([*DATA, f"data.batch_size={batch_size}"], Path(run_dir))
        data = call_target("data", cfg.data)
        data.setup("fit")
        self.images, self.labels = data.splits["train"].images, data.splits["train"].labels
        self.mean, self.std = (torch.tensor(data.normalization[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
        self.batch_size = batch_size
        L.seed_everything(cfg.seed, verbose=False)
        self.model = build_model(cfg.model)
        self.model.train()
        # torch's default Adam, as a hand-written loop has it; fused=True: the implementation cnncli's adam.yaml picks
        lr, betas = cfg.optimizer.lr, tuple(cfg.optimizer.betas)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, betas=betas, fused=fused or None)
        self.order, self.position = torch.randperm(len(self.labels)), 0

    def run(self, batches: int) -> int:
        """Train on the next `batches` batches (shuffled afresh at each epoch's end); returns the images seen."""
        seen = 0
        for _ in range(batches):
            if self.position >= len(self.labels):
                self.order, self.position = torch.randperm(len(self.labels)), 0
            index = self.order[self.position : self.position + self.batch_size]
            self.position += self.batch_size
            x = self.images[index].float().div_(255).sub_(self.mean).div_(self.std)
            loss = F.cross_entropy(self.model(x), self.labels[index])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            seen += len(index)
        return seen


class Interleave(L.Callback):
    """Every `chunk` training batches of cnncli, as many batches of each plain loop in turn; each on its own
    clock. `epochs` gets, for every epoch, {"epoch": n, "cnncli": (seconds, images), <plain loop>: (seconds,
    images), ...}."""

    def __init__(self, plains: dict[str, PlainLoop], chunk: int, profile: cProfile.Profile | None = None):
        self.plains, self.chunk, self.profile = plains, chunk, profile  # profile: epoch 1, cnncli's batches
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, module):
        self.clocks = {name: [0.0, 0] for name in ("cnncli", *self.plains)}
        self.batches = 0
        self._profiling(trainer, True)
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clocks["cnncli"][1] += len(batch[1])
        self.batches += 1
        last = batch_idx == trainer.num_training_batches - 1
        if self.batches < self.chunk and not last:
            return
        paused = time.perf_counter()
        self.clocks["cnncli"][0] += paused - self.started
        self._profiling(trainer, False)
        for name, plain in self.plains.items():
            self.clocks[name][1] += plain.run(self.batches)
            self.clocks[name][0] += time.perf_counter() - paused
            paused = time.perf_counter()
        self.batches = 0
        if last:
            self.epochs.append({"epoch": trainer.current_epoch, **{k: tuple(v) for k, v in self.clocks.items()}})
        else:
            self._profiling(trainer, True)
        self.started = time.perf_counter()

    def _profiling(self, trainer, on: bool) -> None:
        if self.profile is not None and trainer.current_epoch == 1:
            self.profile.enable() if on else self.profile.disable()


def compose_train(overrides: list[str], run_dir: Path):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)  # as @hydra.main does: ${hydra:runtime.output_dir} resolves
    with open_dict(cfg):
        del cfg["hydra"]  # and the task sees the config without its `hydra` node
    return cfg


PLAIN = "plain loop"  # torch's default Adam: what the bar compares against
PLAIN_FUSED = "plain loop, fused Adam"  # the Adam cnncli's adam.yaml picks: cnncli's own overhead, like for like


def interleaved_run(batch_size: int, epochs: int, chunk: int, progress_bar: bool, profile=None) -> list[dict]:
    """`cnncli train` for 1 + `epochs` epochs with both plain loops interleaved; the timed epochs' figures."""
    plains = {PLAIN: PlainLoop(batch_size), PLAIN_FUSED: PlainLoop(batch_size, fused=True)}
    timer = Interleave(plains, chunk, profile)
    overrides = [
        *DATA,
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={1 + epochs}",
        f"trainer.enable_progress_bar={str(progress_bar).lower()}",
        "callbacks.early_stopping.patience=1000",  # on, as by default, but never stops before the last timed epoch
        f"trainer.threads={torch.get_num_threads()}",  # the plain loop's, in this process (auto: benchmarks/threads.py)
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        train(compose_train(overrides, Path(run_dir)), callbacks=(timer,))
    return [figures for figures in timer.epochs if figures["epoch"] >= 1]


def rate(epochs: list[dict], loop: str) -> float:
    return sum(e[loop][1] for e in epochs) / sum(e[loop][0] for e in epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant")
    parser.add_argument("--chunk", type=int, default=20, help="batches each loop runs before the others' turn")
    parser.add_argument("--profile", action="store_true", help="cProfile one cnncli epoch (progress bar off)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = f"{os.getloadavg()[0]:.2f}"

    variants = {"enable_progress_bar=false": False, "defaults: rich progress bar": True}
    epochs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, progress_bar in variants.items():
            epochs[name] += interleaved_run(args.batch_size, args.epochs, args.chunk, progress_bar)

    lines = [
        f"LeNet-5, 60,000 x 28x28x1 uint8 images, batch {args.batch_size}, Adam; the loops take turns every "
        f"{args.chunk} batches in one process; {args.repeats} run(s) x {args.epochs} timed epochs after 1 warm-up "
        f"epoch; {torch.get_num_threads()} CPU threads, torch {torch.__version__}; load average before/after: "
        f"{load_before} / {os.getloadavg()[0]:.2f}",
        "",
        f"| cnncli train | cnncli images/s | {PLAIN} images/s | ratio, median epoch | lowest | highest "
        f"| {PLAIN_FUSED} images/s | ratio to it, median epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    headline = {}
    for name, rows in epochs.items():
        ratios = {
            plain: [(e["cnncli"][1] / e["cnncli"][0]) / (e[plain][1] / e[plain][0]) for e in rows]
            for plain in (PLAIN, PLAIN_FUSED)
        }
        median = statistics.median(ratios[PLAIN])
        lines.append(
            f"| {name} | {rate(rows, 'cnncli'):,.0f} | {rate(rows, PLAIN):,.0f} | {median:.3f} | "
            f"{min(ratios[PLAIN]):.3f} | {max(ratios[PLAIN]):.3f} | {rate(rows, PLAIN_FUSED):,.0f} | "
            f"{statistics.median(ratios[PLAIN_FUSED]):.3f} |"
        )
        headline[f"ratio_median cnncli train ({name})"] = round(median, 3)
        headline[f"like_for_like_ratio cnncli train ({name})"] = round(statistics.median(ratios[PLAIN_FUSED]), 3)
    emit("\n".join(lines), headline, args.json)

    if args.profile:
        profile = cProfile.Profile()
        interleaved_run(args.batch_size, 1, args.chunk, progress_bar=False, profile=profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
