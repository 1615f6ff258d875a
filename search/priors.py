"""User priors over a search space, and TPE guided by them the way piBO guides Bayesian optimisation.

**A prior** says where a user believes good configurations lie (a space file's ``prior:`` key per
parameter, ``search/spaces.py``):

* a float or int parameter: ``prior: {centre: 0.4, strength: 0.5}``. The belief is a normal density on the
  parameter's unit range (the range scaled to [0, 1], in log space for a ``log`` parameter), centred on
  ``centre``, with standard deviation ``0.5 * (1 - strength)`` of the range, truncated to the range:
  strength 0 is a broad bump (sd of half the range), 0.5 a medium one (a quarter), 0.75 a confident one (an
  eighth). These are NePS's low / medium / high prior confidences (the library of the PriorBand authors).
  With ``scale: base`` the centre is a multiple of the base config's value, like ``low`` and ``high``.
* a categorical parameter: ``prior: {choice: paper5, weight: 0.6}``: that choice has probability 0.6, the
  others share the rest equally.

**The sampler** (``--sampler pibo``, ``PriorTPESampler``) follows the principle of piBO (Hvarfner et al.,
ICLR 2022): the acquisition function is multiplied by the prior raised to a power ``beta / n`` that decays
with the number ``n`` of observed trials, so a good prior speeds the search up and a wrong one is forgotten.
On TPE, whose acquisition is ``l(x) / g(x)`` (the density of good over bad trials, maximised over candidates),
that is ``log l(x) - log g(x) + (beta / n) log pi(x)``; the candidates are drawn from ``l`` as TPE draws them
and, as many again, from the prior (piBO maximises the weighted acquisition over the whole space; TPE only
looks where it samples). The start-up trials are drawn from the prior instead of uniformly (piBO's initial
design; here every other start-up trial, the rest uniform, so the trials can tell a good prior from a
misleading one). Before each model-based proposal the prior must earn its weight: TPE's good trials must lie
where the prior is denser than its bad trials do (``_evidence_for_prior``), else the proposal is TPE's own.
``beta`` defaults to a tenth of the search's trials (at least 1), piBO's setting of ``beta = N / 10``
for a budget of ``N`` evaluations. Everything else is Optuna's TPE as the driver builds it: multivariate,
grouped, the constant liar, and the PRUNED trials an early-stopping scheduler leaves behind ranked by how far
they got, so it learns under ASHA exactly as TPE does. Parameters without a prior are sampled as TPE samples
them (a uniform prior contributes a constant, so nothing changes for them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prior", "parse_prior", "PriorTPESampler", "sd_of"]

_SQRT2 = math.sqrt(2.0)


def sd_of(strength: float) -> float:
    """The prior's standard deviation as a share of the unit range."""
    return 0.5 * (1.0 - float(strength))


