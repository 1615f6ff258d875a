"""Parameter importances of a search's study, reported only from enough evidence.

Optuna's importances (PED-ANOVA, its default evaluator) compare the parameters of the best COMPLETE trials with
those of all complete trials. On a handful of points that is noise, and ASHA leaves few trials complete: below
MIN_TRIALS_FOR_IMPORTANCE complete trials nothing is reported, and from it on the best set holds at least
MIN_TOP_TRIALS trials (docs/design.md, "Parameter importances only from enough evidence").
"""

from __future__ import annotations

import warnings

import optuna
from optuna.importance import BaseImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

MIN_TRIALS_FOR_IMPORTANCE = 10
MIN_TOP_TRIALS = 5  # Optuna's advice for PED-ANOVA: at least 5 trials above the target quantile


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def importance_withheld(study: optuna.Study) -> str:
    """Why the study's parameter importances are not reported ("" when they are): too few complete trials."""
    n = _complete(study)
    if n >= MIN_TRIALS_FOR_IMPORTANCE:
        return ""
    return f"{n} trial(s) trained to the full budget; importances need at least {MIN_TRIALS_FOR_IMPORTANCE}"


def parameter_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """The study's parameter importances (normalised to sum 1) and "", or {} and why they are not reported.

    PED-ANOVA with the top quantile widened from Optuna's 0.1 to hold at least MIN_TOP_TRIALS complete trials
    (at 10 complete trials the default's top set is one trial). Deterministic: a summary logged again (a
    resumed search) reports the same numbers.
    """
    why_not = importance_withheld(study)
    if why_not:
        return {}, why_not
    evaluator = PedAnovaImportanceEvaluator(target_quantile=max(0.1, MIN_TOP_TRIALS / _complete(study)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            imp = get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # noqa: BLE001 - e.g. a parameter absent from some complete trials
        return {}, " ".join(str(exc).split())[:200]
    return {k: float(v) for k, v in imp.items()}, ""


class FittedImportances(BaseImportanceEvaluator):
    """An importance evaluator that returns importances already computed, so a plot draws those numbers.

    Args:
        importances: parameter name -> importance, as ``parameter_importances`` returns them.
    """

    def __init__(self, importances: dict[str, float]) -> None:
        self.importances = dict(importances)

    def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
        return dict(self.importances) if params is None else {k: self.importances[k] for k in params}
