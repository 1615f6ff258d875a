"""Searched values -> config overrides (pure Python: no Ray, no Optuna).

A search parameter is named by the config field it sets, as a dotted path (``loss.mmd_intra_weight``,
``optim.lr``, ``data.instances``): the space file, Optuna's study, Ray's trial config, the trial's MLflow
run and the tabulated benchmark all use that one name, and the value is the field's value. Two fields are
lists that a sampler cannot propose whole; only they are translated:

``loss.mmd_multipliers``     searched as the name of a set of ``BANDWIDTH_SETS`` (Optuna's categorical choices
                             must be scalars); the config gets that set's multipliers
``optim.milestone_shares.0``, ``optim.milestone_shares.1``
                             the step schedule's milestones, searched one by one (shares of train.epochs); the
                             config gets the list, a milestone inside the warm-up moved to its end, repeats dropped

A searched ``optim.warmup_share`` without searched milestones keeps the base milestones that follow it.
``LABELS`` holds the short words a run's name shows (``intra 0.40 inter 0.60 bw paper5 ...``): display only.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from aminet.config import Config

__all__ = [
    "OPTUNA_TRIAL",
    "SEED",
    "BANDWIDTHS",
    "BANDWIDTH_SETS",
    "MILESTONES",
    "LABELS",
    "to_overrides",
    "apply_params",
    "base_value",
    "target_field",
    "is_known",
    "fields",
]

# Added to a trial's config by the searcher: the Optuna trial number (maps Ray trials, MLflow runs and
# Optuna's plots onto each other); not a sampled value, so ``to_overrides`` ignores it.
OPTUNA_TRIAL = "optuna_trial"
SEED = "train.seed"  # what a re-seed trial sets

BANDWIDTHS = "loss.mmd_multipliers"
# Multipliers of the median pairwise distance (the AMK-MMD bandwidths), by name.
BANDWIDTH_SETS: dict[str, list[float]] = {
    "narrow3": [0.5, 1.0, 2.0],
    "paper5": [0.25, 0.5, 1.0, 2.0, 4.0],
    "wide7": [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
    "decade3": [0.1, 1.0, 10.0],
}
MILESTONES = ("optim.milestone_shares.0", "optim.milestone_shares.1")

LABELS = {
    "loss.mmd_intra_weight": "intra",
    "loss.mmd_inter_weight": "inter",
    BANDWIDTHS: "bw",
    "model.upper_body_ratio": "ubp",
    "optim.lr": "lr",
    "optim.schedule": "",
}


@cache
def fields() -> frozenset[str]:
    """Every config field's dotted path."""
    return frozenset(Config().flat())


def is_known(name: str) -> bool:
    """Whether ``name`` can be searched: a config field or one item of the milestones."""
    return name in fields() or name in MILESTONES


def to_overrides(params: Mapping[str, Any], base: Config) -> dict[str, Any]:
    """Dotted overrides for ``base`` from one sample. Unknown names raise ``KeyError`` naming them."""
    params = {k: v for k, v in params.items() if k != OPTUNA_TRIAL}
    unknown = [k for k in params if not is_known(k)]
    if unknown:
        hint = " (the cfg. prefix is gone: name the field itself)" if any(k.startswith("cfg.") for k in unknown) else ""
        raise KeyError(f"search parameters not understood: {unknown}: name a config field (optim.lr, ...){hint}")
    out: dict[str, Any] = {k: v for k, v in params.items() if k not in MILESTONES}
    if isinstance(out.get(BANDWIDTHS), str):
        name = out[BANDWIDTHS]
        if name not in BANDWIDTH_SETS:
            raise KeyError(f"{BANDWIDTHS}={name!r}: choose one of {sorted(BANDWIDTH_SETS)}")
        out[BANDWIDTHS] = list(BANDWIDTH_SETS[name])
    warmup = float(out.get("optim.warmup_share", base.optim.warmup_share))
    if any(m in params for m in MILESTONES):
        stones: list[float] = []
        for m in MILESTONES:
            if params.get(m) is None:
                continue
            share = max(warmup, float(params[m]))  # a milestone inside the warm-up acts at its end
            if not stones or share > stones[-1]:
                stones.append(share)
        out["optim.milestone_shares"] = stones
    elif "optim.warmup_share" in params and "optim.milestone_shares" not in params:
        out["optim.milestone_shares"] = [m for m in base.optim.milestone_shares if m >= warmup]
    return out


def apply_params(base: Config, params: Mapping[str, Any]) -> Config:
    """``base`` with one sample applied, validated (``ConfigError`` names a bad field)."""
    return base.replace(to_overrides(params, base))


def target_field(name: str) -> str | None:
    """The config field that ``name`` sets verbatim (itself), or None for a translated name."""
    return name if name in fields() and name != BANDWIDTHS else None


def base_value(name: str, base: Config) -> Any:
    """The value of ``name`` that reproduces ``base`` (the inverse of ``to_overrides``), or None when the base
    has none (a bandwidth set not in ``BANDWIDTH_SETS``, a second milestone the base lacks)."""
    if name == BANDWIDTHS:
        return next((k for k, v in BANDWIDTH_SETS.items() if list(v) == list(base.loss.mmd_multipliers)), None)
    if name in MILESTONES:
        i = MILESTONES.index(name)
        stones = base.optim.milestone_shares
        return stones[i] if len(stones) > i else None
    if name not in fields():
        raise KeyError(f"search parameter {name!r}: not a config field")
    return base.flat()[name]
