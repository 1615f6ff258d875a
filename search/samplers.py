"""The samplers of ``--sampler``, in one table: the command line's choices, the refusal under ASHA, the
factory and the study benchmarks all read it. Light to import (no Optuna until a sampler is built).

``with_asha``: whether the sampler is offered under ASHA. TPE (and the prior-guided TPE) learn from trials
ASHA stopped early (PRUNED with their intermediate values); GP and CMA-ES learn from trials trained to the full
budget only. GP is allowed anyway: at 32 trials it was the one sampler ahead of random search under ASHA on
the study's table (docs/search-study.md, "Beating random search"); CMA-ES ended behind it there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Sampler", "SAMPLER_TABLE", "SAMPLERS", "asha_refusal"]


@dataclass(frozen=True)
class Sampler:
    name: str
    learns_from_stopped: bool  # learns from trials ASHA stopped early, not only from full-budget ones
    with_asha: bool  # offered under ASHA
    needs_priors: bool  # follows the space's priors (refused without them)
    build: Callable  # (seed, startup trials, tpe settings, priors, num_samples) -> optuna sampler
    about: str


def _tpe(seed, startup, tpe_kwargs, priors, num_samples):
    import optuna

    return optuna.samplers.TPESampler(**tpe_kwargs)


def _pibo(seed, startup, tpe_kwargs, priors, num_samples):
    from search.pibo import PriorTPESampler

    return PriorTPESampler(priors=priors or {}, beta=max(1.0, num_samples / 10), **tpe_kwargs)


def _gp(seed, startup, tpe_kwargs, priors, num_samples):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)


def _cmaes(seed, startup, tpe_kwargs, priors, num_samples):
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)


def _random(seed, startup, tpe_kwargs, priors, num_samples):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLER_TABLE: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("tpe", True, True, False, _tpe, "multivariate TPE (the default)"),
        Sampler("pibo", True, True, True, _pibo, "TPE guided by the space's priors (search/pibo.py)"),
        Sampler("gp", False, True, False, _gp, "Gaussian process"),
        Sampler("cmaes", False, False, False, _cmaes, "CMA-ES (categorical parameters sampled independently)"),
        Sampler("random", True, True, False, _random, "random search"),
    )
}
SAMPLERS = tuple(SAMPLER_TABLE)


def asha_refusal(sampler: str, scheduler: str) -> str | None:
    """The one line refusing ``sampler`` under ``scheduler`` (None: allowed)."""
    s = SAMPLER_TABLE[sampler]
    if scheduler != "asha" or s.with_asha:
        return None
    usable = " or ".join(n for n, t in SAMPLER_TABLE.items() if t.with_asha and not t.needs_priors)
    return (
        f"--sampler {sampler} learns only from trials trained to the full budget, and ASHA stops most before it "
        f"(docs/search-study.md): use --scheduler none with {sampler}, or --sampler {usable} with ASHA"
    )
