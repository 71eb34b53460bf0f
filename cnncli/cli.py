"""The `cnncli` command: `cnncli <subcommand> [hydra overrides...]`.

Each subcommand is one module under cnncli/commands/ with a Hydra `main`; only that module is imported,
and it imports torch and the rest inside the functions that need them, so `cnncli --help`, `cnncli train
--help` and `--cfg job` answer without loading torch (tests/test_imports.py). The command line Hydra
parses is written here, once: the program (a module's PROGRAM, else `cnncli <subcommand>`) and the
overrides, which a module's `command_line(args)` may rewrite first (train: resume=; viz: the mode word).
"""

import atexit
import importlib
import importlib.util
import os
import sys
import threading

from cnncli import __version__
from cnncli.errors import reports_user_errors

SUBCOMMANDS = {
    "train": "train a classifier (cnncli train model=lenet5 data=digits optimizer.lr=0.01)",
    "eval": "test a checkpoint: loss, top-1/top-5, per-class metrics, confusion matrix (cnncli eval ckpt_path=PATH)",
    "params": "print a model's per-layer parameter and MAC table (cnncli params model=vgg16)",
    "bench": "images/s of models on this machine beside the papers' figures (cnncli bench model=convnext_tiny,swin_t)",
    "lr-find": "the learning-rate range test: loss against rate, a suggested rate (cnncli lr-find model=resnet20)",
    "predict": "the top-k classes of image files (cnncli predict ckpt_path=PATH inputs=[img.png,folder/])",
    "data": "show a data set's training images after augmentation (cnncli data show augmentation=strong)",
    "export": "export to ONNX, TorchScript or torch.export, verified (cnncli export ckpt_path=PATH format=onnx)",
    "leaderboard": "one table of every run of a sweep or outputs folder (cnncli leaderboard outputs/multirun/DATE)",
    "tune": "hyperparameter search with Optuna: SQLite study, pruning, best.yaml (cnncli tune hparams_search=lr_wd)",
    "viz": "feature maps, filters, CAM/Grad-CAM, occlusion of a trained model (cnncli viz cam ckpt_path=P image=F)",
    "compare": "overlay the val curves of several runs in one PNG (cnncli compare RUN_DIR RUN_DIR ...)",
}

# the package a subcommand needs beyond the core: installed with the extra of the same name (pyproject.toml)
EXTRAS = {"tune": "optuna", "viz": "captum"}

USAGE = """usage: cnncli <subcommand> [overrides...] [--help] [--cfg job] [--info] [-m]

Train, evaluate, inspect and export convolutional image classifiers. Every option is a Hydra override:
group=option picks a config (model=alexnet), key=value sets a value (optimizer.lr=0.01).

subcommands:
{rows}

`cnncli <subcommand> --help` lists that subcommand's config groups and options.
"""


def console() -> None:
    """The `cnncli` command (pyproject.toml [project.scripts], python -m cnncli): main(), then exit as
    Python would, without its finalization. Once torch is imported, clearing every module and object at
    exit takes about a second, longer than most commands; the exit itself stays as Python's: threads are
    joined and atexit handlers run (logging closes its files, multiprocessing ends its workers), then
    stdout and stderr are flushed. An uncaught exception exits the usual way, with its traceback."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):  # sys.exit("message"), as Python reports it
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what Python's own exit does first: wait for the threads that are not daemons
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (cnncli params | head): nothing more can be written
            pass
    os._exit(code or 0)


def main() -> None:
    args = sys.argv[1:]
    width = max(map(len, SUBCOMMANDS))
    usage = USAGE.format(rows="\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()))
    if not args:  # a usage error, as argparse reports one: the usage on stderr, exit 2
        print(usage, file=sys.stderr)
        print("error: no subcommand given", file=sys.stderr)
        sys.exit(2)
    if args[0] in ("-h", "--help"):
        print(usage)
        return
    if args[0] in ("-V", "--version"):
        print(f"cnncli {__version__}")
        return
    run(args[0], args[1:])


# Hydra's flags: the ones that take a value, and --info's optional one
FLAGS_WITH_VALUE = ("-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd",
                    "--config-dir", "--experimental-rerun", "-sc", "--shell-completion")  # fmt: skip
INFO_VALUES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def flags_last(args: list[str]) -> list[str]:
    """Hydra's flags (with their values) after the overrides: Hydra's parser takes the overrides as one list,
    so `cnncli export ckpt_path=X -m format=onnx,torchscript` would be refused for its arguments after -m (and
    a flag before them whose value is optional, --info, would take the first override as its value)."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        arg, value = args[i], args[i + 1 : i + 2]
        takes_value = arg in FLAGS_WITH_VALUE or (arg == "--info" and value and value[0] in INFO_VALUES)
        if arg.startswith("-"):
            flags += [arg, *value] if takes_value else [arg]
            i += 2 if takes_value else 1
        else:
            overrides.append(arg)
            i += 1
    return [*overrides, *flags]


def run(name: str, args: list[str]) -> None:
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}; choose from: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        sys.exit(2)
    # A model or data module of the user's own (`_target_: mynets.Net`) may live in the working directory;
    # appended, not prepended, so a local file can never shadow an installed package.
    sys.path.append(os.getcwd())
    package = EXTRAS.get(name)
    if package and importlib.util.find_spec(package) is None:  # found without importing it
        print(f'error: cnncli {name} needs {package}: pip install "cnncli[{name}]"', file=sys.stderr)
        sys.exit(1)
    command = importlib.import_module(f"cnncli.commands.{name.replace('-', '_')}")
    command_line = getattr(command, "command_line", None)
    # after command_line: its mode word (`viz cam`, `data show`) comes first as the user typed it
    overrides = flags_last(reports_user_errors(command_line)(args) if command_line else args)
    sys.argv = [getattr(command, "PROGRAM", f"cnncli {name}"), *overrides]
    command.main()
