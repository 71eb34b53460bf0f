"""Every command the README shows runs, as a user runs it (in a subprocess), so the README cannot drift from
the tool: the backticked `cnncli ...` commands and the `cnncli` parts of its fenced blocks. Training ones get
short-run overrides appended (later overrides win), `$ckpt` is a checkpoint of a short run, the example
folders are made here. A new example runs by default; the ones not run are listed in NOT_RUN with the reason."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import QUIET, cnncli
from PIL import Image

from cnncli.data.shapes import draw

README = Path(__file__).resolve().parent.parent / "README.md"
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", *QUIET]
NOT_RUN = {  # example -> why it is not run here
    "cnncli train": "the quick start: run exactly as written by the default_run fixture (tests/test_train.py)",
    "cnncli train model=unet": "run exactly as written by the unet_run fixture (tests/test_segmentation.py)",
    "cnncli train model=vit_tiny data=cifar10": "downloads CIFAR-10; the network it builds for CIFAR-10's 32x32x3 "
    "images trains a step in tests/test_attention_models.py",
    **{f"cnncli {name}": "names the subcommand in a sentence; its examples run"
       for name in ("eval", "params", "predict", "data show", "export", "leaderboard", "tune", "viz", "compare")},
}  # fmt: skip


def readme_commands() -> list[str]:
    text = README.read_text()
    inline = re.findall(r"`(cnncli [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    fenced = [
        part.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines()
        for part in line.split("&&")
        if part.strip().startswith("cnncli")
    ]
    return list(dict.fromkeys(inline + fenced))


COMMANDS = [command for command in readme_commands() if command not in NOT_RUN]


def test_the_readme_has_examples_and_every_one_is_run_or_listed():
    assert len(COMMANDS) >= 12
    assert set(NOT_RUN) <= set(readme_commands())  # no stale entry


@pytest.fixture(scope="module")
def place(short_run, unet_run, tmp_path_factory):
    """A working folder with what the examples name: $ckpt's and $unet's runs, a sweep of two runs, images,
    a folder of images with masks."""
    cwd = tmp_path_factory.mktemp("readme")
    run = cwd / "run"
    shutil.copytree(short_run, run)
    shutil.copytree(unet_run, cwd / "unet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 4)):
        for kind in ("images", "masks"):
            (cwd / "my_masks" / split / kind).mkdir(parents=True)
        for i in range(count):
            image, mask = draw(rng, 48, 3)
            Image.fromarray(image.transpose(1, 2, 0)).save(cwd / "my_masks" / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(cwd / "my_masks" / split / "masks" / f"{i}.png")
    Image.fromarray(draw(rng, 64, 3)[0].transpose(1, 2, 0)).save(cwd / "photo.png")
    for label, count in (("NORMAL", 6), ("PNEUMONIA", 14)):  # an image folder: one folder per class
        (cwd / "xrays" / label).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (60, 50), dtype=np.uint8)).save(cwd / "xrays" / label / f"{i}.jpg")
    for n in (0, 1):
        shutil.copytree(short_run, cwd / "sweep" / str(n))
    digit = Image.new("L", (8, 8), 0)
    digit.paste(255, (3, 1, 5, 7))  # a bar, roughly a one
    for path in ("my_digit.png", "scans/a.png", "scans/b.png", "three.png"):
        (cwd / path).parent.mkdir(exist_ok=True)
        digit.save(cwd / path)
    return cwd


def concrete(command: str, place: Path) -> list[str]:
    """The example's arguments with its placeholders filled in, short-run overrides after training ones."""
    ckpt = place / "run" / "checkpoints" / "best.ckpt"
    command = command.replace("$unet", str(place / "unet" / "checkpoints" / "best.ckpt"))
    command = command.replace("$ckpt", str(ckpt)).replace("resume=RUN", f"resume={place / 'run'}")
    command = re.sub(r"outputs/multirun/\S+", str(place / "sweep"), command)
    command = command.replace("model_file=model.onnx", f"model_file={place / 'run' / 'export' / 'model.onnx'}")
    args = command.split()[1:]
    if args[0] == "train" and not {"--help", "--cfg"} & set(args) and "resume=" not in command:
        args += [f"hydra.run.dir={place / 'train' / str(COMMANDS.index(' '.join(['cnncli', *args])))}", *SHORT]
    if args[0] == "tune":
        args += ["study.n_trials=1", f"hydra.run.dir={place / 'tune'}", *SHORT]
    if args[0] == "bench":  # the table's shape, not the figures: small images, one timed batch, on what is here
        args = [arg for arg in args if not arg.startswith("device=")] + ["input_size=32", "batch_size=2", "warmup=0",
                                                                         "runs=1"]  # fmt: skip
    return args


# what each example must leave: a line it prints or a file it writes (relative to the working folder)
EXPECTED = {
    "train": lambda out, place: any(
        line in out for line in ("best checkpoint:", "cnncli train: train", "# job 1: model=lenet5", "nothing left")
    ),
    "eval": lambda out, place: (place / "run" / "eval.json").is_file() and "top-1" in out,
    "params": lambda out, place: "parameters" in out,
    "bench": lambda out, place: "infer img/s" in out,
    "lr-find": lambda out, place: "train at it: cnncli train" in out,
    "predict": lambda out, place: "probability" in out,
    "export": lambda out, place: (place / "run" / "export" / "model.onnx").is_file(),
    "data": lambda out, place: ".png" in out,
    "leaderboard": lambda out, place: (place / "sweep" / "leaderboard.csv").is_file(),
    "tune": lambda out, place: (place / "tune" / "best.yaml").is_file(),
    "viz": lambda out, place: ".png" in out,
    "compare": lambda out, place: ".png" in out,
    "--help": lambda out, place: "subcommands:" in out,
}


# the examples of a segmentation run ($unet) leave theirs
SEGMENTATION_EXPECTED = {
    "eval": lambda out, place: (place / "unet" / "masks.png").is_file() and "mean IoU" in out,
    "predict": lambda out, place: (place / "masks" / "photo_mask.png").is_file(),
    "export": lambda out, place: (place / "unet" / "export" / "model.onnx").is_file(),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS, key=lambda c: "model_file=" in c))  # export before its use
def test_readme_example_runs(command, place):
    args = concrete(command, place)
    result = cnncli(*args, cwd=place)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
    expected = SEGMENTATION_EXPECTED if "$unet" in command else EXPECTED
    assert expected.get(args[0], EXPECTED[args[0]])(result.stdout, place), result.stdout[-2000:]
