"""A tabulated benchmark of a search space (pure Python: no Ray, no Optuna, no torch).

Following Syne Tune's blackbox repository and HPOBench's tabular benchmarks: a fixed set of
configurations of a space is trained once (``benchmarks/tabulate_space.py``), and every configuration's
validation curve (the score at every epoch), time per epoch and final test metrics are kept in a small
table. A search is then replayed on the table (``search/replay.py``, ``benchmarks/search_study.py``)
many times, at no training cost.

The table is a folder:

* ``meta.json``: the space, its file digest, the base config (YAML), the budget, the configurations
  (``config`` id, ``kind``: default / warm_start / sobol, ``params``: the sampled values as the search
  names them), the seeds each gets, and the command and commit that created it.
* ``rows.jsonl``: one line per trained (configuration, seed), appended as each finishes:
  ``val`` (one entry per epoch: epoch, score, R1, mAP, mINP on the validation identities),
  ``epoch_seconds``, ``eval_seconds``, ``test`` (SYSU all / indoor search, 10 gallery trials: R1, mAP,
  mINP, used by the study's analysis only: nothing a search runs ever reads them), ``diverged`` (the epoch
  a non-finite loss stopped it, else null), the commit, host and torch threads of the run.

The configurations are a scrambled Sobol sample of the whole space (``space_filling``): each parameter of
the space takes one coordinate of the unit cube, mapped through its own type (log-uniform, stepped,
categorical); a conditional parameter is set only when its condition holds (its coordinate is then
unused), exactly as the search's define-by-run function would sample it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TableError",
    "META",
    "ROWS",
    "from_unit",
    "unit_to_params",
    "space_filling",
    "design",
    "job_order",
    "Row",
    "Table",
    "params_key",
    "append_row",
    "check_names",
    "check_meta",
    "write_atomic",
]

META = "meta.json"
ROWS = "rows.jsonl"


class TableError(ValueError):
    """A table folder that cannot be used (one line naming the file and what is wrong)."""


# ------------------------------------------------------------------------------------------------
# Designing the table: which configurations, which seeds
# ------------------------------------------------------------------------------------------------


def from_unit(p, x: float) -> Any:
    """The value of parameter ``p`` (a resolved ``search.spaces.Param``) at unit coordinate ``x`` in [0, 1):
    categorical and stepped / int parameters by equal-width cells (every choice equally likely), floats
    uniform, or log-uniform with ``log``."""
    x = min(max(float(x), 0.0), 1.0 - 1e-12)
    if p.type == "categorical":
        return p.choices[min(int(x * len(p.choices)), len(p.choices) - 1)]
    low, high = float(p.low), float(p.high)
    step = p.step if p.step else (1 if p.type == "int" else None)
    if step:
        cells = int(math.floor((high - low) / step + 1e-9)) + 1
        value = low + min(int(x * cells), cells - 1) * step
        value = round(value, 10)
        return int(value) if p.type == "int" else float(value)
    if p.log:
        value = math.exp(math.log(low) + x * (math.log(high) - math.log(low)))
    else:
        value = low + x * (high - low)
    return int(round(value)) if p.type == "int" else float(value)


def unit_to_params(params: Sequence, u: Sequence[float]) -> dict[str, Any]:
    """One configuration from a point of the unit cube (one coordinate per parameter, in the space's order)."""
    if len(u) != len(params):
        raise ValueError(f"a point of {len(u)} coordinates for {len(params)} parameters")
    values: dict[str, Any] = {}
    for p, x in zip(params, u):
        if p.active(values):
            values[p.name] = from_unit(p, x)
    return values


def space_filling(params: Sequence, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configurations from a scrambled Sobol sequence over the space (scipy's ``qmc.Sobol``): the first
    ``n`` points of a 2^m-point sequence, so any prefix is itself spread over the whole space."""
    from scipy.stats import qmc

    m = max(1, math.ceil(math.log2(max(n, 2))))
    points = qmc.Sobol(d=len(params), scramble=True, seed=seed).random_base2(m)[:n]
    return [unit_to_params(params, u) for u in points]


def params_key(params: Mapping[str, Any]) -> str:
    """A canonical text of a configuration (sorted keys, floats to 10 significant digits)."""

    def norm(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.10g}")
        return v

    return json.dumps({k: norm(v) for k, v in sorted(params.items())}, sort_keys=True)


def design(
    space, base, n_configs: int, multi_seed: int, seeds: int, sobol_seed: int = 0
) -> tuple[list[dict[str, Any]], dict[int, list[int]]]:
    """The table's configurations and the seeds of each: the space's warm-start points first (the first is
    the paper's default), then a Sobol sample up to ``n_configs``; the first ``multi_seed`` configurations
    get ``seeds`` seeds (0..seeds-1), the others seed 0."""
    params = [p.resolved(base) for p in space.params]
    configs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, point in enumerate(space.warm_start(base)):
        key = params_key(point)
        if key not in seen:
            seen.add(key)
            configs.append({"kind": "default" if i == 0 else "warm_start", "params": point})
    for point in space_filling(params, n_configs, seed=sobol_seed):
        if len(configs) >= n_configs:
            break
        key = params_key(point)
        if key not in seen:
            seen.add(key)
            configs.append({"kind": "sobol", "params": point})
    for i, c in enumerate(configs):
        c["config"] = i
    seed_map = {c["config"]: list(range(seeds if c["config"] < multi_seed else 1)) for c in configs}
    return configs, seed_map


def job_order(seed_map: Mapping[int, list[int]], multi_seed: int) -> list[tuple[int, int]]:
    """The order rows are trained in: seed 0 of the multi-seed configurations, their other seeds (so the
    seed-noise floor is known early), then seed 0 of the rest."""
    ids = sorted(seed_map)
    first = [(c, 0) for c in ids if c < multi_seed]
    extra = [(c, s) for c in ids if c < multi_seed for s in seed_map[c] if s != 0]
    rest = [(c, s) for c in ids if c >= multi_seed for s in seed_map[c]]
    return first + extra + rest


# ------------------------------------------------------------------------------------------------
# Reading the table
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    config: int
    seed: int
    val: tuple[float, ...]  # the validation score after each epoch (1..len), fractions
    epoch_seconds: tuple[float, ...]
    eval_seconds: tuple[float, ...]
    test: Mapping[str, float] | None  # None when the run diverged
    diverged: int | None  # the epoch a non-finite loss stopped the run
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def score(self, epoch: int) -> float:
        """The validation score after ``epoch`` (1-based); a diverged run scores 0 from the epoch it stopped in
        (what the search's trainable reports)."""
        if self.diverged is not None and epoch >= self.diverged:
            return 0.0
        return self.val[epoch - 1]

    def val_metrics(self, epoch: int) -> dict[str, float]:
        """Every validation metric recorded after ``epoch`` (score, R1, mAP, mINP)."""
        if self.diverged is not None and epoch >= self.diverged:
            return {"score": 0.0, "R1": 0.0, "mAP": 0.0, "mINP": 0.0}
        entry = self.raw["val"][epoch - 1]
        return {k: float(entry[k]) for k in ("score", "R1", "mAP", "mINP")}

    @property
    def final(self) -> float:
        return self.score(len(self.val) if self.diverged is None else self.diverged)


class Table:
    """A table folder: ``Table.load(folder)``; rows by configuration and seed; lookups of sampled values."""

    def __init__(self, folder: Path, meta: dict[str, Any], rows: list[Row], complete_only: bool = True) -> None:
        self.folder = folder
        self.meta = meta
        self.epochs: int = int(meta["budget"]["epochs"])
        self.rows: dict[int, dict[int, Row]] = {}
        for r in rows:
            self.rows.setdefault(r.config, {})[r.seed] = r
        self._by_id = {c["config"]: c for c in meta["configs"]}
        # the configurations lookups answer with: with ``complete_only``, those with a seed-0 row
        self.configs: list[dict[str, Any]] = [
            c for c in meta["configs"] if not complete_only or 0 in self.rows.get(c["config"], {})
        ]
        self._by_key = {params_key(c["params"]): c["config"] for c in self.configs}

    @classmethod
    def load(cls, folder: str | Path, complete_only: bool = True) -> Table:
        folder = Path(folder)
        meta_file = folder / META
        if not meta_file.is_file():
            raise TableError(f"{folder}: no {META} (not a table folder)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise TableError(f"{meta_file}: not JSON ({exc})") from None
        check_meta(meta, meta_file)
        rows = [row_from_json(d, meta_file) for d in read_rows(folder / ROWS)]
        if not rows:
            raise TableError(f"{folder / ROWS}: no rows yet")
        return cls(folder, meta, rows, complete_only)

    # ---- lookups -------------------------------------------------------------------------------
    def config_ids(self) -> list[int]:
        return [c["config"] for c in self.configs]

    def params(self, config: int) -> dict[str, Any]:
        return dict(self._by_id[config]["params"])

    def seeds(self, config: int) -> list[int]:
        return sorted(self.rows.get(config, {}))

    def row(self, config: int, seed: int = 0) -> Row:
        """The row of ``config`` at ``seed``; a seed the table lacks wraps onto the recorded ones (seed s ->
        the (s mod n)-th recorded seed), so a re-seed of a single-seed configuration replays its one run."""
        rows = self.rows[config]
        if seed in rows:
            return rows[seed]
        recorded = sorted(rows)
        return rows[recorded[seed % len(recorded)]]

    def lookup(self, params: Mapping[str, Any]) -> int | None:
        """The configuration with exactly these sampled values, else None."""
        return self._by_key.get(params_key(params))

    def nearest(self, params: Mapping[str, Any], space_params: Sequence, among: Sequence[int] | None = None) -> int:
        """The configuration nearest to ``params`` in the unit cube of the space (each float or int parameter
        scaled to [0, 1], log parameters in log space; a categorical or condition mismatch counts 1); ``among``:
        only these configuration ids (default: every configuration lookups answer with)."""
        best, best_d = None, math.inf
        candidates = self.configs if among is None else [self._by_id[c] for c in among]
        for c in candidates:
            d = unit_distance(params, c["params"], space_params)
            if d < best_d:
                best, best_d = c["config"], d
        assert best is not None
        return best

    def check_names(self, space) -> None:
        """Refuse (``TableError``, one line) a table whose configurations name parameters the space lacks."""
        check_names(self.meta, space, self.folder / META)

    def default_config(self) -> int:
        return next(c["config"] for c in self.meta["configs"] if c["kind"] == "default")

    def digest(self) -> str:
        """A digest of the rows file (which rows a study used)."""
        return hashlib.sha256((self.folder / ROWS).read_bytes()).hexdigest()[:16]


def check_meta(meta: Any, where: Any) -> None:
    """Refuse (``TableError``, one line naming the file and key) a ``meta.json`` without what a table needs:
    ``space``, ``base``, ``budget.epochs`` and ``configs``, each configuration with an int ``config``, a
    ``kind`` and a ``params`` mapping."""
    if not isinstance(meta, Mapping):
        raise TableError(f"{where}: expected a JSON object")
    for key in ("space", "base", "budget", "configs"):
        if key not in meta:
            raise TableError(f"{where}: no {key!r} (not a table's meta.json)")
    epochs = meta["budget"].get("epochs") if isinstance(meta["budget"], Mapping) else None
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TableError(f"{where}: budget.epochs: expected an integer >= 1, got {epochs!r}")
    if not isinstance(meta["configs"], list) or not meta["configs"]:
        raise TableError(f"{where}: configs: expected a non-empty list")
    for i, c in enumerate(meta["configs"]):
        if not isinstance(c, Mapping):
            raise TableError(f"{where}: configs[{i}]: expected an object")
        if isinstance(c.get("config"), bool) or not isinstance(c.get("config"), int):
            raise TableError(f"{where}: configs[{i}].config: expected an integer id, got {c.get('config')!r}")
        if not isinstance(c.get("params"), Mapping):
            raise TableError(f"{where}: configs[{i}].params: expected a mapping of parameter values")
        if c.get("kind") not in ("default", "warm_start", "sobol"):
            raise TableError(
                f"{where}: configs[{i}].kind: expected default, warm_start or sobol, got {c.get('kind')!r}"
            )


def check_names(meta: Mapping[str, Any], space, where: Any) -> None:
    """Refuse a table's configurations that name parameters ``space`` does not have (a table tabulated
    before the parameters were named by their config fields, or one of another space)."""
    names = {k for c in meta["configs"] for k in c["params"]}
    unknown = sorted(names - {p.name for p in space.params})
    if unknown:
        raise TableError(
            f"{where}: the configurations name parameters that space {space.name!r} lacks ({', '.join(unknown)}); a "
            f"table made before parameters were named by their config fields is renamed by "
            f"`python benchmarks/migrate_table.py {Path(str(where)).parent}`"
        )


def unit_distance(a: Mapping[str, Any], b: Mapping[str, Any], space_params: Sequence) -> float:
    total = 0.0
    for p in space_params:
        if (p.name in a) != (p.name in b):
            total += 1.0
            continue
        if p.name not in a:
            continue
        x, y = a[p.name], b[p.name]
        if p.type == "categorical":
            total += 0.0 if x == y else 1.0
            continue
        lo, hi = float(p.low), float(p.high)
        if p.log:
            x, y, lo, hi = math.log(x), math.log(y), math.log(lo), math.log(hi)
        total += ((float(x) - float(y)) / (hi - lo if hi > lo else 1.0)) ** 2
    return math.sqrt(total)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a rows file; a last line cut short (a killed writer) is skipped, any other bad line is an
    error naming the file and line."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                continue
            raise TableError(f"{path}:{i}: not a JSON row") from None
    return out


def row_from_json(d: Mapping[str, Any], where: Any = "") -> Row:
    try:
        return Row(
            config=int(d["config"]),
            seed=int(d["seed"]),
            val=tuple(float(v["score"]) for v in d["val"]),
            epoch_seconds=tuple(float(s) for s in d["epoch_seconds"]),
            eval_seconds=tuple(float(s) for s in d.get("eval_seconds", [])),
            test=d.get("test"),
            diverged=d.get("diverged"),
            raw=d,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"{where}: a row without {exc}") from None


def write_atomic(path: Path, text: str) -> None:
    """Write a table file whole or not at all: a temporary file beside it, then an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_row(folder: Path, row: Mapping[str, Any]) -> None:
    """Append one row to ``rows.jsonl`` under an exclusive lock (several tabulating processes share a table),
    flushed to disk before returning: a row is either wholly there or (killed mid-write) skipped on reading."""
    import fcntl

    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(folder / ROWS, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.lseek(fd, 0, os.SEEK_END)
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a row cut short by a killed writer: drop it
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            keep = size - (len(tail) - tail.rfind(b"\n") - 1) if b"\n" in tail else 0
            os.ftruncate(fd, keep)
            os.lseek(fd, keep, os.SEEK_SET)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def done_jobs(folder: Path) -> set[tuple[int, int]]:
    return {(int(d["config"]), int(d["seed"])) for d in read_rows(Path(folder) / ROWS)}
