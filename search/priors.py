"""User priors over a search space.

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

The sampler that follows them, ``--sampler pibo``, is ``search.pibo.PriorTPESampler`` (it needs Optuna;
this module does not, so reading a space file does not import it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prior", "parse_prior", "scaled", "sd_of"]

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
