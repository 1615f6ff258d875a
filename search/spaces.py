"""Search spaces as YAML files: parameters, conditions, warm-start points and budgets, validated once.

``--space sysu`` reads ``search/spaces/sysu.yaml``; ``--space path/to/mine.yaml`` reads that file. A space
file (the shipped ones are commented examples)::

    dataset: sysu                       # a registered benchmark (sysu | regdb | llcm): the one searched
    base: sysu.yaml                     # the benchmark's paper setting (next to this file, else experiments/)
    quick: {base: smoke.yaml, set: {eval.trials: 3}}   # the CPU-sized variant of --budget quick
    budget:
      full:  {epochs: 80, eval_every: 5, grace: 20, trials: 32, reduction_factor: 3}
      quick: {epochs: 6, eval_every: 2, grace: 2, trials: 6}
    parameters:
      loss.mmd_intra_weight: {type: float, low: 0.0, high: 1.0}
      optim.lr: {type: float, low: 0.25, high: 4.0, log: true, scale: base}   # x the base config's optim.lr
      optim.schedule: {type: categorical, choices: [step, cosine]}
      optim.milestone_shares.0: {type: float, low: 0.2, high: 0.7, when: {optim.schedule: step}}
    warm_start:
      - {loss.mmd_intra_weight: 0.4}    # other parameters take the base config's values

A parameter is named by the config field it sets (``loss.mmd_intra_weight``, ``optim.lr``, any field of
``aminet.config``); ``loss.mmd_multipliers`` takes the name of a bandwidth set and the milestones are searched
as ``optim.milestone_shares.0`` / ``.1`` (``trainables.params``). Types: ``float`` (``low``, ``high``, optional ``step`` or
``log``), ``int`` (likewise), ``categorical`` (``choices``). ``scale: base`` makes ``low``/``high``
multiples of the base config's value of the field. ``when: {other: value}`` (or a list of values) samples a
parameter only when an earlier parameter took that value. ``prior: {centre: x, strength: s}`` (numeric) or
``prior: {choice: c, weight: w}`` (categorical) says where the user believes good values lie; ``--sampler
pibo`` follows it (``search/pibo.py``), the other samplers ignore it. A warm-start point lists some parameters; the
others take the base config's value where it lies in their range (else Optuna samples them), so the first
point of the shipped spaces is the paper's configuration. Every error is one line naming the file and the
key. The base config is the benchmark's YAML with ``data.purpose=search`` (validation identities held
out; the test gallery is never seen during a search).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

import experiments
from aminet.config import Config, ConfigError, apply_overrides, load_yaml_text, read_yaml_tree, set_dotted
from search import priors
from trainables import params as sample_params

__all__ = [
    "SearchSpace",
    "Budget",
    "Param",
    "DefineByRun",
    "SpaceError",
    "SPACES_DIR",
    "EXPERIMENTS",
    "shipped_spaces",
    "get_space",
    "load_space",
    "load_base",
]

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = Path(experiments.__file__).resolve().parent  # the installed configs (the package's YAML files)
SPACES_DIR = Path(__file__).resolve().parent / "spaces"


class SpaceError(ValueError):
    """A search-space file that cannot be used: one line naming the file and the key."""


@dataclass(frozen=True)
class Budget:
    epochs: int
    eval_every: int
    grace_period: int  # epochs before ASHA may stop a trial (>= a quarter of training)
    num_samples: int
    reduction_factor: int = 3


@dataclass(frozen=True)
class Param:
    """One searched parameter (see the module doc for the YAML form)."""

    name: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    scale_base: bool = False  # low/high are multiples of the base config's value
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (earlier parameter, values it must take)
    prior: Any = None  # search.priors.Prior: the user's belief about where good values lie (None: none)

    def resolved(self, base: Config) -> Param:
        """The parameter with ``scale: base`` turned into absolute bounds for ``base``."""
        if not self.scale_base:
            return self
        ref = float(sample_params.base_value(self.name, base))
        low, high = self.low * ref, self.high * ref
        if self.type == "int":
            low, high = math.ceil(low), math.floor(high)
        prior = None if self.prior is None else priors.scaled(self.prior, ref, low, high)
        return Param(self.name, self.type, low, high, self.step, self.log, self.choices, False, self.when, prior)

    def active(self, values: dict[str, Any]) -> bool:
        return all(name in values and values[name] in allowed for name, allowed in self.when)

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and float(value) != int(value):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-6
        return True

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class DefineByRun:
    """The space as an Optuna define-by-run function; picklable (Ray checkpoints the searcher with pickle)."""

    params: tuple[Param, ...]  # resolved against the base config

    def __call__(self, trial) -> None:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: Path
    dataset: str
    base_file: Path
    quick_file: Path
    budget: Budget
    quick_budget: Budget
    params: tuple[Param, ...]
    anchors: tuple[dict[str, Any], ...]  # warm-start points as written (completed from the base later)
    quick_overrides: dict[str, Any] = field(default_factory=dict)

    def base(self, quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> Config:
        """The search's base config: the benchmark's YAML, purpose=search, the budget, then ``overrides``."""
        b = self.budget_for(quick)
        raw = load_base(self.quick_file if quick else self.base_file)
        fixed = {
            "data.dataset": self.dataset,
            "data.purpose": "search",
            "train.epochs": b.epochs,
            "train.eval_every": b.eval_every,
            **(self.quick_overrides if quick else {}),
        }
        for key, value in fixed.items():
            set_dotted(raw, key, value)
        apply_overrides(raw, list(overrides))
        return Config.from_dict(raw)

    def define_by_run(self, base: Config) -> DefineByRun:
        """The Optuna define-by-run function (suggest calls only; no work)."""
        return DefineByRun(tuple(p.resolved(base) for p in self.params))

    def priors(self, base: Config) -> dict[str, Any]:
        """The parameters' priors on their resolved ranges (name -> ``search.priors.Prior``; empty: none)."""
        return {r.name: r.prior for r in (p.resolved(base) for p in self.params) if r.prior is not None}

    def warm_start(self, base: Config) -> list[dict[str, Any]]:
        """The warm-start points, each completed with the base config's values (see the module doc)."""
        params = [p.resolved(base) for p in self.params]
        points = []
        for anchor in self.anchors:
            point: dict[str, Any] = {}
            for p in params:
                if not p.active(point):
                    continue
                value = anchor.get(p.name, sample_params.base_value(p.name, base))
                if value is not None and p.contains(value):
                    point[p.name] = copy.deepcopy(value)
            points.append(point)
        return points

    def first_rung_conflicts(self, base: Config, epochs: int, grace: int) -> list[str]:
        """Why the first ASHA rung (after ``grace`` of ``epochs`` epochs) would compare schedules at different
        phases, one line each (empty: neutral): a warm-up the space allows that lasts until the rung (the
        model never trained at its peak lr), or a step milestone that decays the lr before it (short-horizon
        bias: a decayed schedule scores higher early and survives the cut for that reason alone). Epochs are
        rounded as the config rounds shares (``OptimConfig.warmup_epochs`` / ``milestone_epochs``)."""
        params = {p.name: p.resolved(base) for p in self.params}
        first = sample_params.MILESTONES[0]
        out = []
        w = params["optim.warmup_share"].high if "optim.warmup_share" in params else base.optim.warmup_share
        if int(round(w * epochs)) >= grace:
            out.append(
                f"a warm-up of {w:g} of training ({int(round(w * epochs))} of {epochs} epochs) lasts until the rung at "
                f"epoch {grace}"
            )
        step = (
            "optim.schedule" not in params
            and base.optim.schedule == "step"
            or ("optim.schedule" in params and "step" in params["optim.schedule"].choices)
        )
        if first in params:
            m = params[first].low
        elif step and base.optim.milestone_shares:
            m = base.optim.milestone_shares[0]
        else:
            m = None
        if step and m is not None and int(round(m * epochs)) < grace:
            out.append(
                f"a first step milestone at {m:g} of training (epoch {int(round(m * epochs))} of {epochs}) decays the "
                f"lr before the rung at epoch {grace}"
            )
        return out

    def budget_for(self, quick: bool) -> Budget:
        return self.quick_budget if quick else self.budget

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def signature(self) -> dict[str, str]:
        """What each parameter samples (name -> its type, range, scale and condition as text): what a resumed
        search must find unchanged, since the study's trials were sampled from it."""
        out = {}
        for p in self.params:
            spec = f"{p.type}"
            spec += f" {list(p.choices)}" if p.type == "categorical" else f" [{p.low}, {p.high}]"
            spec += f" step {p.step}" if p.step else ""
            spec += " log" if p.log else ""
            spec += " x base" if p.scale_base else ""
            spec += f" when {dict((k, list(v)) for k, v in p.when)}" if p.when else ""
            out[p.name] = spec
        return out


