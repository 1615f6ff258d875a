"""Command-line helpers shared by the project's entry points."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    pass

__all__ = ["ArgumentParser", "UsageError"]


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
