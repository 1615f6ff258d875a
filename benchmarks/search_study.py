#!/usr/bin/env python
"""The search study: does the search earn its compute? Replays searches on a tabulated benchmark of the space.

    python benchmarks/search_study.py --table benchmarks/tables/sysu-quick --out docs/search-study   # the study
    python benchmarks/search_study.py --table ... --reps 3 --samplers tpe random --trials 6 --out /tmp/s  # toy
    python benchmarks/search_study.py --table ... --check-driver 2      # simulator against the real driver

**The simulator** (``simulate``) runs one search the way ``search/run.py`` does, without Ray: the searcher and
the scheduler are the objects the driver builds (``search.cluster.make_searcher`` / ``make_scheduler``: the
same space, warm start, Optuna sampler, ASHA), called in the order Ray's trial controller calls them
(scheduler first on each result; on a stop, the scheduler's then the searcher's ``on_trial_complete``).
Each trial is answered by the table (``search.replay.answer``: the exact row, else the nearest) and
advances on a simulated clock by its recorded epoch and evaluation times, with ``concurrency`` workers
(Syne Tune's simulator backend): a new trial is asked for whenever a worker is free. ``--check-driver N``
runs N searches through the real driver (``search/run.py --replay``, concurrency 1) and compares their trial
sequences (sampled values, states, scores) with the simulator's.

**What is measured** (``docs/search-study.md`` explains each):

* validation regret: the table's best final validation score minus the best final validation score among
  the search's trials that trained to the full budget, against epochs consumed (all trials' epochs, stopped
  ones included) and against simulated time;
* test regret: the table's best test score minus the test score of the configuration the search would
  select at that point (the best finished trial on validation, as ``search.champion`` selects; before any
  trial finished: the paper's default, the user's fallback);
* interquartile mean over repetitions with a 95 % bootstrap interval (resampling repetitions);
* the share of proposals the sampler made from its model (``sample_relative`` returned values) rather than
  its start-up / independent sampling, warm-start points excluded;
* from the table alone: the rank correlation of validation and test over configurations next to the seed
  noise ceiling, the agreement of every rung's ranking with the final one by schedule type, the spread of
  configuration means against the seed spread, and the re-seed rule with and without the selection seed.
"""

from __future__ import annotations

import heapq
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser, UsageError  # noqa: E402
from search.samplers import SAMPLERS  # noqa: E402 - the one sampler table
from search.transfer import METHODS  # noqa: E402

# ------------------------------------------------------------------------------------------------
# The benchmark: a table, its space and base config, the scores a study compares
# ------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """A tabulated benchmark as the simulator replays it. ``model``: how a proposal is answered, ``nearest``
    (the table's row with exactly those values, else the nearest row: ``search.replay.answer``, what
    ``search/run.py --replay`` does) or ``forest`` (``search.surrogate.ForestSurrogate``: a random forest
    fitted to the table plus a measured seed deviation). A configuration is keyed by its table id (an int)
    under ``nearest`` and by its ``params_key`` (a str) under ``forest``; ``val`` and ``test`` take either."""

    table: Any  # search.blackbox.Table
    space: Any  # search.spaces.SearchSpace
    base: Any  # the table's base config with the search's evaluation interval
    space_params: tuple
    budget: Any  # search.spaces.Budget (the search's quick budget)
    model: str = "nearest"
    surrogate: Any = None  # search.surrogate.ForestSurrogate under model="forest"
    sources: tuple = ()  # search.transfer.Source: what a transferring search starts from
    _best: dict = field(default_factory=dict)
    _spaces: dict = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        model: str = "nearest",
        fraction: float = 1.0,
        fit_seed: int = 0,
        transfer_from: Sequence[str] = (),
    ) -> Bench:
        from aminet.config import Config
        from search.blackbox import Table
        from search.spaces import get_space

        table = Table.load(folder)
        space = get_space(table.meta["space"])
        table.check_names(space)
        b = space.budget_for(True)
        if b.epochs != table.epochs:
            raise UsageError(f"{folder}: a table of {table.epochs}-epoch runs, the space's quick budget has {b.epochs}")
        base = Config.from_yaml(table.meta["base"], source=str(folder)).replace({"train.eval_every": b.eval_every})
        params = tuple(p.resolved(base) for p in space.params)
        surrogate = None
        if model == "forest":
            from search.surrogate import ForestSurrogate

            surrogate = ForestSurrogate(table, params, seed=fit_seed, fraction=fraction)
        elif model != "nearest":
            raise UsageError(f"--replay-model {model!r}: choose nearest or forest")
        elif fraction < 1.0:
            table = _subsampled(table, fraction, fit_seed)
        from search.transfer import load_source

        sources = tuple(load_source(str(t)) for t in transfer_from)
        return cls(table, space, base, params, b, model, surrogate, sources)

    def budget_with(self, trials: int, grace: int | None = None, reduction_factor: int | None = None):
        return budget_with(self.budget, trials, grace, reduction_factor)

    @property
    def trial_seed(self) -> int:
        """The training seed of a search's trials (the base config's)."""
        return int(self.base.train.seed)

    def searcher(self, sampler: str, seed: int, budget):
        """The searcher the driver builds (``search.cluster.make_searcher``) for this table's space; a sampler
        named ``SAMPLER@METHOD`` (``tpe@box``) searches the space ``search.transfer.apply`` makes from the
        bench's transfer sources, as ``search/run.py --transfer-from ... --transfer-method METHOD`` does."""
        from search.cluster import make_searcher

        sampler, _, method = sampler.partition("@")
        space = self.space
        if method:
            if method not in self._spaces:
                from search.transfer import apply

                self._spaces[method] = apply(self.space, self.base, self.sources, method)
            space = self._spaces[method]
        return make_searcher(space, self.base, budget, sampler, seed, study_name=f"sim-{seed}")

    def answer(self, params: dict[str, Any], seed: int, rng) -> tuple[Any, Any]:
        """(key, row) of one simulated run of ``params`` at ``seed`` (``rng``: the surrogate's noise draws)."""
        if self.surrogate is None:
            from search.replay import answer

            cid = answer(self.table, self.space_params, params)
            return cid, self.table.row(cid, seed)
        from search.blackbox import params_key

        return params_key(params), self.surrogate.answer(params, rng, seed)

    def default_key(self) -> Any:
        c = self.table.default_config()
        if self.surrogate is None:
            return c
        from search.blackbox import params_key

        return params_key(self.table.params(c))

    # scores of a configuration: validation (final epoch) and test (the primary setting: (R1 + mAP) / 2, or R1)
    def val(self, config: Any, seed: int = 0) -> float:
        if isinstance(config, str):
            return float(self.surrogate.mean(json.loads(config))[self.table.epochs - 1])
        return self.table.row(config, seed).final

    def test(self, config: Any, seed: int = 0, metric: str = "score") -> float:
        from search.surrogate import primary_setting, primary_test

        if isinstance(config, str):
            y = self.surrogate.mean(json.loads(config))
            return float(y[-2] if metric == "score" else y[-1])
        t = self.table.row(config, seed).test
        if metric in ("score", "R1"):
            score, r1 = primary_test(t)
            return score if metric == "score" else r1
        return float(t[f"{primary_setting(t)}/{metric}"]) if t else 0.0

    def _candidates(self) -> list[dict[str, Any]]:
        """Where the surrogate's optimum is looked for: the table's configurations and 4096 Sobol points."""
        from search.blackbox import space_filling

        return [self.table.params(c) for c in self.table.config_ids()] + space_filling(self.space_params, 4096, 1)

    def best_val(self) -> float:
        if self.surrogate is None:
            return max(self.val(c) for c in self.table.config_ids())
        if "val" not in self._best:
            y = self.surrogate.mean_many(self._candidates())
            self._best.update(val=float(y[:, self.table.epochs - 1].max()), score=float(y[:, -2].max()))
            self._best["R1"] = float(y[:, -1].max())
        return self._best["val"]

    def best_test(self, metric: str = "score") -> float:
        if self.surrogate is None:
            return max(self.test(c, 0, metric) for c in self.table.config_ids())
        self.best_val()
        return self._best[metric]


