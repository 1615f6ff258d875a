"""Searched values -> dotted config overrides (pure Python: no Ray, no Optuna).

A search space samples a small vocabulary of names; this module turns one sample into overrides of the
project config, so the trainable, the search driver, the MLflow logs and the ``--retrain-best`` runs
all agree on what a sample means.

Names (all optional; anything absent keeps the base config's value):

``mmd_intra``, ``mmd_inter``  loss.mmd_intra_weight / loss.mmd_inter_weight (IMDAL / IDAL)
``bandwidths``               a key of ``BANDWIDTH_SETS`` -> loss.mmd_multipliers
``upper_body_ratio``         model.upper_body_ratio (the top share of the image in the upper-body branch)
``lr``                       optim.lr (the peak)
``warmup_frac``              optim.warmup_share (a share of train.epochs)
``schedule``                 optim.schedule: "step" or "cosine"
``milestone1_frac``, ``milestone2_frac``
                             optim.milestone_shares (step schedule), shares of training
``cfg.<section>.<field>``    any config field, verbatim (e.g. ``cfg.loss.triplet_weight``)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aminet.config import Config

__all__ = ["OPTUNA_TRIAL", "BANDWIDTH_SETS", "to_overrides", "apply_params", "base_value", "target_field", "is_known"]

# Added to a trial's config by the searcher: the Optuna trial number (maps Ray trials, MLflow runs and
# Optuna's plots onto each other); not a sampled value, so ``to_overrides`` ignores it.
OPTUNA_TRIAL = "optuna_trial"

# Multipliers of the median pairwise distance (the AMK-MMD bandwidths), by name.
BANDWIDTH_SETS: dict[str, list[float]] = {
    "narrow3": [0.5, 1.0, 2.0],
    "paper5": [0.25, 0.5, 1.0, 2.0, 4.0],
    "wide7": [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
    "decade3": [0.1, 1.0, 10.0],
}

_DIRECT = {
    "mmd_intra": "loss.mmd_intra_weight",
    "mmd_inter": "loss.mmd_inter_weight",
    "upper_body_ratio": "model.upper_body_ratio",
    "lr": "optim.lr",
    "schedule": "optim.schedule",
}
_KNOWN = set(_DIRECT) | {"bandwidths", "warmup_frac", "milestone1_frac", "milestone2_frac"}


def to_overrides(params: Mapping[str, Any], base: Config) -> dict[str, Any]:
    """Dotted overrides for ``base`` from one sample. Unknown names raise ``KeyError`` naming them."""
    params = {k: v for k, v in params.items() if k != OPTUNA_TRIAL}
    unknown = [k for k in params if k not in _KNOWN and not k.startswith("cfg.")]
    if unknown:
        raise KeyError(f"search parameters not understood: {unknown}; known: {sorted(_KNOWN)} or cfg.<field>")
    out: dict[str, Any] = {}
    for name, key in _DIRECT.items():
        if name in params:
            out[key] = params[name]
    if "bandwidths" in params:
        name = params["bandwidths"]
        if name not in BANDWIDTH_SETS:
            raise KeyError(f"bandwidths={name!r}: choose one of {sorted(BANDWIDTH_SETS)}")
        out["loss.mmd_multipliers"] = list(BANDWIDTH_SETS[name])
    warmup = base.optim.warmup_share
    if "warmup_frac" in params:
        warmup = float(params["warmup_frac"])
        out["optim.warmup_share"] = warmup
    if "milestone1_frac" in params or "milestone2_frac" in params:
        stones: list[float] = []
        for frac in (params.get("milestone1_frac"), params.get("milestone2_frac")):
            if frac is None:
                continue
            m = max(warmup, float(frac))  # a milestone inside the warm-up acts at its end
            if not stones or m > stones[-1]:
                stones.append(m)
        out["optim.milestone_shares"] = stones
    elif "warmup_frac" in params:  # keep the base milestones valid after a longer warm-up
        out["optim.milestone_shares"] = [m for m in base.optim.milestone_shares if m >= warmup]
    for name, value in params.items():
        if name.startswith("cfg."):
            out[name[4:]] = value
    return out


def apply_params(base: Config, params: Mapping[str, Any]) -> Config:
    """``base`` with one sample applied, validated (``ConfigError`` names a bad field)."""
    return base.replace(to_overrides(params, base))


def is_known(name: str) -> bool:
    """Whether ``name`` is a sample name this module understands (a fixed name or ``cfg.<field>``)."""
    return name in _KNOWN or name.startswith("cfg.")


def target_field(name: str) -> str | None:
    """The config field a single-field sample name sets (``lr`` -> ``optim.lr``), else None."""
    if name.startswith("cfg."):
        return name[4:]
    return _DIRECT.get(name)


def base_value(name: str, base: Config) -> Any:
    """The value of sample ``name`` that reproduces ``base`` (the inverse of ``to_overrides``), or None when
    the base has none (a bandwidth set not in ``BANDWIDTH_SETS``, a second milestone the base lacks)."""
    o = base.optim
    if name == "bandwidths":
        return next((k for k, v in BANDWIDTH_SETS.items() if list(v) == list(base.loss.mmd_multipliers)), None)
    if name == "warmup_frac":
        return o.warmup_share
    if name in ("milestone1_frac", "milestone2_frac"):
        i = 0 if name == "milestone1_frac" else 1
        return o.milestone_shares[i] if len(o.milestone_shares) > i else None
    field = target_field(name)
    if field is None:
        raise KeyError(f"search parameter {name!r} not understood")
    flat = base.flat()
    if field not in flat:
        raise KeyError(f"search parameter {name!r}: no config field {field!r}")
    return flat[field]
