"""Fault drills: faults injected on purpose, to test what a run or a search does when they happen.

A ``Drill`` is an explicit value handed to the code that runs (``train(on_step=..., on_loss=...)``, the
search's trainable through ``tune.with_parameters``), never read from the environment, so no run can pick
one up by accident. The command lines take them as a hidden, repeatable ``--drill SPEC``:

* ``nan-at-step=S``: the loss of global step S (0-based, over all epochs) becomes NaN;
* ``nan-if=NAME=VALUE:S``: the same, only in search trials whose sampled NAME equals VALUE (as text);
* ``crash-once=MARKER:E``: the trial raises right after reporting epoch E, once (MARKER records it, so the
  retry runs through);
* ``kill-once=MARKER:E:S``: the process SIGKILLs itself once at step S of epoch E (1-based epoch).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["Drill", "DrillError"]


class DrillError(ValueError):
    """A drill spec that cannot be read; the message names it."""


@dataclass(frozen=True)
class Drill:
    nan_at_step: int | None = None
    nan_if: tuple[str, str, int] | None = None  # (parameter name, value as text, step)
    crash_once: tuple[str, int] | None = None  # (marker file, epoch)
    kill_once: tuple[str, int, int] | None = None  # (marker file, epoch, step)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Drill:
        drill = cls()
        for spec in specs:
            kind, sep, value = spec.partition("=")
            try:
                if not sep:
                    raise ValueError
                if kind == "nan-at-step":
                    drill = replace(drill, nan_at_step=int(value))
                elif kind == "nan-if":
                    cond, step = value.rsplit(":", 1)
                    name, eq, wanted = cond.partition("=")
                    if not eq or not name:
                        raise ValueError
                    drill = replace(drill, nan_if=(name, wanted, int(step)))
                elif kind == "crash-once":
                    marker, epoch = value.rsplit(":", 1)
                    drill = replace(drill, crash_once=(marker, int(epoch)))
                elif kind == "kill-once":
                    marker, epoch, step = value.rsplit(":", 2)
                    drill = replace(drill, kill_once=(marker, int(epoch), int(step)))
                else:
                    raise DrillError(
                        f"--drill {spec!r}: unknown drill {kind!r} (nan-at-step, nan-if, crash-once, kill-once)"
                    )
            except ValueError as exc:
                if isinstance(exc, DrillError):
                    raise
                raise DrillError(f"--drill {spec!r}: cannot read it (see aminet/engine/drills.py)") from None
        return drill

    def for_trial(self, params: Mapping[str, Any]) -> Drill:
        """The drill of one search trial: ``nan-if`` becomes ``nan-at-step`` where the trial's values match."""
        if self.nan_if is None:
            return self
        name, wanted, step = self.nan_if
        hit = name in params and str(params[name]) == wanted
        return replace(self, nan_if=None, nan_at_step=step if hit else self.nan_at_step)

    def on_loss(self, iters_per_epoch: int) -> Callable | None:
        """The engine's loss hook ``(epoch, step, loss) -> loss``; None without a NaN drill."""
        if self.nan_at_step is None:
            return None
        at = self.nan_at_step
        return lambda epoch, it, loss: loss * float("nan") if epoch * iters_per_epoch + it == at else loss

    def on_step(self) -> Callable | None:
        """The engine's step hook ``(epoch, step)`` (0-based epoch); None without a kill drill."""
        if self.kill_once is None:
            return None
        marker, epoch, step = self.kill_once

        def kill(e: int, it: int) -> None:
            if e + 1 == epoch and it == step and not os.path.exists(marker):
                Path(marker).write_text(f"killed at epoch {e + 1} step {it}\n")
                os.kill(os.getpid(), signal.SIGKILL)

        return kill

    def after_report(self, epoch: int) -> None:
        """Called by a trial after it reported ``epoch``: the crash drill raises there, once."""
        if self.crash_once is None:
            return
        marker, at = self.crash_once
        if epoch >= at and not os.path.exists(marker):
            Path(marker).write_text(f"crashed after epoch {epoch}\n")
            raise RuntimeError(f"injected crash after epoch {epoch} (--drill crash-once)")