def budget_with(budget, trials: int, grace: int | None = None, reduction_factor: int | None = None):
    """``budget`` (a ``search.spaces.Budget``) with another trial count and, when given, another ASHA cut."""
    from dataclasses import replace

    b = replace(budget, num_samples=int(trials))
    if grace is not None:
        b = replace(b, grace_period=int(grace))
    if reduction_factor is not None:
        b = replace(b, reduction_factor=int(reduction_factor))
    return b


def _subsampled(table, fraction: float, seed: int):
    """The table with a random ``fraction`` of its configurations (the default and warm starts always kept)."""
    import numpy as np

    from search.blackbox import Table

    ids = table.config_ids()
    keep_always = [c["config"] for c in table.meta["configs"] if c["kind"] != "sobol"]
    rest = [c for c in ids if c not in keep_always]
    n = max(1, int(round(fraction * len(ids)))) - len(keep_always)
    chosen = set(np.random.default_rng(seed).choice(rest, size=max(0, n), replace=False).tolist()) | set(keep_always)
    rows = [r for c, by_seed in table.rows.items() if c in chosen for r in by_seed.values()]
    return Table(table.folder, table.meta, rows)


# ------------------------------------------------------------------------------------------------
# The simulator
# ------------------------------------------------------------------------------------------------


@dataclass
class SimTrial:
    trial_id: str
    number: int
    params: dict[str, Any]
    config: int
    row: Any
    start: float
    epoch: int = 0
    state: str = "RUNNING"  # COMPLETE | STOPPED (by ASHA) | DIVERGED
    last_result: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # Ray keys some dicts by trial objects
        return hash(self.trial_id)


def _epoch_time(row, epoch: int, evaluates: bool) -> float:
    t = row.epoch_seconds[epoch - 1]
    if evaluates and row.eval_seconds:
        t += row.eval_seconds[min(epoch, len(row.eval_seconds)) - 1]
    return t


def simulate(
    bench: Bench,
    sampler: str,
    seed: int,
    trials: int,
    concurrency: int = 1,
    asha: bool = True,
    grace: int | None = None,
    reduction_factor: int | None = None,
) -> dict[str, Any]:
    """One replayed search (see the module doc); returns its trace and outcome."""
    sim = _Search(bench, sampler, seed, bench.budget_with(trials, grace, reduction_factor), asha)
    return sim.run(trials, concurrency)


