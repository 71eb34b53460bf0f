"""Shared helpers: the CLI is run as a user runs it, in a subprocess, from a scratch working directory."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Fewer lines in captured output: no live progress bar when the CLI runs under a test.
QUIET = ["trainer.enable_progress_bar=false"]


def cnncli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["cnncli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def cnncli_imports(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`cnncli ARGS` in a fresh process, as cnncli() runs it, and the top-level packages it imported (read from
    sys.modules as it exits): how the tests hold heavy packages out of the paths that must not load them."""
    modules = Path(cwd) / f".modules-{time.monotonic_ns()}.json"
    probe = (
        "import atexit, json, sys\n"
        f"OUT = {str(modules)!r}\n"
        "def write(): open(OUT, 'w').write(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "atexit.register(write)\n"
        f"sys.argv = ['cnncli', *{list(args)!r}]\n"
        "from cnncli.cli import console\n"
        "console()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    imported = set(json.loads(modules.read_text()))
    modules.unlink()
    return result, imported


def cnncli_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI run in this process, for the checks of validation and error messages (issue: in-process
    where no user command is proven): the same exit code and output a subprocess gives, without its 4 s of
    imports, which this test session pays once. A command that gets as far as training belongs in cnncli()."""
    import contextlib
    import io
    import sys
    import traceback
    import warnings

    from cnncli import cli

    out, err = io.StringIO(), io.StringIO()
    saved = os.getcwd(), sys.argv[:], sys.path[:]
    code = 0
    try:
        os.chdir(cwd)
        sys.argv = ["cnncli", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore does for cnncli()
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except BaseException:  # noqa: BLE001 (what Python does with an uncaught error: traceback, exit 1)
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved[0])
        sys.argv, sys.path[:] = saved[1], saved[2]
    return subprocess.CompletedProcess(["cnncli", *args], code, out.getvalue(), err.getvalue())


def edited_checkpoint(run_dir: Path, tmp_path: Path, edit, name: str = "edited.ckpt") -> str:
    """The run's last checkpoint, loaded as plain data, changed by `edit(data)` and saved as a new file."""
    import torch

    data = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    edit(data)
    path = tmp_path / name
    torch.save(data, path)
    return str(path)


def train(run_dir: Path, *overrides: str, cwd: Path | None = None, flags: tuple[str, ...] = ()) -> dict:
    """A training run into run_dir that must succeed; returns its summary.json. Hydra's own flags
    (--config-dir DIR) go before the overrides."""
    result = cnncli("train", *flags, f"hydra.run.dir={run_dir}", *QUIET, *overrides, cwd=cwd or run_dir.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def start(run_dir: Path, *overrides: str, cwd: Path) -> subprocess.Popen:
    """A training run in the background, for tests that signal or kill it."""
    return subprocess.Popen(
        ["cnncli", "train", f"hydra.run.dir={run_dir}", *QUIET, *overrides],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until `path` exists, the process ended, or the timeout passed."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """`cnncli train` exactly as the README runs it: no arguments, outputs under ./outputs/train/."""
    cwd = tmp_path_factory.mktemp("default")
    result = cnncli("train", cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "train").iterdir()
    (run_dir / "stdout.txt").write_text(result.stdout)
    return run_dir


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> Path:
    """A 3-epoch run, for tests that need a checkpoint but not a good model."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    train(run_dir, "trainer.max_epochs=3")
    return run_dir


@pytest.fixture(scope="session")
def unet_run(tmp_path_factory) -> Path:
    """`cnncli train model=unet` as the README runs it (the U-Net lab on the embedded shapes, ~50 s)."""
    cwd = tmp_path_factory.mktemp("unet")
    result = cnncli("train", "model=unet", cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "train").iterdir()
    (run_dir / "stdout.txt").write_text(result.stdout)
    return run_dir