def shipped_spaces() -> list[str]:
    """The names of the spaces shipped under ``search/spaces/``."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def get_space(name_or_path: str) -> SearchSpace:
    """A shipped space by name (``sysu``) or a space file by path; ``SpaceError`` (one line) otherwise."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.is_file():
            raise SpaceError(f"--space {name_or_path}: file not found")
        return load_space(path)
    if name_or_path not in shipped_spaces():
        raise SpaceError(
            f"--space {name_or_path!r}: choose one of {shipped_spaces()} or give a path to a space YAML file"
        )
    return load_space(SPACES_DIR / f"{name_or_path}.yaml")


def load_base(path: Path) -> dict[str, Any]:
    """An experiments YAML as a plain dict, ``extends`` resolved, runner-only keys dropped."""
    data = read_yaml_tree(path)
    for key in ("name", "presets", "sweep"):
        data.pop(key, None)
    return data


# ------------------------------------------------------------------------------------------------
# Reading and validating a space file
# ------------------------------------------------------------------------------------------------

_TOP = {"dataset", "base", "quick", "budget", "parameters", "warm_start", "description"}
_PARAM_KEYS = {"type", "low", "high", "step", "log", "choices", "scale", "when", "prior"}
_BUDGET_KEYS = {"epochs", "eval_every", "grace", "trials", "reduction_factor"}


