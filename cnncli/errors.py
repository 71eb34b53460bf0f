"""Errors a user can fix: reported as one line, never as a traceback."""

import functools
import os
import stat
import sys
from pathlib import Path


class UserError(Exception):
    """Bad input (missing file, unreadable checkpoint, ...): one-line message, exit code 1."""

    exit_code = 1


class ConfigError(UserError):
    """A bad config value: one line naming the key, exit code 2."""

    exit_code = 2

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its key placed under a config group, e.g. `activation` -> `model.activation`
        (a key already under it stays as it is)."""
        if self.key.startswith(f"{prefix}."):
            return self
        return ConfigError(f"{prefix}.{self.key}", self.problem)


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of: {', '.join(map(str, allowed))}")


def require(cfg, key: str, example: str) -> None:
    """A mandatory value (`???` in the command's config) that was not given: one line showing its form."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(key, f"missing: give {key}={example}")


# what a path that is not a regular file is, for the line that refuses it
FILE_KINDS = {
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a named pipe (fifo)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISDIR: "a folder",
}


def check_output_file(key: str, path, devices: bool = False) -> None:
    """One line, before anything is computed, for an output path that cannot become a regular file: one
    below an existing file, a folder, or, unless `devices` (a file opened for writing, not renamed into
    place, may be /dev/stdout), a device, fifo or socket, which a rename into place would replace."""
    path = Path(path)
    check_parents(key, path)
    if not path.exists():
        return
    mode = path.stat().st_mode
    kind = next((kind for test, kind in FILE_KINDS.items() if test(mode)), None)
    if kind == "a folder":
        raise UserError(f"{key}={path} is a folder, not a file; give a file name")
    if kind and not devices:
        raise UserError(f"{key}={path} is {kind}, not a regular file; cnncli writes only regular files")


def check_output_folder(key: str, path) -> None:
    """One line, before anything is computed, for an output folder that cannot be one (a file is there, or
    above it)."""
    path = Path(path)
    check_parents(key, path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}={path} is a file, not a folder")


def check_parents(key: str, path: Path) -> None:
    for parent in path.parents:  # the nearest first: the first that exists decides
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{key}={path}: {parent} is a file, not a folder")
            return


def reports_user_errors(fn):
    """Turn UserError into `error: ...` on stderr and its exit code (Hydra would print a traceback); a
    mandatory value (`???`) read before it was given is a ConfigError naming its key."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from omegaconf.errors import MissingMandatoryValue  # here: `cnncli --version` loads no omegaconf

        try:
            return fn(*args, **kwargs)
        except MissingMandatoryValue as e:
            error = ConfigError(e.full_key, f"missing: give {e.full_key}=VALUE")
        except UserError as e:
            error = e
        except BrokenPipeError:  # the reader left (cnncli params model=vgg16 | head): nothing more to write
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail
            sys.exit(1)  # as rich's Console does when its pipe closes
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)

    return wrapper
