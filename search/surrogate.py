"""A surrogate of a tabulated benchmark: answers any configuration of the space, not only the table's rows.

The nearest-row answer (``search.replay.answer``) makes a 150-row table a piecewise-constant objective
with 150 cells: a sampler that concentrates its proposals in a good region is answered by the same few rows
again and again (the same recorded score, nothing new learned) and by rows up to a cell's width away from what
it proposed. Surrogate benchmarks (Eggensperger et al., AAAI 2015; YAHPO Gym; Syne Tune's blackbox repository
with a fitted surrogate) answer instead from a regression model fitted to the table. Here:

* **the model**: a random forest (scikit-learn, 200 trees, leaves of at least 2 rows) fitted to every
  seed-0 row, predicting the whole validation curve (the score after each epoch) and the final test score and
  R1 together (one multi-output forest, so a predicted curve is a consistent curve). A forest learns which
  parameters matter (it splits on those), is unbiased towards none of the samplers under study (a Gaussian
  process surrogate would favour the GP sampler), and is what HPOBench's and YAHPO's first surrogate
  benchmarks used. Inputs: each numeric parameter scaled to [0, 1] (in log space for a ``log`` parameter),
  -1 when inactive (a conditional milestone under a cosine schedule), each categorical one-hot. A diverged row
  enters with the scores its run reported (0 from the epoch it diverged).
* **the noise**: a forest's prediction is a smoothed mean; a real run of a configuration differs from it by
  the seed noise. The table measures that noise on its multi-seed configurations: each seed's deviation from
  its configuration's mean curve (scaled by sqrt(n / (n - 1)), so its spread is one seed's). An answer adds
  one such deviation curve, drawn at random (whole curves, so the noise is correlated over epochs as in a real
  run), to the predicted curve; the test metrics get the same draw's test deviation.
* **what a study scores**: the configuration's expected test score (the forest's prediction, no noise), so
  the test regret measures how good a choice was, not the luck of the seed behind it; the validation score
  the search saw is the noisy one, as in a real search.

``fraction`` < 1 fits the forest to a random share of the configurations (the density check of
``docs/search-study.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from search.blackbox import Row, Table, params_key

__all__ = ["ForestSurrogate", "encode", "primary_setting", "primary_test"]


def primary_setting(test: Mapping[str, float]) -> str:
    """The primary setting of a row's test metrics: SYSU all-search (``all``), else RegDB visible to thermal."""
    return "all" if "all/R1" in test else "v2t"


def primary_test(test: Mapping[str, float] | None) -> tuple[float, float]:
    """(score, R1) of a row's test metrics on the benchmark's primary setting (``primary_setting``);
    score = (R1 + mAP) / 2."""
    if not test:
        return 0.0, 0.0
    setting = primary_setting(test)
    r1, m = float(test[f"{setting}/R1"]), float(test[f"{setting}/mAP"])
    return (r1 + m) / 2.0, r1


def encode(params: Mapping[str, Any], space_params: Sequence) -> np.ndarray:
    """A configuration as the forest's input vector (see the module doc)."""
    out: list[float] = []
    for p in space_params:
        v = params.get(p.name)
        if p.type == "categorical":
            out.extend(1.0 if v == c else 0.0 for c in p.choices)
            continue
        if v is None:
            out.append(-1.0)
            continue
        lo, hi, x = float(p.low), float(p.high), float(v)
        if p.log:
            lo, hi, x = math.log(lo), math.log(hi), math.log(x)
        out.append((x - lo) / (hi - lo) if hi > lo else 0.0)
    return np.asarray(out, dtype=float)


class ForestSurrogate:
    """The table's surrogate (see the module doc): ``mean(params)``, ``answer(params, rng)``."""

    def __init__(
        self, table: Table, space_params: Sequence, seed: int = 0, fraction: float = 1.0, trees: int = 200
    ) -> None:
        from sklearn.ensemble import RandomForestRegressor

        self.table, self.space_params, self.epochs = table, tuple(space_params), table.epochs
        ids = table.config_ids()
        if fraction < 1.0:
            rng = np.random.default_rng(seed)
            keep = max(2, int(round(fraction * len(ids))))
            ids = sorted(int(i) for i in rng.choice(ids, size=keep, replace=False))
        self.config_ids = ids
        x = np.stack([encode(table.params(c), self.space_params) for c in ids])
        y = np.stack([self._targets(table.row(c, 0)) for c in ids])
        self.forest = RandomForestRegressor(n_estimators=trees, min_samples_leaf=2, random_state=seed, n_jobs=1)
        self.forest.fit(x, y)
        self.noise = self._seed_deviations([c for c in ids if len(table.seeds(c)) >= 2])
        self._cache: dict[str, np.ndarray] = {}

    def _targets(self, row: Row) -> np.ndarray:
        curve = [row.score(e) for e in range(1, self.epochs + 1)]
        score, r1 = primary_test(row.test)
        return np.asarray([*curve, score, r1], dtype=float)

    def _seed_deviations(self, multi: list[int]) -> np.ndarray:
        """One row per (multi-seed configuration, seed): its deviation from the configuration's mean targets."""
        devs = []
        for c in multi:
            seeds = self.table.seeds(c)
            ys = np.stack([self._targets(self.table.row(c, s)) for s in seeds])
            scale = math.sqrt(len(seeds) / (len(seeds) - 1))
            devs.extend((ys - ys.mean(axis=0)) * scale)
        if not devs:
            return np.zeros((1, self.epochs + 2))
        return np.stack(devs)

    def mean(self, params: Mapping[str, Any]) -> np.ndarray:
        """The predicted targets: the validation score after each epoch, then the test score and test R1."""
        key = params_key(params)
        if key not in self._cache:
            self._cache[key] = self.forest.predict(encode(params, self.space_params)[None, :])[0]
        return self._cache[key]

    def mean_many(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.forest.predict(np.stack([encode(p, self.space_params) for p in configs]))

    def answer(self, params: Mapping[str, Any], rng: np.random.Generator, seed: int = 0) -> Row:
        """One simulated run of ``params``: the predicted curve plus a seed deviation drawn with ``rng``; its
        epoch and evaluation times are those of the nearest fitted row."""
        y = self.mean(params) + self.noise[rng.integers(len(self.noise))]
        curve = np.clip(y[: self.epochs], 0.0, 1.0)
        t = self.table.row(self.table.nearest(params, self.space_params, among=self.config_ids), 0)
        val = [
            {"epoch": e + 1, "score": float(v), "R1": float(v), "mAP": float(v), "mINP": float(v)}
            for e, v in enumerate(curve)
        ]
        score, r1 = float(np.clip(y[-2], 0, 1)), float(np.clip(y[-1], 0, 1))
        test = {"all/R1": r1, "all/mAP": 2 * score - r1}
        return Row(
            config=-1,
            seed=seed,
            val=tuple(float(v) for v in curve),
            epoch_seconds=t.epoch_seconds,
            eval_seconds=t.eval_seconds,
            test=test,
            diverged=None,
            raw={"val": val},
        )
