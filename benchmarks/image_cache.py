"""Training epochs on a folder of large JPEGs with data.cache none, ram and disk, against a plain torchvision
ImageFolder + DataLoader loop: what decoding costs an epoch, and what the cache gives back.

    python benchmarks/image_cache.py [--images 2000] [--epochs 2] [--workers 2] [--data DIR] [--json PATH]

The data: a generated chest-X-ray-like folder (cnncli/data/folder.py's layout without split folders, so val
and test are carved from it): `--images` grayscale JPEGs of 1200 x 1000 pixels (quality 90), two classes of
1 to 3 (NORMAL, PNEUMONIA), smooth "ribs and lungs" shading with noise, the PNEUMONIA ones with cloudy
patches. Generated once into a temporary folder (or into `--data DIR`, kept and reused).

The cnncli side is `cnncli train` itself, in process (as benchmarks/data_throughput.py runs it):
`data=imagefolder data.channels=1 data.image_size=64 model=lenet5`, batch 32, `--workers` DataLoader workers,
Adam, `--epochs` epochs, for each of data.cache=none, ram, disk (a first run, which builds the cache) and
disk again (a second run, which reads the cache the first built). Reported per run: the data module's setup
(the file listing, the image check or the cache's build, the normalization statistics) and each training
epoch's images/s (from its first batch's start to its last batch's end; the first epoch includes starting
the DataLoader workers; validation is not counted).

The plain loop: torchvision's ImageFolder over the same folder with the transforms people write
(Grayscale, Resize((64, 64)), ToTensor, Normalize), a DataLoader with the same batch size and workers
(persistent), the same LeNet-5 and Adam; images/s of each epoch, timed alike.

Goals (issue "[6/6] Training aids users expect"): a cached epoch >= 5x the uncached one and >= 3x the plain
loop: the headline figures are the slowest cached run's last epoch over cnncli's uncached last epoch and over
the plain loop's last epoch.
"""

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from data_throughput import compose_train
from PIL import Image
from report import emit
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from cnncli.commands.train import train
from cnncli.data.folder import ImageFolderData
from cnncli.models import build_model

WIDTH, HEIGHT = 1200, 1000
CLASSES = {"NORMAL": 1, "PNEUMONIA": 3}  # 1 to 3, as the Kaggle set's training folder


