"""The search's context in one place: the constants of a search's folder, ``Settings`` (how it runs) and
``Plan`` (what it is: space, base config, budget, data roots, settings, saved state), the one typed, frozen
value every step of the search takes. Made by ``search.plan.plan_search`` from the command line (the
namespace never leaves that module) and completed by ``preflight``; the modules that record, run and choose
(``lineage``, ``cluster``, ``outcome``, ``registry``) import it from here, not from the command-line module."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aminet.config import Config
    from aminet.engine.drills import Drill
    from search.spaces import Budget, SearchSpace

__all__ = ["Plan", "Settings", "SearchState", "STATE_FILE", "DEADLINE_FILE", "METRIC", "DEFAULT_TRANSFER"]

STATE_FILE = "aminet_search.json"  # the search's saved state, in its experiment folder
DEADLINE_FILE = "deadline"  # the Unix time after which no new trial starts (--time-budget)
METRIC = "score"  # what trials report and Optuna maximises: (R1 + mAP) / 2 on validation identities
DEFAULT_TRANSFER = "prior"  # docs/search-study.md, "Transfer": the one method never behind no transfer


@dataclass
class SearchState:
    """The search's state file (``STATE_FILE`` in its folder), typed: what a resume and a finished search read
    back. Written whole or not at all (``write``); a field left None is not written, and an older file's
    missing field reads as its default (its unknown keys, e.g. the ``roots`` and ``reseed_points`` earlier
    versions wrote and nothing read, are dropped)."""

    space: str  # the space's name: a resume must name the same
    parent_run_id: str = ""  # the MLflow parent run a resume reopens
    mlflow_uri: str = ""
    experiment_id: str = ""
    study: str = ""  # the Optuna storage URL
    created: float = 0.0  # Unix time
    stage: str = "search"  # search -> reseed -> finished
    args: dict[str, Any] = field(default_factory=dict)  # the identity flags, normalised (plan.identity)
    base_config: str | None = None  # YAML: a resume refuses another base config
    space_params: dict[str, str] | None = None  # the space's signature: a resume refuses another space
    fingerprint: str | None = None  # the data's: a resume refuses other data
    budget: dict[str, Any] | None = None  # a resume refuses another budget
    summary: str | None = None  # a finished search's summary, printed again when it is run again
    search_seconds: float | None = None  # --time-budget: the searching time of earlier runs
    clock_closed: float | None = None  # --time-budget: the start of the last run whose time was charged

    @classmethod
    def read(cls, path: Path) -> SearchState:
        """The state file at ``path``; one line naming it if it is not a search's state file."""
        try:
            raw = json.loads(Path(path).read_text())
            if not isinstance(raw, dict):
                raise ValueError(f"a JSON {type(raw).__name__}, not an object")
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a search state file ({' '.join(str(exc).split())})") from None

    def write(self, path: Path) -> None:
        """Write the file whole or not at all (a kill mid-write leaves the previous one)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)


@dataclass(frozen=True)
class Settings:
    """How the search runs, resolved once from the flags (a resumed search's from its saved identity)."""

    sampler: str  # tpe, gp, cmaes, random
    scheduler: str  # asha, none
    seed: int  # the sampler's
    top_k: int  # finished trials re-seeded
    reseeds: int  # extra seeds per re-seeded trial
    time_budget: float | None  # seconds of searching after which no trial starts
    max_failures: int  # retries of a crashed trial
    verbose: int  # Ray Tune's console verbosity
    address: str | None  # the Ray cluster to join (None: a local Ray)
    storage_flag: str | None  # --storage as given (the resume hint repeats it)
    space_flag: str  # --space as given: a shipped name or a file's path (the resume hint repeats it)
    mlflow_uri: str | None
    mlflow_experiment: str
    gpus_per_trial: float | None
    cpus_per_trial: float | None
    max_concurrent: int | None
    dashboard: bool
    final_eval: bool
    register: bool
    retrain_best: bool
    retrain_seeds: tuple[int, ...]
    retrain_trials: tuple[int, ...]
    identity: dict[str, Any]  # the identity flags, normalised, as the state file keeps them


@dataclass(frozen=True)
class Plan:
    """The search context: one resolved, typed, frozen value made by ``plan_search`` (and completed by
    ``preflight`` with the data's fingerprint); every step of the search takes it and its own inputs. The
    command line's namespace never leaves this module."""

    space: SearchSpace
    base: Config
    budget: Budget
    quick: bool
    name: str
    storage: str
    experiment_path: str
    state_dir: Path
    roots: dict[str, Path | None]  # every registered benchmark's data folder (None: not evaluated on it)
    settings: Settings
    saved_state: SearchState | None = None  # the saved search this one resumes (None: a new search)
    fingerprint: str | None = None  # of the search's data folder, set by preflight
    replay: Path | None = None  # --replay: the table folder that answers every trial (search/replay.py)
    replay_time_scale: float = 0.0
    replay_model: str = "nearest"  # --replay-model: nearest (the table's row) or forest (its surrogate)
    drill: Drill | None = None  # faults injected on purpose (tests); None in normal use
    # Set once, where Ray is started (search/run.py, from search.cluster.trial_resources): what each trial
    # holds ({"cpu": n, "gpu": g}) and how many run at once. None until then.
    resources: dict[str, float] | None = None
    concurrent: int | None = None

    @property
    def resume(self) -> bool:
        """This search continues a saved one (its settings and base config are the saved search's)."""
        return self.saved_state is not None

    @property
    def backend(self):
        """What answers the trials (``search/backends.py``): the replay of ``--replay``'s table, or training."""
        from search.backends import REPLAY, TRAINING

        return REPLAY if self.replay is not None else TRAINING

    @property
    def given_roots(self) -> dict[str, Path]:
        """The benchmarks the final evaluation reads, name -> folder (registry order)."""
        return {name: root for name, root in self.roots.items() if root is not None}

    @property
    def synthetic_data(self) -> bool:
        """The training data is a synthetic benchmark (the default one or one generated into a folder)."""
        from aminet.data.synthetic import is_synthetic

        return is_synthetic(self.base.data.root)
