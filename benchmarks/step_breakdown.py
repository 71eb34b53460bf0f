"""Where a LeNet-5 training step's time goes in `cnncli train`, next to the plain loop's: per-step timers.

    python benchmarks/step_breakdown.py [--batch-size 128] [--epochs 2] [--progress-bar]

The companion of data_throughput.py (same data, model and in-process `cnncli train`, both loops taking turns
every 20 batches): a callback stamps the time at each of Lightning's per-step hooks and around
`training_step`, and the plain loop (fused Adam, as cnncli's adam.yaml) stamps its own phases. Reports the mean
microseconds of each segment over the timed epochs (after 1 warm-up epoch). cnncli's segments, in the order
Lightning runs them under automatic optimization:

- batch end -> next batch start: callbacks' batch-end hooks, loop bookkeeping, fetching the next batch
  (DataLoader over the in-memory tensor), moving it to the device;
- batch start -> training_step: the closure, Lightning's optimizer wrapper, torch's optimizer step wrapper;
- training_step: forward, loss, the epoch sums, the nan check;
- training_step end -> before backward: zero_grad and its hooks;
- backward (between on_before_backward and on_after_backward);
- after backward -> batch end: gradient clipping hook, the Adam update, the way back out.
"""

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from data_throughput import DATA, PlainLoop, compose_train
from report import emit

from cnncli.commands.train import train
from cnncli.tasks.classification import ImageClassifier

SEGMENTS = {
    ("batch_end", "batch_start"): "batch end -> next batch start (fetch, hooks)",
    ("batch_start", "step_start"): "batch start -> training_step (closure, optimizer wrappers)",
    ("step_start", "step_end"): "training_step (forward, loss, sums, nan check)",
    ("step_end", "before_backward"): "zero_grad and its hooks",
    ("before_backward", "after_backward"): "backward",
    ("after_backward", "batch_end"): "after backward -> batch end (Adam update, way out)",
}


class Stamps(L.Callback):
    """Sums the time between consecutive stamps (named by SEGMENTS) and runs the plain loop every 20 batches."""

    def __init__(self, plain: PlainLoop):
        self.plain, self.seconds, self.counts, self.last = plain, defaultdict(float), defaultdict(int), None
        self.plain_seconds, self.plain_steps = defaultdict(float), 0

    def stamp(self, name: str) -> None:
        now = time.perf_counter()
        if self.last is not None and (self.last[0], name) in SEGMENTS:
            self.seconds[(self.last[0], name)] += now - self.last[1]
            self.counts[(self.last[0], name)] += 1
        self.last = (name, now)

    def on_train_epoch_start(self, trainer, module):
        self.timing, self.last = trainer.current_epoch >= 1, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.stamp("batch_start") if self.timing else None

    def on_before_backward(self, trainer, module, loss):
        self.stamp("before_backward") if self.timing else None

    def on_after_backward(self, trainer, module):
        self.stamp("after_backward") if self.timing else None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not self.timing:
            return
        self.stamp("batch_end")
        if (batch_idx + 1) % 20 == 0:
            self.run_plain(20)
            self.last = ("batch_end", time.perf_counter())  # the plain loop's time is not cnncli's

    def run_plain(self, steps: int) -> None:
        p = self.plain
        for _ in range(steps):
            t0 = time.perf_counter()
            if p.position >= len(p.labels):
                p.order, p.position = torch.randperm(len(p.labels)), 0
            index = p.order[p.position : p.position + p.batch_size]
            p.position += p.batch_size
            x, y = p.images[index].float().div_(255).sub_(p.mean).div_(p.std), p.labels[index]
            t1 = time.perf_counter()
            loss = F.cross_entropy(p.model(x), y)
            t2 = time.perf_counter()
            p.optimizer.zero_grad()
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            p.optimizer.step()
            t5 = time.perf_counter()
            for name, seconds in (
                ("data (index, normalize)", t1 - t0),
                ("forward, loss", t2 - t1),
                ("zero_grad", t3 - t2),
                ("backward", t4 - t3),
                ("Adam step", t5 - t4),
            ):
                self.plain_seconds[name] += seconds
        self.plain_steps += steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--progress-bar", action="store_true", help="the rich progress bar on (default: off)")
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()

    stamps = Stamps(PlainLoop(args.batch_size, fused=True))
    training_step = ImageClassifier.training_step

    def stamped_training_step(module, batch, batch_idx):
        stamps.stamp("step_start") if stamps.timing else None
        loss = training_step(module, batch, batch_idx)
        stamps.stamp("step_end") if stamps.timing else None
        return loss

    ImageClassifier.training_step = stamped_training_step
    overrides = [
        *DATA,
        f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={1 + args.epochs}",
        f"trainer.enable_progress_bar={str(args.progress_bar).lower()}",
        "callbacks.early_stopping.patience=1000",
        f"trainer.threads={torch.get_num_threads()}",  # as the comparison runs (auto: benchmarks/threads.py)
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        train(compose_train(overrides, Path(run_dir)), callbacks=(stamps,))

    cnncli_rows = [(label, stamps.seconds[key] / max(stamps.counts[key], 1) * 1e6) for key, label in SEGMENTS.items()]
    plain_rows = [(name, s / max(stamps.plain_steps, 1) * 1e6) for name, s in stamps.plain_seconds.items()]
    lines = [
        f"LeNet-5, batch {args.batch_size}, {torch.get_num_threads()} CPU threads; mean microseconds per step over "
        f"{args.epochs} timed epochs",
        "",
        "| cnncli train: segment | us | plain loop (fused Adam): phase | us |",
        "|---|---:|---|---:|",
    ]
    for i in range(max(len(cnncli_rows), len(plain_rows))):
        left = cnncli_rows[i] if i < len(cnncli_rows) else ("", None)
        right = plain_rows[i] if i < len(plain_rows) else ("", None)
        lines.append(
            f"| {left[0]} | {'' if left[1] is None else f'{left[1]:,.0f}'} | {right[0]} | "
            f"{'' if right[1] is None else f'{right[1]:,.0f}'} |"
        )
    cnncli_total, plain_total = sum(us for _, us in cnncli_rows), sum(us for _, us in plain_rows)
    lines += [
        f"| **step** | **{cnncli_total:,.0f}** | **step** | **{plain_total:,.0f}** |",
        "",
        f"cnncli - plain: {cnncli_total - plain_total:,.0f} us a step; ratio {plain_total / cnncli_total:.3f}",
    ]
    emit(
        "\n".join(lines),
        {
            "extra_us_per_step": round(cnncli_total - plain_total),
            "like_for_like_ratio": round(plain_total / cnncli_total, 3),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