def load_space(path: Path) -> SearchSpace:
    path = Path(path).resolve()
    where = str(path)

    def fail(key: str, msg: str) -> SpaceError:
        return SpaceError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")

    raw = _read_space(path, fail)
    base_file, quick_file, quick_set = _config_files(raw, path, fail)
    budgets = raw["budget"]
    if not isinstance(budgets, dict) or "full" not in budgets:
        raise fail("budget", "expected full: {...} and optionally quick: {...}")
    full = _budget(budgets["full"], "budget.full", fail)
    quick_budget = _budget(budgets.get("quick", budgets["full"]), "budget.quick", fail)

    plist = raw["parameters"]
    if not isinstance(plist, dict) or not plist:
        raise fail("parameters", "expected a non-empty mapping name -> {type: ...}")
    params: list[Param] = []
    for name, spec in plist.items():
        params.append(_param(str(name), spec, params, fail))
    anchors = _warm_start(raw.get("warm_start") or [], params, fail)

    space = SearchSpace(
        name=path.stem,
        path=path,
        dataset=raw["dataset"],
        base_file=base_file,
        quick_file=quick_file,
        budget=full,
        quick_budget=quick_budget,
        params=tuple(params),
        anchors=tuple(anchors),
        quick_overrides=dict(quick_set),
    )
    for quick_flag, key in ((False, "base"), (True, "quick")):  # the bases and every corner must be configs
        try:
            base = space.base(quick=quick_flag)
        except ConfigError as exc:
            raise fail(key, str(exc)) from None
        _check_against(space, base, fail)
    return space