class _Search:
    """The simulated cluster: the driver's searcher and ASHA, called in Ray's order on a simulated clock."""

    def __init__(self, bench: Bench, sampler: str, seed: int, budget, asha: bool) -> None:
        import warnings

        import numpy as np

        from search.cluster import make_scheduler, quiet_libraries

        quiet_libraries()
        self.bench, self.sampler, self.seed, self.budget, self.asha = bench, sampler, seed, budget, asha
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.searcher = bench.searcher(sampler, seed, budget)
        self.scheduler = make_scheduler(budget) if asha else None
        self.rng = np.random.default_rng(10_000 + seed)  # a surrogate's seed-noise draws
        if self.scheduler is not None:
            self.scheduler.set_search_properties("score", "max")
        # which proposals came from the sampler's model (its relative sampling answered), by trial number
        self.model_based: dict[int, bool] = {}
        ot_sampler = self.searcher._ot_study.sampler
        original = ot_sampler.sample_relative

        def recording(study, trial, search_space):
            out = original(study, trial, search_space)
            self.model_based[trial.number] = bool(out)
            return out

        ot_sampler.sample_relative = recording
        self.enqueued = {t.number for t in self.searcher._ot_study.get_trials(deepcopy=False)}  # warm starts
        self.events: list = []
        self.seq = 0
        self.started: list[SimTrial] = []
        self.running = 0
        self.selected: tuple[float, int] | None = None  # (val score, config) of the best finished trial so far

    def evaluates(self, epoch: int) -> bool:
        return epoch % self.budget.eval_every == 0 or epoch == self.budget.epochs

    def schedule(self, t: float, trial: SimTrial) -> None:
        """The end of ``trial``'s next epoch, after ``t``."""
        e = trial.epoch + 1
        heapq.heappush(self.events, (t + _epoch_time(trial.row, e, self.evaluates(e)), self.seq, trial))
        self.seq += 1

    def start(self, t_now: float) -> None:
        import warnings

        trial_id = f"t{len(self.started):05d}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = self.searcher.suggest(trial_id)
        params = {k: v for k, v in config.items() if k != "optuna_trial"}
        number = int(config.get("optuna_trial", len(self.started)))
        cid, row = self.bench.answer(params, self.bench.trial_seed, self.rng)
        trial = SimTrial(trial_id, number, params, cid, row, t_now)
        if self.scheduler is not None:
            self.scheduler.on_trial_add(None, trial)
        self.started.append(trial)
        self.running += 1
        self.schedule(t_now, trial)

    def end(self, trial: SimTrial, state: str) -> None:
        trial.state = state
        self.running -= 1
        if self.scheduler is not None:
            self.scheduler.on_trial_complete(None, trial, trial.last_result)
        self.searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        if state == "COMPLETE":
            score = float(trial.last_result["score"])
            if self.selected is None or score > self.selected[0]:
                self.selected = (score, trial.config)

    def epoch_done(self, now: float, trial: SimTrial) -> None:
        """One epoch of ``trial`` ended at ``now``: its result to ASHA and the searcher, as Ray hands it."""
        from ray.tune.schedulers import TrialScheduler

        trial.epoch += 1
        e = trial.epoch
        result: dict[str, Any] = {"epoch": e, "training_iteration": e, "trial_id": trial.trial_id}
        diverged = trial.row.diverged is not None and e >= trial.row.diverged
        if diverged:
            result.update(score=0.0, diverged=1.0)
        elif self.evaluates(e):
            result.update(trial.row.val_metrics(e))
        trial.last_result = result
        decision = TrialScheduler.CONTINUE
        if self.scheduler is not None and not diverged:
            decision = self.scheduler.on_trial_result(None, trial, result)
        if diverged:
            self.end(trial, "DIVERGED")
        elif decision == TrialScheduler.STOP or e >= self.budget.epochs:
            self.end(trial, "COMPLETE" if e >= self.budget.epochs else "STOPPED")
        else:
            self.searcher.on_trial_result(trial.trial_id, result)
            self.schedule(now, trial)

    def run(self, trials: int, concurrency: int) -> dict[str, Any]:
        now, consumed = 0.0, 0
        trace: list[tuple[int, float, int | None]] = []  # (epochs consumed, time, selected config) per epoch
        while len(self.started) < trials and self.running < concurrency:
            self.start(now)
        while self.events:
            now, _, trial = heapq.heappop(self.events)
            consumed += 1
            self.epoch_done(now, trial)
            trace.append((consumed, now, self.selected[1] if self.selected else None))
            while len(self.started) < trials and self.running < concurrency:
                self.start(now)
        learned = [self.model_based.get(t.number, False) for t in self.started if t.number not in self.enqueued]
        return {
            "sampler": self.sampler,
            "seed": self.seed,
            "trials": trials,
            "concurrency": concurrency,
            "asha": self.asha,
            "grace": self.budget.grace_period if self.asha else None,
            "reduction_factor": self.budget.reduction_factor if self.asha else None,
            "sequence": [
                {
                    "number": t.number,
                    "config": t.config,
                    "state": t.state,
                    "epochs": t.epoch,
                    "params": t.params,
                    "score": t.last_result.get("score"),
                }
                for t in self.started
            ],
            "trace": trace,
            "epochs": consumed,
            "time": now,
            "model_based": sum(learned),
            "proposals": len(learned),
            "selected": self.selected[1] if self.selected else None,
        }


