"""Transfer from earlier searches: start a search from what earlier ones found on a related task.

    python search/run.py --space regdb --transfer-from sysu-20261207-120000           # an earlier search's name
    python search/run.py --space regdb --transfer-from benchmarks/tables/sysu-quick   # a tabulated benchmark
    python search/run.py --space sysu --transfer-from runs/optuna.db --transfer-method box

A **source** is an earlier search (its name under ``--storage``, its folder, or its ``optuna.db``: the
trials that trained to the full budget, with their validation score) or a table (``search/blackbox.py``:
every configuration's final validation score, averaged over its seeds). Only the ranking within a source is
used, so sources on other datasets or budgets (whose scores are on other scales) mix freely: each source's
**top configurations** are its best tenth, at least 3 (a quantile, as in Salinas et al., ICML 2020).

Methods (``--transfer-method``), each a published one:

* ``box``: the search space shrinks to the bounding box of the sources' top configurations (Perrone et al.,
  NeurIPS 2019): each numeric parameter to the range its top values span, widened by 10 % of that span on
  each side and kept inside the original range; each categorical parameter to the choices the top
  configurations took. A parameter no top configuration sets (a conditional one) keeps its range.
* ``warm``: the top configurations (best first, at most 3 per source) are tried first, after the space's own
  warm-start points: the earlier trials a zero-shot transfer would run (Wistuba et al., 2015; Syne Tune's
  ``ZeroShotTransfer``).
* ``prior``: the top configurations become the search's prior (``search/priors.py``; with ``--sampler pibo``):
  each numeric parameter's median of the top values as the centre, a strength from their spread (sd of the top
  values as a share of the range, through the same ``0.5 * (1 - strength)`` rule), each categorical's most
  frequent top choice with its frequency as the weight. The earlier trials then weigh on TPE's proposals with
  a weight that decays with the number of new trials (piBO's rule): earlier observations, down-weighted.
* ``box+warm``: both.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["TransferError", "Source", "load_source", "top_configs", "apply", "METHODS"]

METHODS = ("box", "warm", "prior", "box+warm")


class TransferError(ValueError):
    """A ``--transfer-from`` source that cannot be used (one line naming it and why)."""


@dataclass(frozen=True)
class Source:
    name: str
    configs: tuple[tuple[dict[str, Any], float], ...]  # (sampled values, validation score), any scale


def load_source(spec: str, storage: str | None = None) -> Source:
    """A source from ``spec``: a table folder (``meta.json``), an ``optuna.db`` file, a search folder holding one,
    or a search name under ``storage``."""
    path = Path(spec).expanduser()
    candidates = [path]
    if storage and not path.is_absolute() and "/" not in spec:
        candidates.append(Path(storage) / spec)
    for p in candidates:
        if (p / "meta.json").is_file():
            return _from_table(p)
        if p.is_file() and p.suffix == ".db":
            return _from_study(p)
        if (p / "optuna.db").is_file():
            return _from_study(p / "optuna.db")
    where = f" (nor a search under {storage})" if storage else ""
    raise TransferError(
        f"--transfer-from {spec}: not a table folder (meta.json), an optuna.db or a search folder{where}"
    )


def _from_table(folder: Path) -> Source:
    from search.blackbox import Table, TableError

    try:
        table = Table.load(folder)
    except TableError as exc:
        raise TransferError(f"--transfer-from {folder}: {exc}") from None
    configs = []
    for c in table.config_ids():
        scores = [table.row(c, s).final for s in table.seeds(c)]
        configs.append((table.params(c), statistics.fmean(scores)))
    return Source(str(folder), tuple(configs))


def _from_study(db: Path) -> Source:
    import optuna
    from optuna.trial import TrialState

    url = f"sqlite:///{db.resolve()}"
    try:
        summaries = optuna.get_all_study_summaries(url)
    except Exception as exc:  # noqa: BLE001 - any storage error is the same fact for the user
        raise TransferError(f"--transfer-from {db}: not an Optuna study database ({type(exc).__name__})") from None
    if not summaries:
        raise TransferError(f"--transfer-from {db}: holds no study")
    study = optuna.load_study(study_name=summaries[0].study_name, storage=url)
    configs = [
        (dict(t.params), float(t.value))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    return Source(str(db), tuple(configs))


def top_configs(source: Source, share: float = 0.1, least: int = 3) -> list[dict[str, Any]]:
    """The source's best ``share`` of configurations (at least ``least``), best first."""
    ranked = sorted(source.configs, key=lambda cv: -cv[1])
    k = min(len(ranked), max(least, int(math.ceil(share * len(ranked)))))
    return [dict(p) for p, _ in ranked[:k]]