def _read_space(path: Path, fail) -> dict[str, Any]:
    """The space file as a mapping with the required keys and a known dataset."""
    try:
        raw = load_yaml_text(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise fail("", f"not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(raw, dict):
        raise fail("", "expected a mapping with dataset, base, budget, parameters")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise fail(unknown[0], f"unknown key; known: {sorted(_TOP)}")
    for key in ("dataset", "base", "budget", "parameters"):
        if key not in raw:
            raise fail(key, "missing")
    from aminet.data import registry

    if raw["dataset"] not in registry.names():
        raise fail("dataset", f"{raw['dataset']!r}: expected one of {list(registry.names())}")
    return raw


def _config_files(raw: dict[str, Any], path: Path, fail) -> tuple[Path, Path, dict]:
    """The base config file, the quick budget's base file and its overrides."""

    def config_file(key: str, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise fail(key, f"expected a YAML file name, got {value!r}")
        for candidate in (path.parent / value, EXPERIMENTS / value):
            if candidate.is_file() and candidate.resolve() != path:  # a space named like its base file
                return candidate.resolve()
        raise fail(key, f"{value}: not found next to the space file or under experiments/")

    base_file = config_file("base", raw["base"])
    quick = raw.get("quick") or {}
    if not isinstance(quick, dict) or set(quick) - {"base", "set"}:
        raise fail("quick", "expected {base: <yaml>, set: {dotted.key: value}}")
    quick_file = config_file("quick.base", quick.get("base", raw["base"]))
    quick_set = quick.get("set") or {}
    if not isinstance(quick_set, dict):
        raise fail("quick.set", "expected a mapping of dotted config keys to values")
    return base_file, quick_file, quick_set


def _warm_start(anchors: Any, params: list[Param], fail) -> list[dict]:
    """The space's warm-start points, each value a parameter of the space inside its range."""
    if not isinstance(anchors, list) or not all(isinstance(a, dict) for a in anchors):
        raise fail("warm_start", "expected a list of mappings parameter -> value")
    by_name = {p.name: p for p in params}
    for i, anchor in enumerate(anchors):
        for name, value in anchor.items():
            key = f"warm_start[{i}].{name}"
            if name not in by_name:
                raise fail(key, "not a parameter of this space")
            p = by_name[name]
            if not p.scale_base and not p.contains(value):
                raise fail(key, f"{value!r} is outside the parameter's range")
    return anchors


def _budget(spec: Any, key: str, fail) -> Budget:
    if not isinstance(spec, dict):
        raise fail(key, "expected {epochs, eval_every, grace, trials}")
    unknown = sorted(set(spec) - _BUDGET_KEYS)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", f"unknown key; known: {sorted(_BUDGET_KEYS)}")
    for k in ("epochs", "eval_every", "grace", "trials"):
        if k not in spec:
            raise fail(f"{key}.{k}", "missing")
    for k, v in spec.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise fail(f"{key}.{k}", f"expected an integer >= 1, got {v!r}")
    if spec["grace"] > spec["epochs"]:
        raise fail(f"{key}.grace", f"{spec['grace']} is more than epochs ({spec['epochs']})")
    if spec["eval_every"] > spec["epochs"]:
        raise fail(f"{key}.eval_every", f"{spec['eval_every']} is more than epochs ({spec['epochs']})")
    if spec.get("reduction_factor", 3) < 2:
        raise fail(f"{key}.reduction_factor", "must be >= 2")
    return Budget(
        epochs=spec["epochs"],
        eval_every=spec["eval_every"],
        grace_period=spec["grace"],
        num_samples=spec["trials"],
        reduction_factor=spec.get("reduction_factor", 3),
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _param(name: str, spec: Any, earlier: list[Param], fail) -> Param:
    key = f"parameters.{name}"
    if not sample_params.is_known(name):
        old = " (the cfg. prefix is gone: name the field itself)" if name.startswith("cfg.") else ""
        raise fail(
            key,
            f"not a config field (loss.mmd_intra_weight, optim.lr, ...) or {' / '.join(sample_params.MILESTONES)}{old}",
        )
    if not isinstance(spec, dict):
        raise fail(key, "expected a mapping {type: float|int|categorical, ...}")
    unknown = sorted(set(spec) - _PARAM_KEYS)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", f"unknown key; known: {sorted(_PARAM_KEYS)}")
    kind = spec.get("type")
    if kind not in ("float", "int", "categorical"):
        raise fail(f"{key}.type", f"{kind!r}: expected float, int or categorical")
    when = _conditions(key, spec.get("when") or {}, earlier, fail)
    bare = {k: v for k, v in spec.items() if k != "prior"}
    if kind == "categorical":
        param = _categorical(name, key, bare, when, fail)
    else:
        param = _numeric(name, key, kind, bare, when, fail)
    if spec.get("prior") is None:
        return param
    return replace(param, prior=priors.parse_prior(spec["prior"], param, fail))


def _categorical(name: str, key: str, spec: dict, when: list, fail) -> Param:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise fail(f"{key}.choices", "expected a non-empty list")
    if len(set(map(repr, choices))) != len(choices):
        raise fail(f"{key}.choices", "has duplicates")
    extra = sorted(set(spec) - {"type", "choices", "when"})
    if extra:
        raise fail(f"{key}.{extra[0]}", "not used by a categorical parameter")
    return Param(name, "categorical", choices=tuple(choices), when=tuple(when))


def _numeric(name: str, key: str, kind: str, spec: dict, when: list, fail) -> Param:
    for k in ("low", "high"):
        if not _number(spec.get(k)):
            raise fail(f"{key}.{k}", f"expected a number, got {spec.get(k)!r}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log", False))
    if low > high:
        raise fail(key, f"low ({low}) is above high ({high})")
    if step is not None and (not _number(step) or step <= 0):
        raise fail(f"{key}.step", f"expected a number > 0, got {step!r}")
    if log and step is not None:
        raise fail(f"{key}.log", "log and step cannot be combined")
    if log and low <= 0:
        raise fail(f"{key}.low", "must be > 0 on a log scale")
    if kind == "int" and not all(float(v) == int(v) for v in (low, high, step or 1)):
        raise fail(key, "an int parameter needs integer low, high and step")
    scale = spec.get("scale")
    if scale not in (None, "base"):
        raise fail(f"{key}.scale", f"{scale!r}: the only scale is 'base' (bounds are multiples of the base value)")
    if scale == "base" and sample_params.target_field(name) is None:
        raise fail(f"{key}.scale", f"{name} sets no single config field to scale by")
    return Param(
        name,
        kind,
        float(low) if kind == "float" else int(low),
        float(high) if kind == "float" else int(high),
        step,
        log,
        scale_base=scale == "base",
        when=tuple(when),
    )


def _conditions(key: str, spec: dict, earlier: list[Param], fail) -> list[tuple[str, tuple[Any, ...]]]:
    """A parameter's ``when``: each names a parameter listed before it and values that one can take."""
    when: list[tuple[str, tuple[Any, ...]]] = []
    prior = {p.name: p for p in earlier}
    for other, allowed in spec.items():
        if other not in prior:
            raise fail(f"{key}.when.{other}", "must name a parameter listed before this one")
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        bad = [v for v in values if not prior[other].scale_base and not prior[other].contains(v)]
        if bad:
            raise fail(f"{key}.when.{other}", f"{bad[0]!r} is not a value {other} can take")
        when.append((str(other), values))
    return when


def _check_against(space: SearchSpace, base: Config, fail) -> None:
    """Each parameter resolves against the base config, and its range corners give valid configs."""
    for p in space.params:
        key = f"parameters.{p.name}"
        try:
            r = p.resolved(base)
            if r.log and not r.low > 0:  # scale: base on a field whose base value is 0 (or negative)
                raise ValueError(
                    f"log: true with scale: base needs a base value > 0; the base config's "
                    f"{p.name} is {sample_params.base_value(p.name, base)!r}"
                )
            if r.type != "categorical" and r.low > r.high:
                raise ValueError(f"scale: base gives low {r.low:g} above high {r.high:g} (a negative base value)")
            corners = list(r.choices) if r.type == "categorical" else [r.low, r.high]
            for value in corners:
                sample_params.apply_params(base, {p.name: value})
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(key, " ".join(str(exc.args[0] if exc.args else exc).split())) from None