# ------------------------------------------------------------------------------------------------
# Aggregates: regret curves, IQM and bootstrap intervals
# ------------------------------------------------------------------------------------------------


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean: the mean of the middle 50 % (Agarwal et al. 2021), as scipy's ``trim_mean(v, 0.25)``
    (a quarter of the values, rounded down, cut from each end)."""
    import numpy as np

    v = np.sort(np.asarray(values, dtype=float))
    k = int(0.25 * len(v))
    return float(v[k : len(v) - k].mean())


def bootstrap_ci(values: Sequence[float], stat: str = "iqm", n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile bootstrap interval of the IQM (or the ``"mean"``) over the repetitions (all resamples
    drawn at once)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v[0]), float(v[0])
    samples = np.sort(v[rng.integers(0, len(v), (n, len(v)))], axis=1)
    k = int(0.25 * len(v)) if stat == "iqm" else 0
    stats = samples[:, k : len(v) - k].mean(axis=1)
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def regret_at(bench: Bench, sim: dict[str, Any], grid: Sequence[int], axis: str = "epochs") -> dict[str, list[float]]:
    """Validation and test regret of one search at each point of ``grid`` (epochs consumed, or seconds)."""
    best_val, best_test, default = bench.best_val(), bench.best_test(), bench.default_key()
    key = 0 if axis == "epochs" else 1
    val_out, test_out, i, sel = [], [], 0, None
    trace = sim["trace"]
    for g in grid:
        while i < len(trace) and trace[i][key] <= g:
            sel = trace[i][2]
            i += 1
        val_out.append(best_val - bench.val(sel) if sel is not None else math.nan)
        test_out.append(best_test - bench.test(default if sel is None else sel))
    return {"val": val_out, "test": test_out}


# ------------------------------------------------------------------------------------------------
# Analyses of the table alone
# ------------------------------------------------------------------------------------------------


def table_analysis(bench: Bench) -> dict[str, Any]:
    """Selection validity, seed noise, rung agreement by schedule, the re-seed rule (see the module doc)."""
    import numpy as np
    from scipy.stats import spearmanr

    t = bench.table
    ids = [c for c in t.config_ids() if t.row(c, 0).diverged is None]
    out: dict[str, Any] = {"configs": len(t.config_ids()), "diverged": len(t.config_ids()) - len(ids)}
    val = np.array([bench.val(c) for c in ids])
    test_r1 = np.array([bench.test(c, 0, "R1") for c in ids])
    test_score = np.array([bench.test(c) for c in ids])
    out["spearman_val_test_r1"] = float(spearmanr(val, test_r1).statistic)
    out["spearman_val_test_score"] = float(spearmanr(val, test_score).statistic)
    multi = [c for c in ids if len(t.seeds(c)) >= 2]
    out["multi_seed_configs"] = len(multi)
    if len(multi) >= 3:
        s0 = np.array([bench.val(c, t.seeds(c)[0]) for c in multi])
        s1 = np.array([bench.val(c, t.seeds(c)[1]) for c in multi])
        out["spearman_val_seed0_seed1"] = float(spearmanr(s0, s1).statistic)
        x0 = np.array([bench.test(c, t.seeds(c)[1], "R1") for c in multi])
        out["spearman_val_seed0_test_r1_seed1"] = float(spearmanr(s0, x0).statistic)
        means = [statistics.fmean(bench.val(c, s) for s in t.seeds(c)) for c in multi]
        sds = [statistics.stdev(bench.val(c, s) for s in t.seeds(c)) for c in multi]
        out["val_spread_of_config_means"] = float(statistics.stdev(means))
        out["val_seed_sd_mean"] = float(statistics.fmean(sds))
        tmeans = [statistics.fmean(bench.test(c, s, "R1") for s in t.seeds(c)) for c in multi]
        tsds = [statistics.stdev(bench.test(c, s, "R1") for s in t.seeds(c)) for c in multi]
        out["test_r1_spread_of_config_means"] = float(statistics.stdev(tmeans))
        out["test_r1_seed_sd_mean"] = float(statistics.fmean(tsds))
    out["val_spread_all_configs"] = float(np.std(val, ddof=1)) if len(val) > 1 else 0.0
    # rung agreement: Spearman of the score after epoch r with the final one, overall and by schedule
    # keys are str epochs ("1", ...), as results.json keeps them, so a fresh report and one read back are alike
    agree: dict[str, dict[str, float]] = {}
    for group in ("all", "step", "cosine"):
        members = [c for c in ids if group == "all" or t.params(c).get("optim.schedule") == group]
        if len(members) < 4:
            continue
        final = [bench.val(c) for c in members]
        agree[group] = {
            str(r): float(spearmanr([t.row(c, 0).score(r) for c in members], final).statistic)
            for r in range(1, t.epochs)
        }
        agree[group]["n"] = len(members)
    out["rung_agreement"] = agree
    # what a rung cut keeps: of the configurations in the final top third, the share in the top third at rung r
    keep: dict[str, float] = {}
    k = max(1, len(ids) // 3)
    final_top = set(sorted(ids, key=lambda c: -bench.val(c))[:k])
    for r in range(1, t.epochs):
        rung_top = set(sorted(ids, key=lambda c: -t.row(c, 0).score(r))[:k])
        keep[str(r)] = len(final_top & rung_top) / k
    out["rung_top_third_kept"] = keep
    out["reseed_rule"] = reseed_rule(bench, multi)
    return out


def reseed_rule(
    bench: Bench,
    multi: Sequence[int],
    draws: int = 4000,
    seed: int = 0,
    pools: Sequence[int] = (6, 12),
    tops: Sequence[int] = (2, 3, 4),
    reseeds: Sequence[int] = (1, 2),
    boot: int = 200,
) -> dict[str, Any]:
    """The re-seed rule on the configurations with 3 seeds: draw a pool of ``n`` of them (the finished trials
    of a search), take the top ``k`` on seed 0 (the search's seed), re-seed each with ``r`` fresh seeds
    (1..r); choose the best mean over (a) all seeds, the selection seed included, or (b) the fresh seeds
    only (the shipped rule). Also (c): no re-seeding (top-1 on seed 0), and the pool's best (oracle).

    The quality of a choice is its test R1 averaged over its 3 seeds (the expected test R1 of a model of that
    configuration); with one re-seed also on seed 2 alone, a seed no rule looked at (a model's luck on
    validation carries over to its own test score, which favours the seeds a rule selected on). Every
    (n, k, r) of the grid, with its cost in extra full trainings (k x r) and the paired gain of each rule over
    no re-seeding: the mean over ``draws`` pools and a 95 % interval from ``boot`` bootstrap resamples of the
    configurations (the table's configurations are themselves a sample; pools drawn from each resample)."""
    import numpy as np

    t = bench.table
    multi = [c for c in multi if len(t.seeds(c)) >= 3]
    if len(multi) < 4:
        return {"configs": len(multi)}
    val = {c: [bench.val(c, s) for s in range(3)] for c in multi}
    test = {c: [bench.test(c, s, "R1") for s in range(3)] for c in multi}

    def choices(pool: list[int], k: int, r: int) -> dict[str, int]:
        top = sorted(pool, key=lambda c: -val[c][0])[:k]
        return {
            "no_reseed": top[0],
            "with_selection_seed": max(top, key=lambda c: statistics.fmean(val[c][: 1 + r])),
            "fresh_only": max(top, key=lambda c: statistics.fmean(val[c][1 : 1 + r])),
            "oracle": max(pool, key=lambda c: statistics.fmean(test[c])),
        }

    def gains(configs: list[int], n: int, k: int, r: int, rng, count: int, seeds: slice) -> dict[str, np.ndarray]:
        got: dict[str, list[float]] = {}
        for _ in range(count):
            pool = [configs[i] for i in rng.choice(len(configs), size=n, replace=False)]
            for rule, c in choices(pool, k, r).items():
                got.setdefault(rule, []).append(statistics.fmean(test[c][seeds]))
        return {rule: np.array(v) for rule, v in got.items()}

    out: dict[str, Any] = {"configs": len(multi), "draws": draws, "boot": boot}
    rules = ("with_selection_seed", "fresh_only")
    for n in sorted({min(len(multi), p) for p in pools}):
        for k in [k for k in tops if k <= n]:
            for r in [r for r in reseeds if r <= 2]:
                entry: dict[str, Any] = {"pool": n, "top": k, "reseeds": r, "extra_trainings": k * r}
                scopes = {"all_seeds": slice(0, 3)} | ({"heldout_seed": slice(2, 3)} if r == 1 else {})
                for scope, seeds in scopes.items():
                    q = gains(multi, n, k, r, np.random.default_rng(seed), draws, seeds)
                    rng = np.random.default_rng(seed + 1)
                    boot_gain = {rule: [] for rule in rules}
                    for _ in range(boot):
                        resample = [multi[i] for i in rng.integers(0, len(multi), len(multi))]
                        g = gains(resample, n, k, r, rng, max(1, draws // 20), seeds)
                        for rule in rules:
                            boot_gain[rule].append(float((g[rule] - g["no_reseed"]).mean()))
                    entry[scope] = {rule: float(v.mean()) for rule, v in q.items()}
                    for rule in rules:
                        lo, hi = np.percentile(boot_gain[rule], [2.5, 97.5])
                        entry[scope][f"gain_{rule}"] = {
                            "mean": float((q[rule] - q["no_reseed"]).mean()),
                            "ci": (float(lo), float(hi)),
                        }
                out[f"n{n}_top{k}_reseeds{r}"] = entry
    return out


# ------------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------------


def _one(args: tuple) -> dict[str, Any]:
    spec, sampler, seed, trials, conc, asha, grace, rf = args
    bench = _bench(spec)
    t0 = time.perf_counter()
    sim = simulate(bench, sampler, seed, trials, conc, asha, grace, rf)
    sim["wall_s"] = time.perf_counter() - t0
    return sim


_BENCH: dict[Any, Bench] = {}


def _bench(spec: Any) -> Bench:
    """The bench of a spec: a table folder (nearest-row answers), or (folder, model, fraction) (cached per process)."""
    key = (spec, "nearest", 1.0, ()) if isinstance(spec, str) else tuple(spec)
    if key not in _BENCH:
        _BENCH[key] = Bench.load(key[0], model=key[1], fraction=key[2], transfer_from=key[3] if len(key) > 3 else ())
    return _BENCH[key]


def run_study(
    folder: Any,
    samplers: Sequence[str],
    trial_counts: Sequence[int],
    concurrencies: Sequence[int],
    ashas: Sequence[bool],
    reps: int,
    workers: int = 1,
    reps_for: dict[str, int] | None = None,
    grace: int | None = None,
    reduction_factor: int | None = None,
    asha_grid: Sequence[tuple[int, int]] = (),
) -> list[dict[str, Any]]:
    """Every (sampler, trials, concurrency, scheduler) setting ``reps`` times; with ``asha_grid`` each ASHA
    setting once per (grace, reduction factor) pair of the grid instead of the space's (or the given) one."""
    cuts = list(asha_grid) or [(grace, reduction_factor)]
    jobs = [
        (folder, s, seed, n, c, a, g, rf)
        for s in samplers
        for n in trial_counts
        for c in concurrencies
        for a in ashas
        for g, rf in (cuts if a else [(None, None)])
        for seed in range((reps_for or {}).get(s, reps))
    ]
    if workers <= 1:
        return [_one(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_one, jobs, chunksize=4))


def _group(row: dict[str, Any]) -> tuple:
    """What makes a setting, of a replayed search or of a summary line; its ``str`` orders the summary."""
    return (
        row["sampler"],
        row["trials"],
        row["concurrency"],
        row["asha"],
        row.get("grace"),
        row.get("reduction_factor"),
    )


def summarise(bench: Bench, sims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (sampler, trials, concurrency, ASHA): final regrets (IQM, 95 % CI), epochs, time, model share."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for s in sims:
        groups.setdefault(_group(s), []).append(s)
    best_test, default = bench.best_test(), bench.default_key()
    rows = []
    for (sampler, trials, conc, asha, grace, rf), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        test_reg = [best_test - bench.test(s["selected"] if s["selected"] is not None else default) for s in group]
        val_reg = [bench.best_val() - bench.val(s["selected"]) for s in group if s["selected"] is not None]
        r1 = [bench.test(s["selected"] if s["selected"] is not None else default, 0, "R1") for s in group]
        rows.append(
            {
                "sampler": sampler,
                "trials": trials,
                "concurrency": conc,
                "asha": asha,
                "grace": grace,
                "reduction_factor": rf,
                "reps": len(group),
                "test_regret_iqm": iqm(test_reg),
                "test_regret_ci": bootstrap_ci(test_reg),
                "val_regret_iqm": iqm(val_reg) if val_reg else math.nan,
                "val_regret_ci": bootstrap_ci(val_reg) if val_reg else (math.nan, math.nan),
                "test_r1_iqm": iqm(r1),
                "epochs_mean": statistics.fmean(s["epochs"] for s in group),
                "sim_hours_mean": statistics.fmean(s["time"] for s in group) / 3600,
                "model_based_share": sum(s["model_based"] for s in group) / max(1, sum(s["proposals"] for s in group)),
                "wall_s_per_rep": statistics.fmean(s.get("wall_s", 0.0) for s in group),
                # table rows a search visits: the nearest-row answer maps a concentrated search's proposals onto
                # fewer rows than it made trials, and a row visited again teaches the search nothing new
                "distinct_rows_mean": statistics.fmean(len({t["config"] for t in s["sequence"]}) for s in group),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python benchmarks/search_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--table", default=str(REPO / "benchmarks" / "tables" / "sysu-quick"), help="table folder")
    p.add_argument("--out", default=None, help="folder for results.json, summary.csv and the plots")
    p.add_argument(
        "--samplers",
        nargs="+",
        default=["tpe", "random", "gp", "cmaes"],
        help="samplers to compare: tpe random gp cmaes pibo, or SAMPLER@METHOD for a transferring search "
        "(tpe@box, pibo@prior, ...; needs --transfer-from)",
    )
    p.add_argument(
        "--transfer-from",
        nargs="+",
        default=[],
        metavar="SOURCE",
        help="earlier searches or tables a SAMPLER@METHOD search transfers from (search/transfer.py)",
    )
    p.add_argument("--trials", nargs="+", type=int, default=None, help="trial counts (default: quick and full)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 8])
    p.add_argument("--schedulers", nargs="+", default=["asha", "none"], choices=["asha", "none"])
    p.add_argument("--reps", type=int, default=30, help="repetitions (sampler seeds) per setting (default 30)")
    p.add_argument("--gp-reps", type=int, default=None, help="repetitions of the GP sampler (default --reps)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--grace", type=int, default=None, help="ASHA grace period (default: the space's quick budget)")
    p.add_argument("--reduction-factor", type=int, default=None, help="ASHA reduction factor (default: the space's)")
    p.add_argument(
        "--asha-grid",
        nargs="+",
        default=[],
        metavar="G:R",
        help="ASHA settings to compare (grace period : reduction factor), instead of --grace / --reduction-factor",
    )
    p.add_argument(
        "--replay-model",
        default="forest",
        choices=["forest", "nearest"],
        help="how a proposal is answered: forest (a random forest fitted to the table plus measured seed noise, "
        "search/surrogate.py; default) or nearest (the nearest row, what search/run.py --replay does)",
    )
    p.add_argument(
        "--subsample",
        type=float,
        default=1.0,
        help="use a random share of the table's configurations (the density check; default 1.0: all)",
    )
    p.add_argument("--check-driver", type=int, default=0, metavar="N", help="compare N real-driver runs first")
    p.add_argument(
        "--check-sampler", default="tpe", choices=SAMPLERS, help="the sampler of --check-driver (default tpe)"
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="FOLDER",
        help="replay nothing: put the settings of FOLDER/results.json (a study on the same table, e.g. more "
        "repetitions of one sampler) in place of the same settings in --out, and rewrite its summary and plots",
    )
    args = p.parse_args(argv)
    try:
        grid = [tuple(int(x) for x in spec.split(":")) for spec in args.asha_grid]
        if any(len(g) != 2 or g[0] < 1 or g[1] < 2 for g in grid):
            raise ValueError
    except ValueError:
        print(f"search_study: error: --asha-grid {args.asha_grid}: expected G:R with G >= 1, R >= 2", file=sys.stderr)
        return 2
    if not 0.0 < args.subsample <= 1.0:
        print(f"search_study: error: --subsample {args.subsample}: expected a share in (0, 1]", file=sys.stderr)
        return 2
    spec = (
        str(Path(args.table).resolve()),
        args.replay_model,
        float(args.subsample),
        tuple(str(Path(t).resolve()) for t in args.transfer_from),
    )
    unknown = [
        s for s in args.samplers if s.partition("@")[0] not in SAMPLERS or s.partition("@")[2] not in ("", *METHODS)
    ]
    if unknown or (any("@" in s for s in args.samplers) and not args.transfer_from):
        print(
            f"search_study: error: --samplers {unknown or args.samplers}: expected SAMPLER or SAMPLER@METHOD "
            f"(samplers {list(SAMPLERS)}, methods {list(METHODS)}; a method needs --transfer-from)",
            file=sys.stderr,
        )
        return 2
    try:
        bench = _bench(spec)
    except (UsageError, ValueError) as exc:
        print(f"search_study: error: {exc}", file=sys.stderr)
        return 2
    if args.merge:
        return merge(bench, Path(args.merge), Path(args.out) if args.out else None)
    trial_counts = args.trials or [bench.budget.num_samples, bench.space.budget_for(False).num_samples]
    out = Path(args.out) if args.out else None
    report: dict[str, Any] = {
        "table": str(Path(args.table)),
        "table_rows": sum(len(v) for v in bench.table.rows.values()),
        "table_digest": bench.table.digest(),
        "replay_model": args.replay_model,
        "transfer_from": args.transfer_from,
        "subsample": args.subsample,
        "command": "python benchmarks/search_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.check_driver:
        report["driver_check"] = check_driver(args.table, args.check_driver, sampler=args.check_sampler)
        print(json.dumps(report["driver_check"], indent=1))
    report["table_analysis"] = table_analysis(bench)
    print(json.dumps(report["table_analysis"], indent=1, default=str))
    t0 = time.perf_counter()
    sims = run_study(
        spec,
        args.samplers,
        trial_counts,
        args.concurrency,
        [s == "asha" for s in args.schedulers],
        args.reps,
        args.workers,
        {"gp": args.gp_reps} if args.gp_reps else None,
        args.grace,
        args.reduction_factor,
        grid,
    )
    report["study_wall_s"] = time.perf_counter() - t0
    report["summary"] = summarise(bench, sims)
    for row in report["summary"]:
        lo, hi = row["test_regret_ci"]
        print(
            f"{row['sampler']:7s} n={row['trials']:3d} c={row['concurrency']} {_cut(row)}: "
            f"test regret IQM {100 * row['test_regret_iqm']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}] "
            f"test R1 {100 * row['test_r1_iqm']:.2f} epochs {row['epochs_mean']:.0f} "
            f"model-based {100 * row['model_based_share']:.0f} % rows {row['distinct_rows_mean']:.1f} ({row['reps']} reps, {row['wall_s_per_rep']:.2f} s each)"
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        curves = regret_curves(bench, sims)
        report["curves"] = curves
        (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        (out / "summary.md").write_text(markdown(bench, report))
        plot(bench, report, out)
        print(f"wrote {out}/results.json and the plots")
    return 0


def _setting(row: dict[str, Any]) -> str:
    """A setting's key in ``curves`` (and the plots' file names): ``tpe|6|2|asha-g2r3``."""
    return f"{row['sampler']}|{row['trials']}|{row['concurrency']}|{_cut(row, compact=True)}"


def merge(bench: Bench, extra_folder: Path, out: Path | None) -> int:
    """Put the settings of a supplementary study (``extra_folder/results.json``) in place of the same settings
    of the study in ``out``; keep the rest, record the supplement's command, rewrite summary.md and the plots.
    Both must come from this table (same digest): a merged report never mixes tables."""
    if out is None:
        print("search_study: error: --merge needs --out (the study to merge into)", file=sys.stderr)
        return 2
    reports = {}
    for name, folder in (("--out", out), ("--merge", extra_folder)):
        path = folder / "results.json"
        try:
            reports[name] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"search_study: error: {path}: cannot read a study's results ({exc})", file=sys.stderr)
            return 2
        if reports[name].get("table_digest") != bench.table.digest():
            print(
                f"search_study: error: {path}: table digest {reports[name].get('table_digest')} is not "
                f"{bench.table.digest()} (the table given by --table)",
                file=sys.stderr,
            )
            return 2
    base, extra = reports["--out"], reports["--merge"]
    if "curves" not in extra:
        print(f"search_study: error: {extra_folder / 'results.json'}: no curves (run it with --out)", file=sys.stderr)
        return 2
    replaced = {_setting(r) for r in extra["summary"]}
    base["summary"] = sorted(
        [r for r in base["summary"] if _setting(r) not in replaced] + extra["summary"],
        key=lambda r: str(_group(r)),
    )
    base.setdefault("curves", {}).update(extra["curves"])
    base.setdefault("merged", []).append(
        {"command": extra["command"], "settings": len(replaced), "study_wall_s": extra.get("study_wall_s")}
    )
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(base, indent=1, default=str) + "\n")
    tmp.replace(out / "results.json")
    (out / "summary.md").write_text(markdown(bench, base))
    plot(bench, base, out)
    print(f"merged {len(replaced)} settings of {extra_folder} into {out}")
    return 0


def _cut(row: dict[str, Any], compact: bool = False) -> str:
    """How a setting stops trials: ``asha 2:3`` (grace : reduction factor; ``asha-g2r3`` in keys and file
    names) or ``none``."""
    if not row["asha"]:
        return "none"
    if compact:
        return f"asha-g{row['grace']}r{row['reduction_factor']}"
    return f"asha {row['grace']}:{row['reduction_factor']}"


def markdown(bench: Bench, report: dict[str, Any]) -> str:
    """The study's tables in Markdown (``summary.md`` beside ``results.json``; docs/search-study.md quotes it)."""
    a = report["table_analysis"]
    t = bench.table
    lines = [
        f"Table: {report['table']} ({report['table_rows']} rows, {len(t.config_ids())} configurations with seed 0, "
        f"digest {report['table_digest']}); `{report['command']}`"
        + "".join(f"; then {m['settings']} settings replaced by `{m['command']}`" for m in report.get("merged", []))
        + ".",
        "",
        f"Best in the table: validation score {100 * bench.best_val():.2f}, test score {100 * bench.best_test():.2f} "
        f"(test R1 {100 * bench.best_test('R1'):.2f}); the paper's default: validation "
        f"{100 * bench.val(bench.default_key()):.2f}, test {100 * bench.test(bench.default_key()):.2f} "
        f"(R1 {100 * bench.test(bench.default_key(), 0, 'R1'):.2f}), test regret "
        f"{100 * (bench.best_test() - bench.test(bench.default_key())):.2f}"
        + (
            f" (answers: {bench.model}"
            + (f", fitted to {len(bench.surrogate.config_ids)} configurations" if bench.surrogate else "")
            + ")."
        ),
        "",
        "| sampler | trials | concurrency | ASHA (grace:rf) | reps | test regret IQM [95 % CI] | "
        "val regret IQM [95 % CI] | test R1 IQM | epochs | model-based proposals | distinct rows |",
        "|---|---:|---:|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in report["summary"]:
        lo, hi = r["test_regret_ci"]
        vlo, vhi = r["val_regret_ci"]
        lines.append(
            f"| {r['sampler']} | {r['trials']} | {r['concurrency']} | {_cut(r)} | {r['reps']} | "
            f"{100 * r['test_regret_iqm']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}] | "
            f"{100 * r['val_regret_iqm']:.2f} [{100 * vlo:.2f}, {100 * vhi:.2f}] | {100 * r['test_r1_iqm']:.2f} | "
            f"{r['epochs_mean']:.0f} | {100 * r['model_based_share']:.0f} % | {r['distinct_rows_mean']:.1f} |"
        )
    lines += ["", "Selection validity and noise (validation score and test metrics of seed 0 unless said):", ""]
    for key, label in (
        ("spearman_val_test_r1", "Spearman, validation score vs test R1, over configurations"),
        ("spearman_val_test_score", "Spearman, validation score vs test score"),
        ("spearman_val_seed0_seed1", "Spearman, validation score seed 0 vs seed 1 (noise ceiling)"),
        ("spearman_val_seed0_test_r1_seed1", "Spearman, validation seed 0 vs test R1 seed 1"),
        ("val_spread_of_config_means", "SD of configuration means (validation, multi-seed configurations)"),
        ("val_seed_sd_mean", "mean seed SD within a configuration (validation)"),
        ("val_spread_all_configs", "SD of seed-0 validation scores over all configurations"),
        ("test_r1_spread_of_config_means", "SD of configuration means (test R1)"),
        ("test_r1_seed_sd_mean", "mean seed SD within a configuration (test R1)"),
    ):
        if key in a:
            v = a[key]
            lines.append(f"* {label}: {v:.3f}" if "spearman" in key else f"* {label}: {100 * v:.2f} points")
    agree = a.get("rung_agreement", {})
    if agree:
        rungs = sorted(int(r) for r in next(iter(agree.values())) if r != "n")
        lines += ["", "| schedules | n | " + " | ".join(f"rung at epoch {r}" for r in rungs) + " |"]
        lines.append("|---|---:|" + "---:|" * len(rungs))
        for group, by in agree.items():
            cells = " | ".join(f"{by.get(str(r), float('nan')):.2f}" for r in rungs)
            lines.append(f"| {group} | {by['n']} | {cells} |")
    rr = a.get("reseed_rule", {})
    settings = [v for v in rr.values() if isinstance(v, dict) and "pool" in v]
    if settings:
        lines += [
            "",
            f"Re-seeding ({rr['configs']} configurations with 3 seeds, {rr['draws']} drawn pools per setting, 95 % "
            f"intervals from {rr['boot']} bootstrap resamples of the configurations): the expected test R1 of the "
            "choice (its mean over the configuration's 3 seeds; in brackets, with one re-seed, on the seed no rule "
            "looked at) and each rule's gain over no re-seeding.",
            "",
            "| pool | top-k | re-seeds | extra trainings | no re-seeding | with the selection seed | fresh seeds only | "
            "gain, with the selection seed | gain, fresh seeds only | best of the pool |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
        ]

        def cell(v: dict, rule: str) -> str:
            text = f"{100 * v['all_seeds'][rule]:.2f}"
            return text + (f" ({100 * v['heldout_seed'][rule]:.2f})" if "heldout_seed" in v else "")

        def gain(v: dict, rule: str) -> str:
            g = v["all_seeds"][f"gain_{rule}"]
            return f"{100 * g['mean']:+.2f} [{100 * g['ci'][0]:+.2f}, {100 * g['ci'][1]:+.2f}]"

        for v in settings:
            lines.append(
                f"| {v['pool']} | {v['top']} | {v['reseeds']} | {v['extra_trainings']} | {cell(v, 'no_reseed')} | "
                f"{cell(v, 'with_selection_seed')} | {cell(v, 'fresh_only')} | {gain(v, 'with_selection_seed')} | "
                f"{gain(v, 'fresh_only')} | {cell(v, 'oracle')} |"
            )
    return "\n".join(lines) + "\n"


def regret_curves(bench: Bench, sims: list[dict[str, Any]], points: int = 40) -> dict[str, Any]:
    """IQM and 95 % CI of validation and test regret on a grid of epochs consumed, per setting."""
    import numpy as np

    groups: dict[str, list[dict[str, Any]]] = {}
    for s in sims:
        groups.setdefault(_setting(s), []).append(s)
    out: dict[str, Any] = {}
    for key, group in groups.items():
        top = max(s["epochs"] for s in group)
        grid = sorted({int(round(x)) for x in np.linspace(1, top, points)})
        regs = [regret_at(bench, s, grid) for s in group]
        curve = {"epochs": grid}
        for kind in ("val", "test"):
            cols = list(zip(*[r[kind] for r in regs]))
            mids, los, his = [], [], []
            for col in cols:
                vals = [v for v in col if not math.isnan(v)]
                if len(vals) < max(2, len(col) // 2):
                    mids.append(math.nan)
                    los.append(math.nan)
                    his.append(math.nan)
                    continue
                mids.append(iqm(vals))
                lo, hi = bootstrap_ci(vals, n=500)
                los.append(lo)
                his.append(hi)
            curve[kind] = {"iqm": mids, "lo": los, "hi": his}
        out[key] = curve
    return out


def plot(bench: Bench, report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    default_gap = bench.best_test() - bench.test(bench.default_key())
    settings = sorted({tuple(k.split("|")[1:]) for k in curves})
    for trials, conc, sched in settings:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key, curve in sorted(curves.items()):
            sampler, *rest = key.split("|")
            if tuple(rest) != (trials, conc, sched):
                continue
            for ax, kind in zip(axes, ("val", "test")):
                c = curve[kind]
                y = [100 * v for v in c["iqm"]]
                ax.plot(curve["epochs"], y, label=sampler)
                ax.fill_between(curve["epochs"], [100 * v for v in c["lo"]], [100 * v for v in c["hi"]], alpha=0.2)
        axes[1].axhline(100 * default_gap, color="k", ls="--", lw=1, label="paper default")
        for ax, kind in zip(axes, ("validation", "test")):
            ax.set_xlabel("epochs consumed (all trials)")
            ax.set_ylabel(f"{kind} regret (score points)")
            ax.set_title(f"{kind} regret, {trials} trials, concurrency {conc}, {sched}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"regret_n{trials}_c{conc}_{sched}.png", dpi=90)
        plt.close(fig)
    agree = report["table_analysis"].get("rung_agreement", {})
    if agree:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for group, by_rung in agree.items():
            rungs = sorted(int(r) for r in by_rung if r != "n")
            ax.plot(rungs, [by_rung[str(r)] for r in rungs], marker="o", label=f"{group} (n={by_rung['n']})")
        ax.set_xlabel("epoch of the rung")
        ax.set_ylabel("Spearman with the final validation score")
        ax.set_title("How well a rung ranks configurations")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "rung_agreement.png", dpi=90)
        plt.close(fig)


# ------------------------------------------------------------------------------------------------
# The simulator against the real driver
# ------------------------------------------------------------------------------------------------


def driver_sequence(study_db: Path) -> list[dict[str, Any]]:
    """The trial sequence of a real search from its Optuna study: number, params, state, intermediate values."""
    import optuna

    storage = f"sqlite:///{study_db}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    return [
        {"number": t.number, "params": t.params, "state": t.state.name, "steps": sorted(t.intermediate_values)}
        for t in study.get_trials(deepcopy=False)
    ]


def check_driver(table: str, runs: int, trials: int | None = None, sampler: str = "tpe") -> list[dict[str, Any]]:
    """``runs`` searches through ``search/run.py --replay`` (concurrency 1, sampler seed = run) against the
    simulator with the same sampler and seed: same sampled values, same Optuna states, in the same order."""
    import subprocess
    import tempfile

    table = str(Path(table).resolve())  # the driver runs in a temporary folder: a relative path would not resolve
    bench = _bench(table)
    n = trials or bench.budget.num_samples
    out = []
    for seed in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable, str(REPO / "search" / "run.py"), "--space", bench.space.name, "--replay", table,
                "--budget", "quick", "--num-samples", str(n), "--max-concurrent", "1", "--seed", str(seed),
                "--name", "check", "--storage", f"{tmp}/ray", "--mlflow-uri", f"sqlite:///{tmp}/mlflow.db",
                "--no-final-eval", "--reseeds", "0", "--verbose", "0", "--sampler", sampler,
            ]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            if done.returncode != 0:
                raise RuntimeError(f"driver run failed: {done.stderr[-2000:]}")
            real = driver_sequence(Path(tmp) / "ray" / "check" / "optuna.db")
        sim = simulate(bench, sampler, seed, n, 1, True)
        sim_seq = [(t["params"], "PRUNED" if t["state"] != "COMPLETE" else "COMPLETE") for t in sim["sequence"]]
        real_seq = [(t["params"], t["state"]) for t in real]
        out.append({"seed": seed, "trials": n, "same": sim_seq == real_seq, "states": [s for _, s in real_seq]})
    return out


if __name__ == "__main__":
    sys.exit(main())
