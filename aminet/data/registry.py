"""The benchmarks a run can train and be evaluated on, by name: one ``Benchmark`` entry per benchmark, each
registered by its own file (``aminet/data/sysu.py``, ``regdb.py``, ``llcm.py``: reader, splits and entry
together), as fast-reid's ``DATASET_REGISTRY`` keeps one file per dataset.

Everything that used to branch on a benchmark's name looks its entry up instead: the config (which names
exist, which evaluation settings and IMDAL choices are valid), the builders (training and evaluation sets),
the protocol (the ranking rules), the preflight (the layout's own checks), the image cache (which folders
hold images), the search's plan (one data root per benchmark), the final evaluation and the champion.

Adding a benchmark: write its file (a reader for the official layout, ``train_set`` and ``eval_set``, an
entry passed to ``register``), add its name to ``BUILTIN``, its config fields (the typed config lists its
fields; docs/design.md, "Benchmarks"), ``experiments/<name>.yaml``, ``search/spaces/<name>.yaml``, its
synthetic layout (``aminet.data.synthetic``) and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aminet.config import Config, DataConfig
    from aminet.data.sets import EvalSet, TrainSet

__all__ = ["Benchmark", "register", "get", "names", "entries", "BUILTIN", "detect", "layout"]

# The modules that register the shipped benchmarks, imported on the first lookup (each imports this module).
BUILTIN = ("aminet.data.sysu", "aminet.data.regdb", "aminet.data.llcm")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: how its layout is read, split and evaluated, under one name."""

    name: str  # "sysu": the config's data.dataset, a space's dataset, --data-root NAME=PATH
    title: str  # "SYSU-MM01": what messages and tables call it
    settings: tuple[str, ...]  # the test protocol's settings (modes or directions), in the protocol's order
    settings_field: str  # the EvalConfig field listing the settings a run evaluates ("sysu_modes")
    test_trials: tuple[int, ...]  # the test protocol's trials (gallery draws, or RegDB's ten splits)
    model_per_trial: bool  # each trial has its own training split (RegDB): the protocol trains one model each
    cameras: bool  # several cameras per modality: IMDAL "camera" is possible, and "auto" chooses it
    rank_rules: Mapping[str, bool]  # the keyword rules of aminet.evaluation.metrics.rank_metrics
    image_folders: Callable[[Path], list[Path]]  # the top folders of a root that hold its images ([]: not this layout)
    train_set: Callable[[Path, DataConfig], TrainSet]  # the training identities of data.purpose
    # (root, purpose, settings, trials, data config) -> the validation (search) or test (final) probes
    eval_set: Callable[[Path, str, Sequence[str], Sequence[int], DataConfig], EvalSet]
    config_trials: Callable[[Config], list[int]]  # the trials a run of this config evaluates
    protocol_parts: Callable[[Config], list[str]]  # what of the config defines its validation score
    check_data: Callable[[Path], None] = lambda root: None  # the layout's checks beyond its splits
    check_test: Callable[[Path, Sequence[str]], None] = lambda root, settings: None  # read the test protocol

    def settings_of(self, cfg: Config) -> list[str]:
        """The settings a run of ``cfg`` evaluates (its ``eval.<settings_field>``)."""
        return list(getattr(cfg.eval, self.settings_field))

    def run_eval_set(self, root: Path, cfg: Config, trials: Sequence[int] | None = None) -> EvalSet:
        """The evaluation set of a run of ``cfg``: validation probes (search) or test probes (final)."""
        t = self.config_trials(cfg) if trials is None else list(trials)
        return self.eval_set(Path(root), cfg.data.purpose, self.settings_of(cfg), t, cfg.data)

    @property
    def config_file(self) -> str:
        """The fixed-config run of this benchmark: ``experiments/<name>.yaml``."""
        return f"experiments/{self.name}.yaml"

    @property
    def space_name(self) -> str:
        """The shipped search space of this benchmark: ``search/spaces/<name>.yaml``."""
        return self.name


_REGISTRY: dict[str, Benchmark] = {}


def register(entry: Benchmark) -> Benchmark:
    """Add ``entry`` under its name; a second entry of the same name is an error."""
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"benchmark {entry.name!r} is registered twice")
    unknown = set(entry.rank_rules) - {"remove_cam2_for_cam3", "remove_same_camera", "dedup_cmc"}
    if unknown:
        raise ValueError(f"benchmark {entry.name!r}: unknown rank rule(s) {sorted(unknown)}")
    _REGISTRY[entry.name] = entry
    return entry


def _load() -> None:
    for module in BUILTIN:
        importlib.import_module(module)


def _order(name: str) -> tuple[int, str]:
    shipped = [m.rsplit(".", 1)[1] for m in BUILTIN]
    return (shipped.index(name), "") if name in shipped else (len(shipped), name)


def names() -> tuple[str, ...]:
    """The registered benchmarks' names: the shipped ones in ``BUILTIN`` order, then others by name."""
    _load()
    return tuple(sorted(_REGISTRY, key=_order))


def entries() -> tuple[Benchmark, ...]:
    return tuple(_REGISTRY[n] for n in names())


def get(name: Any) -> Benchmark:
    """The entry of ``name``; an unknown name raises ``ValueError`` listing the registered ones."""
    _load()
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"benchmark {name!r}: choose one of {', '.join(names())}")
    return entry


def layout(root: str | Path) -> tuple[Benchmark, list[Path]] | None:
    """The benchmark whose layout ``root`` holds and the folders of it that hold its images, or None."""
    root = Path(root)
    for entry in entries():
        folders = entry.image_folders(root)
        if folders:
            return entry, folders
    return None


def detect(root: str | Path) -> Benchmark | None:
    """The benchmark whose layout ``root`` holds (its image folders are there), or None."""
    found = layout(root)
    return found[0] if found is not None else None