@dataclass(frozen=True)
class Prior:
    """One parameter's prior over its resolved range (``search.spaces.Param`` with absolute bounds)."""

    name: str
    type: str  # float | int | categorical
    centre: float | None = None  # float / int: the believed optimum (absolute, after scale: base)
    strength: float = 0.5
    choice: Any = None  # categorical: the preferred choice
    weight: float = 0.5
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    # ---- the unit range ---------------------------------------------------------------------------
    def unit(self, values: np.ndarray) -> np.ndarray:
        """Values (absolute) to the unit range."""
        v = np.asarray(values, dtype=float)
        lo, hi = float(self.low), float(self.high)
        if self.log:
            v, lo, hi = np.log(v), math.log(lo), math.log(hi)
        return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        lo, hi = float(self.low), float(self.high)
        if self.log:
            return np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        return lo + u * (hi - lo)

    # ---- density -----------------------------------------------------------------------------------
    def log_pdf(self, values: np.ndarray) -> np.ndarray:
        """Log density of the prior at ``values``: absolute values for a numeric parameter (on the unit
        range: a constant Jacobian, irrelevant to an arg max), choice indices for a categorical one."""
        if self.type == "categorical":
            idx = np.asarray(values, dtype=int)
            k = len(self.choices)
            pref = self.choices.index(self.choice)
            p_other = (1.0 - self.weight) / (k - 1) if k > 1 else 1.0
            p = np.where(idx == pref, self.weight, p_other)
            return np.log(np.maximum(p, 1e-12))
        sd = max(sd_of(self.strength), 1e-3)
        mu = float(self.unit(np.array([self.centre]))[0])
        z = (self.unit(values) - mu) / sd
        mass = 0.5 * (math.erf((1.0 - mu) / (sd * _SQRT2)) - math.erf((0.0 - mu) / (sd * _SQRT2)))
        return -0.5 * z**2 - math.log(sd * math.sqrt(2 * math.pi)) - math.log(max(mass, 1e-12))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws from the prior: absolute values (rounded to the grid by the caller's distribution), or choice
        indices for a categorical parameter."""
        if self.type == "categorical":
            k = len(self.choices)
            pref = self.choices.index(self.choice)
            p = np.full(k, (1.0 - self.weight) / (k - 1) if k > 1 else 1.0)
            p[pref] = self.weight if k > 1 else 1.0
            return rng.choice(k, size=size, p=p / p.sum())
        sd = max(sd_of(self.strength), 1e-3)
        mu = float(self.unit(np.array([self.centre]))[0])
        out = np.empty(size)
        filled = 0
        while filled < size:  # rejection from the normal: the truncation keeps at least ~30 % of its mass
            draw = rng.normal(mu, sd, size=2 * (size - filled) + 8)
            draw = draw[(draw >= 0.0) & (draw <= 1.0)][: size - filled]
            out[filled : filled + len(draw)] = draw
            filled += len(draw)
        return self.from_unit(out)


def parse_prior(spec: Any, param, fail) -> Prior:
    """A parameter's ``prior:`` mapping (see the module doc), checked against the parameter (a
    ``search.spaces.Param``, bounds not yet resolved); ``fail(key, message)`` builds the one-line error."""
    key = f"parameters.{param.name}.prior"
    if not isinstance(spec, Mapping):
        raise fail(key, "expected {centre: number, strength: 0..1} or, categorical, {choice: value, weight: 0..1}")

    def unit_number(name: str, default: float, upper_open: bool) -> float:
        v = spec.get(name, default)
        ok = (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and 0.0 <= v
            and (v < 1.0 if upper_open else v <= 1.0)
        )
        if not ok:
            raise fail(f"{key}.{name}", f"expected a number in [0, 1{')' if upper_open else ']'}, got {v!r}")
        return float(v)

    if param.type == "categorical":
        extra = sorted(set(spec) - {"choice", "weight"})
        if extra:
            raise fail(f"{key}.{extra[0]}", "unknown key; a categorical prior has choice and weight")
        if "choice" not in spec or spec["choice"] not in param.choices:
            raise fail(f"{key}.choice", f"{spec.get('choice')!r} is not one of {list(param.choices)}")
        return Prior(
            param.name,
            "categorical",
            choice=spec["choice"],
            weight=unit_number("weight", 0.5, False),
            choices=tuple(param.choices),
        )
    extra = sorted(set(spec) - {"centre", "strength"})
    if extra:
        raise fail(f"{key}.{extra[0]}", "unknown key; a numeric prior has centre and strength")
    c = spec.get("centre")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
        raise fail(f"{key}.centre", f"expected a number, got {c!r}")
    if not param.low - 1e-12 <= c <= param.high + 1e-12:
        raise fail(f"{key}.centre", f"{c!r} is outside the parameter's range [{param.low}, {param.high}]")
    return Prior(
        param.name,
        param.type,
        centre=float(c),
        strength=unit_number("strength", 0.5, True),
        low=param.low,
        high=param.high,
        log=bool(param.log),
    )


def scaled(prior: Prior, ref: float, low: float, high: float) -> Prior:
    """The prior of a ``scale: base`` parameter on its absolute range: the centre times the base value ``ref``."""
    if prior.type == "categorical":
        return prior
    return Prior(
        prior.name,
        prior.type,
        centre=min(max(float(prior.centre) * ref, low), high),
        strength=prior.strength,
        low=low,
        high=high,
        log=prior.log,
    )


def _sampler_base():
    import optuna

    return optuna.samplers.TPESampler


class PriorTPESampler(_sampler_base()):  # type: ignore[misc]
    """TPE with piBO's prior weighting (see the module doc). ``priors``: parameter name -> ``Prior`` on the
    resolved range; ``beta``: the prior's weight at the first model-based proposal, times the number of
    observations (piBO's ``beta``); the other arguments are ``TPESampler``'s."""

    def __init__(self, *, priors: Mapping[str, Prior], beta: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._priors = dict(priors)
        self._beta = float(beta)
        self._prior_rng = np.random.default_rng(kwargs.get("seed"))
        self._n_obs = 1  # set at each model-based proposal

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._prior_rng = np.random.default_rng()

    # ---- start-up trials: drawn from the prior ------------------------------------------------------
    def sample_independent(self, study, trial, param_name, param_distribution):
        from optuna.trial import TrialState

        prior = self._priors.get(param_name)
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        n = len(study._get_trials(deepcopy=False, states=states, use_cache=True))
        if prior is None or n >= self._n_startup_trials or trial.number % 2 == 1:
            return super().sample_independent(study, trial, param_name, param_distribution)
        return self._draw(prior, param_distribution, 1)[0]

    def _draw(self, prior: Prior, dist, size: int) -> list[Any]:
        """Draws from ``prior`` in ``dist``'s external representation (on its grid, inside its bounds)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        raw = prior.sample(self._prior_rng, size)
        if isinstance(dist, CategoricalDistribution):
            return [dist.choices[int(i)] if prior.choices == tuple(dist.choices) else dist.choices[0] for i in raw]
        out = []
        for v in raw:
            v = min(max(float(v), dist.low), dist.high)
            step = getattr(dist, "step", None)
            if step:
                v = dist.low + round((v - dist.low) / step) * step
                v = min(max(v, dist.low), dist.high)
            if isinstance(dist, IntDistribution):
                v = int(round(v))
            elif isinstance(dist, FloatDistribution):
                v = float(v)
            out.append(v)
        return out

    # ---- model-based proposals: candidates from l(x) and from the prior, acquisition x prior^(beta/n) -----
    def _sample(self, study, trial, search_space):
        from optuna.trial import TrialState

        done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
        self._n_obs = max(1, len(done))
        self._space = search_space
        self._trusted = self._evidence_for_prior(study, done, search_space)
        return super()._sample(study, trial, search_space)

    def prior_log_density(self, params: Mapping[str, Any], search_space) -> float:
        """The prior's log density at a trial's values (the parameters of ``search_space`` it has a prior for)."""
        total = 0.0
        for k, dist in search_space.items():
            if k in self._priors and k in params:
                total += float(self._priors[k].log_pdf(np.asarray([dist.to_internal_repr(params[k])]))[0])
        return total

    def _evidence_for_prior(self, study, done, search_space) -> bool:
        """Whether the trials so far support the prior: the good ones (TPE's own split into good and bad, pruned
        trials ranked as TPE ranks them) lie where the prior is denser than the bad ones do. A misleading prior
        fails this test once the start-up trials (half drawn from it, half uniform) have shown that good
        results lie elsewhere; it is then switched off for this proposal (PriorBand's principle of weighing
        the prior by how its suggestions fare against the rest; piBO's decay alone is too slow where the
        prior's log density, summed over several parameters, outweighs TPE's ratio for many trials)."""
        from optuna.samplers._tpe.sampler import _split_trials, default_gamma

        if not any(k in self._priors for k in search_space) or len(done) < 2:
            return True
        below, above = _split_trials(study, list(done), (self._gamma or default_gamma)(len(done)))
        if not below or not above:
            return True

        def mean(ts):
            return float(np.mean([self.prior_log_density(t.params, search_space) for t in ts]))

        return mean(below) > mean(above)

    def _compute_acquisition_func(self, samples, mpe_below, mpe_above):
        names = [k for k in samples if k in self._priors]
        if not names or not self._trusted:
            return super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        # TPE's own candidates (from l) plus as many from the prior: the union is scored, and the arg max
        # of the union is what _compare must see; so the prior's draws are appended to ``samples`` in place
        size = next(iter(samples.values())).size
        from_l = mpe_below.sample(self._rng.rng, size)  # for the parameters the user has no belief about
        extra = {}
        for k, arr in samples.items():
            dist = self._space[k]
            prior = self._priors.get(k)
            if prior is None:
                extra[k] = from_l[k]
                continue
            drawn = self._draw(prior, dist, size)
            extra[k] = np.asarray([dist.to_internal_repr(v) for v in drawn], dtype=arr.dtype)
        merged = {k: np.concatenate([samples[k], extra[k]]) for k in samples}
        acq = mpe_below.log_pdf(merged) - mpe_above.log_pdf(merged)
        weight = self._beta / self._n_obs
        for k in names:
            acq = acq + weight * self._priors[k].log_pdf(merged[k])
        for k in samples:  # hand the union to _compare (TPESampler._sample calls it with this same dict)
            samples[k] = merged[k]
        return acq
