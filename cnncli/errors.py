"""Errors a user can fix: reported as one line, never as a traceback."""

import functools
import os
import sys


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


def reports_user_errors(fn):
    """Turn UserError into `error: ...` on stderr and its exit code (Hydra would print a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except BrokenPipeError:  # the reader left (cnncli params model=vgg16 | head): nothing more to write
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail
            sys.exit(1)  # as rich's Console does when its pipe closes

    return wrapper
