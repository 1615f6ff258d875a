"""Named search spaces: Optuna define-by-run functions, warm-start points and budgets.

Each space searches what the paper leaves open or tunes by hand: the IMDAL / IDAL weights of the
AMK-MMD loss, the set of kernel bandwidth multipliers, the upper-body proportion of HMG-DBNet and the
learning-rate schedule (peak, warm-up length, step milestones or a cosine decay). Sampled names are
turned into config overrides by ``trainables.params``; the base config is the paper's setting of the
benchmark (``experiments/<dataset>.yaml``) with ``data.purpose=search`` (validation identities held
out; the test gallery is never seen during a search).

``quick=True`` swaps in a CPU-sized base (``experiments/smoke.yaml``: ResNet-18 at 64x32, Adam) and a
budget that runs a real search on the synthetic benchmark in minutes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aminet.config import Config, _set_dotted, apply_overrides, read_yaml_tree
from trainables.params import BANDWIDTH_SETS

__all__ = ["SearchSpace", "Budget", "DefineByRun", "SPACES", "get_space", "load_base"]

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@dataclass(frozen=True)
class Budget:
    epochs: int
    eval_every: int
    grace_period: int  # epochs before ASHA may stop a trial (>= a quarter of training)
    num_samples: int
    reduction_factor: int = 3


@dataclass(frozen=True)
class SearchSpace:
    name: str
    dataset: str
    base_file: str  # under experiments/
    quick_file: str
    budget: Budget
    quick_budget: Budget
    # The paper's settings for this benchmark first, then other known-good points.
    anchors: tuple[dict[str, Any], ...]
    quick_overrides: dict[str, Any] = field(default_factory=dict)

    def base(self, quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """The search's base config: the benchmark's YAML, purpose=search, the budget, then ``overrides``."""
        b = self.quick_budget if quick else self.budget
        raw = load_base(EXPERIMENTS / (self.quick_file if quick else self.base_file))
        fixed = {"data.dataset": self.dataset, "data.purpose": "search", "train.epochs": b.epochs,
                 "train.eval_every": b.eval_every, **(self.quick_overrides if quick else {})}
        for key, value in fixed.items():
            _set_dotted(raw, key, value)
        apply_overrides(raw, list(overrides))
        return Config.from_dict(raw)

    def define_by_run(self, base: Config) -> "DefineByRun":
        """The Optuna define-by-run function (suggest calls only; no work)."""
        return DefineByRun(lr=base.optim.lr)

    def warm_start(self, base: Config) -> list[dict[str, Any]]:
        """The anchors with the schedule of ``base`` (its lr, warm-up and milestones as shares)."""
        o, epochs = base.optim, base.train.epochs
        sched: dict[str, Any] = {"lr": o.lr, "warmup_frac": o.warmup_share, "schedule": o.schedule}
        if o.schedule == "step" and o.milestone_shares:
            s = o.milestone_shares
            sched["milestone1_frac"] = s[0]
            sched["milestone2_frac"] = s[1] if len(s) > 1 else (epochs - 1) / epochs
        return [{**copy.deepcopy(a), **sched} for a in self.anchors]

    def budget_for(self, quick: bool) -> Budget:
        return self.quick_budget if quick else self.budget


@dataclass(frozen=True)
class DefineByRun:
    """The shared space as a picklable callable (Ray checkpoints the searcher with plain pickle)."""

    lr: float  # the base config's peak lr; searched over [lr / 4, 4 lr] on a log scale

    def __call__(self, trial) -> None:
        trial.suggest_float("mmd_intra", 0.0, 1.0)
        trial.suggest_float("mmd_inter", 0.0, 1.0)
        trial.suggest_categorical("bandwidths", list(BANDWIDTH_SETS))
        trial.suggest_float("upper_body_ratio", 0.3, 0.8, step=0.05)
        trial.suggest_float("lr", self.lr / 4, self.lr * 4, log=True)
        trial.suggest_float("warmup_frac", 0.0, 0.25)
        if trial.suggest_categorical("schedule", ["step", "cosine"]) == "step":
            trial.suggest_float("milestone1_frac", 0.2, 0.7)
            trial.suggest_float("milestone2_frac", 0.55, 0.95)


def load_base(path: Path) -> dict[str, Any]:
    """An experiments YAML as a plain dict, ``extends`` resolved, runner-only keys dropped."""
    data = read_yaml_tree(path)
    for key in ("name", "presets", "sweep"):
        data.pop(key, None)
    return data


_SYSU_PAPER = {"mmd_intra": 0.4, "mmd_inter": 0.6, "bandwidths": "paper5", "upper_body_ratio": 0.5}
_REGDB_PAPER = {"mmd_intra": 0.2, "mmd_inter": 0.8, "bandwidths": "paper5", "upper_body_ratio": 0.6}
# Quick (CPU) budget: 6 epochs of ~35 steps, validation every 2, ASHA from epoch 2 (a third). The base
# schedule keeps the peak lr for most of the short run (one warm-up epoch, x0.1 at 4 and again at 5).
_QUICK = {"optim.warmup_share": 1 / 6, "optim.milestone_shares": [4 / 6, 5 / 6], "eval.trials": 3}

SPACES: dict[str, SearchSpace] = {
    "sysu": SearchSpace(
        name="sysu", dataset="sysu", base_file="sysu.yaml", quick_file="smoke.yaml",
        budget=Budget(epochs=80, eval_every=5, grace_period=20, num_samples=32),
        quick_budget=Budget(epochs=6, eval_every=2, grace_period=2, num_samples=6),
        anchors=(_SYSU_PAPER, _REGDB_PAPER), quick_overrides=_QUICK),
    "regdb": SearchSpace(
        name="regdb", dataset="regdb", base_file="regdb.yaml", quick_file="smoke.yaml",
        budget=Budget(epochs=80, eval_every=5, grace_period=20, num_samples=32),
        quick_budget=Budget(epochs=6, eval_every=2, grace_period=2, num_samples=6),
        anchors=(_REGDB_PAPER, _SYSU_PAPER), quick_overrides=_QUICK),
}


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise KeyError(f"--space {name!r}: choose one of {sorted(SPACES)}")
    return SPACES[name]
