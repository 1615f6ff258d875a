"""The replay trainable: a trial answered from a tabulated benchmark (``search/blackbox.py``) instead of trained.

    python search/run.py --space sysu --replay benchmarks/tables/sysu-quick [--replay-time-scale 0.01]

It stands in for ``trainables.aminet_trainable.train_aminet`` in the unchanged driver: the same space,
sampler, ASHA, selection, re-seeding and MLflow lineage see the recorded validation curve, epoch by epoch,
reported exactly as a training trial reports it (the training figures every epoch, ``score`` / ``R1`` /
``mAP`` / ``mINP`` at the search's evaluation epochs, ``diverged`` at the epoch a recorded run diverged).
With a time scale > 0 each epoch sleeps its recorded time (and its evaluation's) times the scale, so trials
end in the order they would on a cluster of that speed.

Which row answers a configuration: the table's row with exactly the sampled values (the warm-start points,
a replayed random or Sobol point), else the **nearest row** in the space's unit cube (each numeric parameter
scaled to [0, 1], log parameters in log space; a different categorical value or an inactive conditional
parameter counts as a distance of 1). Why the nearest row and not "sample only the table's rows": the
samplers under study act on the continuous space as shipped, unchanged; the table is then a piecewise
constant surrogate of the objective (the one-nearest-neighbour surrogate of Syne Tune's blackbox
repository and YAHPO's tabular fallback), so a sampler that moves towards a good region gets the row
recorded there. The answering row is reported (``replay_config``) and logged with the trial.

Seeds: a trial's ``train.seed`` picks the recorded seed of that configuration; a seed the table lacks
wraps onto the recorded ones (``Table.row``), so a re-seed draws another recorded seed where there is one.

``--replay-model forest`` answers instead from the table's random-forest surrogate
(``search.surrogate.ForestSurrogate``, the study's ``--replay-model forest``): the predicted validation curve
of exactly the proposed configuration plus one of the table's measured seed deviations (drawn from a stream
fixed by the configuration and the seed, so a resumed or repeated trial gets the same run), so a sampler that
concentrates is answered where it proposes, not by the same few rows. Its test metrics are the surrogate's
expected SYSU all-search score and R1 (carried in the trial's result as ``replay_test:all/R1`` and
``replay_test:all/mAP`` for the end of the search, never logged as the trial's metrics: a search sees no test
figure); ``replay_config`` is then -1.
"""

from __future__ import annotations

import functools
import time
import zlib
from pathlib import Path
from typing import Any

from ray import tune

from search.blackbox import Table
from trainables.params import OPTUNA_TRIAL, SEED

__all__ = ["train_replay", "replay_reseed", "load_table", "load_surrogate", "answer", "REPLAY_CONFIG", "MODELS"]

REPLAY_CONFIG = "replay_config"  # result key: the table configuration that answered the trial (-1: the surrogate)
MODELS = ("nearest", "forest")  # how a proposal is answered: the table's row, or the forest surrogate
TEST_PREFIX = "replay_test:"  # result keys of a surrogate answer's expected test metrics (never logged as a trial's)


@functools.lru_cache(maxsize=4)
def load_table(folder: str) -> tuple[Table, tuple]:
    """The table and its space's parameters resolved against the table's base config (cached per process)."""
    from aminet.config import Config
    from search.spaces import get_space

    table = Table.load(folder)
    base = Config.from_yaml(table.meta["base"], source=f"{folder}/meta.json")
    space = get_space(table.meta["space"])
    return table, tuple(p.resolved(base) for p in space.params)


@functools.lru_cache(maxsize=2)
def load_surrogate(folder: str):
    """The table's forest surrogate, fitted once per process (seed 0, every configuration)."""
    from search.surrogate import ForestSurrogate

    table, space_params = load_table(folder)
    return ForestSurrogate(table, space_params, seed=0)


def _surrogate_row(folder: str, params: dict[str, Any], seed: int):
    import numpy as np

    from search.blackbox import params_key

    rng = np.random.default_rng([zlib.crc32(params_key(params).encode()), seed])
    return load_surrogate(folder).answer(params, rng, seed)


def answer(table: Table, space_params, params: dict[str, Any]) -> int:
    """The configuration of the table that answers ``params`` (exact, else nearest: see the module doc)."""
    found = table.lookup(params)
    return found if found is not None else table.nearest(params, space_params)


def train_replay(
    config: dict[str, Any],
    table_dir: str,
    eval_every: int,
    epochs: int,
    time_scale: float = 0.0,
    model: str = "nearest",
) -> None:
    """Ray Tune function trainable (see the module doc)."""
    import ray

    params = {k: v for k, v in config.items() if k not in (OPTUNA_TRIAL, SEED)}
    seed = int(config.get(SEED, 0))
    folder = str(Path(table_dir).resolve())
    extra: dict[str, Any] = {}
    if model == "forest":
        config_id, row = -1, _surrogate_row(folder, params, seed)
        expected = load_surrogate(folder).mean(params)  # the expected test figures: no seed noise (a choice's worth)
        r1, score = float(min(max(expected[-1], 0.0), 1.0)), float(min(max(expected[-2], 0.0), 1.0))
        extra = {f"{TEST_PREFIX}all/R1": r1, f"{TEST_PREFIX}all/mAP": 2 * score - r1}
    else:
        table, space_params = load_table(folder)
        config_id = answer(table, space_params, params)
        row = table.row(config_id, seed)
    node_id = ray.get_runtime_context().get_node_id()
    latest = {"val_score": float("nan"), "val_R1": float("nan"), "val_mAP": float("nan")}
    for epoch in range(1, epochs + 1):
        evaluates = epoch % eval_every == 0 or epoch == epochs
        if time_scale > 0:
            seconds = row.epoch_seconds[min(epoch, len(row.epoch_seconds)) - 1]
            if evaluates and row.eval_seconds:
                seconds += row.eval_seconds[min(epoch, len(row.eval_seconds)) - 1]
            time.sleep(seconds * time_scale)
        if row.diverged is not None and epoch >= row.diverged:
            tune.report(
                {
                    "score": 0.0,
                    "R1": 0.0,
                    "mAP": 0.0,
                    "mINP": 0.0,
                    "epoch": epoch,
                    "diverged": 1.0,
                    "error": f"NonFiniteLossError: recorded divergence of table row {config_id} seed {row.seed}",
                    REPLAY_CONFIG: config_id,
                    "node_id": node_id,
                }
            )
            return
        values: dict[str, Any] = {**latest, "epoch": epoch, "epoch_seconds": row.epoch_seconds[epoch - 1]}
        if evaluates:
            m = row.val_metrics(epoch)
            latest = {"val_score": m["score"], "val_R1": m["R1"], "val_mAP": m["mAP"]}
            values.update(latest)
            values.update(m)
        values.update(
            {
                REPLAY_CONFIG: config_id,
                "replay_seed": row.seed,
                "resumed_from": 0,
                "node_id": node_id,
                "device": "replay",
                **extra,
            }
        )
        tune.report(values)


def replay_reseed(
    config: dict[str, Any],
    table_dir: str,
    eval_every: int,
    epochs: int,
    points: list[dict[str, Any]],
    time_scale: float = 0.0,
    model: str = "nearest",
) -> None:
    """A re-seed trial replayed: ``points[config["candidate"]]`` at seed ``config["seed"]``."""
    params = {**points[int(config["candidate"])], SEED: int(config["seed"])}
    train_replay(params, table_dir, eval_every, epochs, time_scale, model)
