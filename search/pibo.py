"""TPE guided by the user's priors (``search/priors.py``) the way piBO guides Bayesian optimisation.

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

from collections.abc import Mapping
from typing import Any

import numpy as np
from optuna.samplers import TPESampler

from search.priors import Prior

__all__ = ["PriorTPESampler"]


class PriorTPESampler(TPESampler):
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
        """Whether the trials so far support the prior: the good ones lie where the prior is denser than the
        bad ones do. A misleading prior fails this test once the start-up trials (half drawn from it, half
        uniform) have shown that good results lie elsewhere; it is then switched off for this proposal
        (PriorBand's principle of weighing the prior by how its suggestions fare against the rest; piBO's decay
        alone is too slow where the prior's log density, summed over several parameters, outweighs TPE's ratio
        for many trials).

        Good and bad are judged at the deepest rung of evidence (PriorBand's rule too): the latest step that
        at least ``EVIDENCE_MIN`` trials reached, each trial ranked by its value at that step. Without early
        stopping that is the final result; under ASHA it is the deepest rung with enough survivors, not the
        first rung, whose low-fidelity noise can make a misleading prior look good."""
        if not any(k in self._priors for k in search_space) or len(done) < 2:
            return True
        ranked = self._deepest_evidence(study, done)
        if len(ranked) < 2:
            return True
        n_good = max(1, int(np.ceil(self.EVIDENCE_SHARE * len(ranked))))
        below, above = ranked[:n_good], ranked[n_good:]

        good = np.asarray([self.prior_log_density(t.params, search_space) for t in below])
        bad = np.asarray([self.prior_log_density(t.params, search_space) for t in above])
        spread = np.sqrt(good.var() / good.size + bad.var() / bad.size)
        return bool(good.mean() - bad.mean() > self.EVIDENCE_Z * spread)

    EVIDENCE_MIN = 6  # trials a rung must hold before its ranking is the evidence
    EVIDENCE_SHARE = 0.25  # the best quarter of them are "good"
    EVIDENCE_Z = 1.0  # how many standard errors the good trials' prior density must exceed the bad ones' by

    def _deepest_evidence(self, study, done):
        """The trials, best first, at the deepest step that ``EVIDENCE_MIN`` trials reached (or, before any
        did, the step most trials reached), each trial ranked by its value at that step."""
        from optuna.study import StudyDirection

        def last_value_at(t, step):
            if t.intermediate_values and step in t.intermediate_values:
                return t.intermediate_values[step]
            return t.value if t.value is not None and not t.intermediate_values else None

        steps: dict[int, int] = {}
        for t in done:
            for s in t.intermediate_values or {-1: None}:
                steps[s] = steps.get(s, 0) + 1
        deep = [s for s, n in steps.items() if n >= self.EVIDENCE_MIN]
        step = max(deep) if deep else max(steps, key=lambda s: (steps[s], s))
        scored = [(v, t) for t in done if (v := last_value_at(t, step)) is not None and np.isfinite(v)]
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        scored.sort(key=lambda vt: sign * vt[0])
        return [t for _, t in scored]

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