def xray(seed: int, cloudy: bool) -> np.ndarray:
    """A 1200 x 1000 grayscale picture with a chest X-ray's large smooth shapes, grain and JPEG-able detail."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    cx, cy = WIDTH / 2 + rng.normal(0, 30), HEIGHT / 2 + rng.normal(0, 30)
    body = 170 - 90 * ((x - cx) ** 2 / (0.45 * WIDTH) ** 2 + (y - cy) ** 2 / (0.55 * HEIGHT) ** 2)
    lungs = 70 * np.exp(-(((np.abs(x - cx) - 0.2 * WIDTH) / (0.12 * WIDTH)) ** 2 + ((y - cy) / (0.3 * HEIGHT)) ** 2))
    ribs = 12 * np.sin((y + 0.3 * np.abs(x - cx)) / (18 + rng.uniform(0, 4)))
    picture = body - lungs + ribs
    if cloudy:
        for _ in range(3):
            px, py = rng.uniform(0.25, 0.75) * WIDTH, rng.uniform(0.3, 0.7) * HEIGHT
            picture += 45 * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * rng.uniform(40, 90) ** 2))
    picture += rng.normal(0, 4, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def write_one(args: tuple) -> None:
    path, seed, cloudy = args
    Image.fromarray(xray(seed, cloudy), "L").save(path, quality=90)


def generate(root: Path, count: int) -> bool:
    """The folder: `count` JPEGs, NORMAL : PNEUMONIA = 1 : 3, written in parallel; False: it was there already."""
    done = root / ".complete"
    if done.is_file() and done.read_text() == str(count):
        return False
    jobs, total = [], sum(CLASSES.values())
    for name, share in CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count * share // total):
            jobs.append((root / name / f"{i:05d}.jpeg", len(jobs), name == "PNEUMONIA"))
    with ProcessPoolExecutor() as pool:
        list(pool.map(write_one, jobs, chunksize=16))
    done.write_text(str(count))
    return True


class EpochClock(L.Callback):
    """Images/s of each training epoch: its first batch's start to its last batch's end (no validation)."""

    def __init__(self):
        self.rates: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self.images, self.started = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.images += len(batch[1])
        if batch_idx == trainer.num_training_batches - 1:
            self.rates.append(self.images / (time.perf_counter() - self.started))


SETUP: list[float] = []  # seconds spent in the data module's setup, each call


def timed_setup(setup):
    def wrapper(self, stage=None):
        began = time.perf_counter()
        setup(self, stage)
        SETUP.append(time.perf_counter() - began)

    return wrapper


def cnncli_run(root: Path, cache: str, cache_dir: Path, args) -> tuple[float, list[float]]:
    """(the data module's setup seconds, images/s of each epoch) of one `cnncli train` run."""
    overrides = [
        "data=imagefolder",
        f"data.root={root}",
        "data.channels=1",
        f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"data.cache={cache}",
        f"data.cache_dir={cache_dir}",
        "model=lenet5",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "callbacks.early_stopping=null",
        f"trainer.threads={torch.get_num_threads()}",  # the plain loop's, in this process
    ]
    clock = EpochClock()
    SETUP.clear()
    with tempfile.TemporaryDirectory() as run_dir:
        train(compose_train(overrides, Path(run_dir)), callbacks=(clock,))
    return sum(SETUP), clock.rates


def plain_run(root: Path, args) -> list[float]:
    """Images/s of each epoch of the plain torchvision loop."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_train(
            [
                "data=imagefolder",
                f"data.root={root}",
                "data.channels=1",
                f"data.image_size={args.image_size}",
                "data.num_classes=2",
            ],
            Path(run_dir),
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = transforms.Compose(
        [
            transforms.Grayscale(),
            transforms.Resize((args.image_size, args.image_size)),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.25]),
        ]
    )
    loader = DataLoader(
        ImageFolder(str(root), transform=transform),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda",
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for _ in range(args.epochs):
        images, started = 0, time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            images += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(images / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--data", type=Path, help="generate the folder here and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the markdown and headline figures here")
    args = parser.parse_args()
    ImageFolderData.setup = timed_setup(ImageFolderData.setup)
    load_before = f"{os.getloadavg()[0]:.2f}"

    with tempfile.TemporaryDirectory() as scratch:
        root = (args.data or Path(scratch) / "xray").absolute()
        began = time.perf_counter()
        fresh = generate(root, args.images)
        generated = f"generated in {time.perf_counter() - began:.0f} s" if fresh else f"generated earlier in {root}"
        size = sum(p.stat().st_size for p in root.rglob("*.jpeg"))
        cache_dir = Path(scratch) / "cache"
        plain = plain_run(root, args)  # first, beside cnncli's uncached run: a shared machine's load drifts
        print("plain", plain, flush=True)
        runs = {}
        for name, cache in (
            ("data.cache=none", "none"),
            ("data.cache=ram", "ram"),
            ("data.cache=disk, first run (builds it)", "disk"),
            ("data.cache=disk, second run (reads it)", "disk"),
        ):
            runs[name] = cnncli_run(root, cache, cache_dir, args)
            print(name, runs[name], flush=True)

    epochs = range(1, args.epochs + 1)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"{args.images:,} grayscale JPEGs of {WIDTH}x{HEIGHT} ({size / args.images / 1024:.0f} KiB each on average, "
        f"NORMAL : PNEUMONIA = 1 : 3; {generated}), "
        f"LeNet-5 at {args.image_size}x{args.image_size}x1, "
        f"batch {args.batch_size}, Adam, {args.workers} DataLoader workers, {args.epochs} epochs; cnncli trains on "
        f"the 80% it carves (val and test 10% each), the plain loop on the whole folder; {device}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; load average before/after: {load_before} / "
        f"{os.getloadavg()[0]:.2f}",
        "",
        "| run | data setup s | " + " | ".join(f"epoch {e} images/s" for e in epochs) + " | last epoch vs none |",
        "|---|---:|" + "---:|" * args.epochs + "---:|",
    ]
    uncached = runs["data.cache=none"][1][-1]
    for name, (setup, rates) in runs.items():
        cells = " | ".join(f"{rate:,.0f}" for rate in rates)
        lines.append(f"| `cnncli train` {name} | {setup:.1f} | {cells} | {rates[-1] / uncached:.2f}x |")
    cells = " | ".join(f"{rate:,.0f}" for rate in plain)
    lines.append(f"| plain ImageFolder + DataLoader | | {cells} | {plain[-1] / uncached:.2f}x |")
    slowest = min(rates[-1] for name, (_, rates) in runs.items() if name != "data.cache=none")
    headline = {
        "cached_over_uncached": round(slowest / uncached, 2),
        "cached_over_plain_imagefolder": round(slowest / plain[-1], 2),
    }
    lines += [
        "",
        f"Slowest cached last epoch: {slowest:,.0f} images/s, {headline['cached_over_uncached']}x cnncli's uncached "
        f"(goal >= 5x) and {headline['cached_over_plain_imagefolder']}x the plain ImageFolder loop's (goal >= 3x).",
    ]
    emit("\n".join(lines), headline, args.json)


if __name__ == "__main__":
    main()