def apply(space, base, sources: Sequence[Source], method: str):
    """The space a transferring search runs on: ``space`` with its parameters (box, prior) or warm-start points
    (warm) changed as ``method`` says (see the module doc). Parameters are resolved against ``base`` first, so
    the box and the prior are in absolute values, as the sources record them."""
    if method not in METHODS:
        raise TransferError(f"--transfer-method {method!r}: choose one of {list(METHODS)}")
    usable = [s for s in sources if s.configs]
    if not usable:
        raise TransferError(
            "--transfer-from: the sources hold no trial that trained to the full budget: "
            + ", ".join(s.name for s in sources)
        )
    names = {p.name for p in space.params}
    tops = [[{k: v for k, v in c.items() if k in names} for c in top_configs(s)] for s in usable]
    pooled = [c for top in tops for c in top]
    params = [p.resolved(base) for p in space.params]
    anchors = list(space.anchors)
    if "box" in method:
        params = [_boxed(p, pooled) for p in params]
    if method == "prior":
        params = [_with_prior(p, pooled) for p in params]
    if "warm" in method:
        seen = set()
        for top in tops:
            for c in top[:3]:
                key = repr(sorted(c.items()))
                if key not in seen and all(p.contains(c[p.name]) for p in params if p.name in c):
                    seen.add(key)
                    anchors.append(c)
    return replace(space, params=tuple(params), anchors=tuple(anchors))


def _boxed(p, pooled: list[dict[str, Any]]):
    values = [c[p.name] for c in pooled if p.name in c and p.contains(c[p.name])]
    if not values:
        return p
    if p.type == "categorical":
        kept = tuple(ch for ch in p.choices if ch in set(values))
        return replace(p, choices=kept, prior=_kept_prior(p, kept))
    lo, hi = min(values), max(values)
    if p.log:
        llo, lhi = math.log(lo), math.log(hi)
        pad = 0.1 * (lhi - llo)
        lo, hi = math.exp(llo - pad), math.exp(lhi + pad)
    else:
        pad = 0.1 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    lo, hi = max(lo, p.low), min(hi, p.high)
    if p.step:  # on the parameter's grid
        lo = p.low + math.floor((lo - p.low) / p.step + 1e-9) * p.step
        hi = p.low + math.ceil((hi - p.low) / p.step - 1e-9) * p.step
        lo, hi = round(lo, 10), round(min(hi, p.high), 10)
    if p.type == "int":
        lo, hi = int(math.floor(lo)), int(math.ceil(hi))
    prior = p.prior
    if prior is not None and prior.type != "categorical":
        prior = replace(prior, low=lo, high=hi, centre=min(max(prior.centre, lo), hi))
    return replace(p, low=lo, high=hi, prior=prior)


def _kept_prior(p, kept: tuple[Any, ...]):
    if p.prior is None:
        return None
    if p.prior.choice not in kept:
        return None
    return replace(p.prior, choices=kept)


def _with_prior(p, pooled: list[dict[str, Any]]):
    from search.priors import Prior

    values = [c[p.name] for c in pooled if p.name in c and p.contains(c[p.name])]
    if not values:
        return p
    if p.type == "categorical":
        choice, count = Counter(values).most_common(1)[0]
        weight = max(count / len(values), 1.0 / len(p.choices))
        return replace(p, prior=Prior(p.name, "categorical", choice=choice, weight=weight, choices=tuple(p.choices)))
    probe = Prior(p.name, p.type, centre=float(values[0]), low=float(p.low), high=float(p.high), log=bool(p.log))
    units = sorted(float(u) for u in probe.unit(values))
    centre_u = statistics.median(units)
    spread = statistics.pstdev(units) if len(units) > 1 else 0.25
    strength = min(0.9, max(0.0, 1.0 - 2.0 * max(spread, 0.05)))
    centre = float(probe.from_unit(centre_u))
    return replace(p, prior=replace(probe, centre=min(max(centre, p.low), p.high), strength=strength))
