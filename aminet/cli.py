"""Command-line helpers shared by the project's entry points."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    pass

__all__ = ["ArgumentParser", "UsageError", "invoked_as"]


class UsageError(Exception):
    """Bad input found after parsing (a folder, a value's range, a file's content): the entry points
    report it as one line, ``error: <message>``, with exit status 2, before anything is written."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with bad arguments reported as one line (``prog: error: ...``), exit status 2.

    The usage text stays available with ``-h``; a wrong flag or value gets only the line that names it.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # "--gpus 2" must not silently mean --gpus-per-trial
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} -h)\n")
        sys.exit(2)


# The console scripts pyproject.toml installs, and the module each runs.
CONSOLE_SCRIPTS = {"aminet-search": "search.run", "aminet-run": "experiments.run"}


def invoked_as(module: str, default: str) -> str:
    """The command the user ran to start ``module`` (``search.run``), for hints that tell them what to run
    next: ``aminet-search``, ``python -m search.run`` or ``python <the path they gave>``; ``default`` when
    the module was called from other Python code (a test, a notebook)."""
    orig = list(getattr(sys, "orig_argv", []) or [])
    if "-m" in orig[1:-1] and orig[orig.index("-m") + 1] == module:
        return f"python -m {module}"
    argv0 = sys.argv[0] if sys.argv else ""
    name = Path(argv0).name
    if CONSOLE_SCRIPTS.get(name) == module:
        return name
    if argv0.endswith(".py") and Path(argv0).with_suffix("").parts[-2:] == tuple(module.split(".")):
        return f"python {argv0}"
    return default
