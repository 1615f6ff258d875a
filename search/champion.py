"""From a finished search to a champion a researcher can defend.

1. **Finished trials only.** A trial ASHA stopped at a rung carries a score of a model whose schedule never
   finished; with asynchronous halving its last score can even beat a full run's. Candidates are the trials
   that trained to the full budget without error or divergence (the set Optuna calls COMPLETE), ranked by
   their last validation score.
2. **Re-seeding.** The top ``k`` candidates are trained again with more seeds, as Ray trials (the same
   trainable, resources, retries and MLflow lineage as the search; child runs tagged ``aminet.role=reseed``),
   and the configuration with the best mean validation score over its seeds wins.
3. **Evaluation on the cluster.** The winner's models (one per seed) are evaluated on both benchmarks' test
   protocols as Ray tasks, in parallel, on the cluster's GPUs when it has them; the test table is mean +- std
   over seeds, each seed the mean over the protocol's trials. Nothing is selected on these numbers.
4. **A guarded champion.** The model is registered under a name of its benchmark and dataset fingerprint
   (``aminet-sysu-synthetic-1a2b3c4d``: synthetic and real data never share a registered model), and the
   ``champion`` alias moves only when the new model's selection score beats the current champion's on the
   same validation protocol.

Pure helpers (selection, the champion rule) are separate from the Ray and MLflow calls so tests can drive
them with results they control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "finished",
    "Candidate",
    "candidates_from",
    "choose",
    "selection_seeds",
    "selection_score",
    "reseed_seeds",
    "registered_name",
    "validation_protocol",
    "champion_decision",
    "guard_champion",
    "RegistryError",
    "evaluate_checkpoint",
]

METRIC = "score"
# Choose among re-seeded candidates on every seed they share, the one they were ranked top-k on included, not
# on their fresh seeds only: measured on the 20 three-seed configurations of the study's table, leaving out
# the selection seed never chose better (by at most +0.02 points of expected test R1 over 12 settings of
# pool, top-k and re-seeds) and, with one re-seed, chose worse (down to -0.41 points: one fresh seed ranks
# more noisily than the winner's curse of the selection seed biases); docs/search-study.md, "The re-seed
# rule". The unbiased mean over the fresh seeds is recorded beside it (val/score_fresh_seeds).
SELECT_ON_FRESH_SEEDS = False


# ------------------------------------------------------------------------------------------------
# Selection (pure)
# ------------------------------------------------------------------------------------------------


def _last(result) -> dict:
    return result.metrics or {}


def reached_full_budget(result, max_epochs: int) -> bool:
    """Trained to the last epoch, no error, no divergence, a finite score."""
    m = _last(result)
    score = m.get(METRIC)
    return (
        result.error is None
        and not m.get("diverged")
        and score is not None
        and math.isfinite(float(score))
        and int(m.get("epoch", 0) or 0) >= max_epochs
    )


def finished(results: Sequence, max_epochs: int) -> list:
    """The results that reached the full budget, best last validation score first (ties: Ray's order)."""
    done = [r for r in results if reached_full_budget(r, max_epochs)]
    return sorted(done, key=lambda r: -float(_last(r)[METRIC]))


@dataclass
class Candidate:
    """One configuration and its models: the search's trial first, then its re-seeds."""

    params: dict[str, Any]
    trial_id: str
    seeds: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # last validation score per seed (0 for a divergence)
    results: list = field(default_factory=list)  # Ray results, in the order of ``seeds``
    run_id: str | None = None  # the search trial's MLflow run, once known

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else float("nan")

    @property
    def std(self) -> float:
        n = len(self.scores)
        if n < 2:
            return 0.0
        mu = self.mean
        return math.sqrt(sum((s - mu) ** 2 for s in self.scores) / (n - 1))

    def best_model(self):
        """The seed model with the highest validation score (a choice on validation ids only)."""
        usable = [(s, r) for s, r in zip(self.scores, self.results) if r is not None and r.checkpoint is not None]
        return max(usable, key=lambda sr: sr[0])[1] if usable else None


def reseed_seeds(base_seed: int, reseeds: int) -> list[int]:
    """The extra seeds of a re-seed: the next ``reseeds`` integers after the search's seed."""
    return [base_seed + i for i in range(1, reseeds + 1)]


def candidates_from(
    top: Sequence, base_seed: int, reseed_results: Sequence = (), max_epochs: int = 0
) -> list[Candidate]:
    """Candidates from the top search results and the re-seed trials' results (their configs hold
    ``candidate`` and ``seed``). A re-seed that diverged scores 0; one that failed outright is left out."""
    cands = [
        Candidate(
            params=dict(r.config),
            trial_id=str(_last(r).get("trial_id", "")),
            seeds=[base_seed],
            scores=[float(_last(r)[METRIC])],
            results=[r],
        )
        for r in top
    ]
    for r in sorted(reseed_results, key=lambda r: (int(r.config["candidate"]), int(r.config["seed"]))):
        c = cands[int(r.config["candidate"])]
        m = _last(r)
        if m.get("diverged"):
            c.seeds.append(int(r.config["seed"]))
            c.scores.append(0.0)
            c.results.append(None)
        elif reached_full_budget(r, max_epochs):
            c.seeds.append(int(r.config["seed"]))
            c.scores.append(float(m[METRIC]))
            c.results.append(r)
    return cands


def selection_seeds(cands: Sequence[Candidate], search_seed: int | None = None) -> list[int]:
    """The seeds the candidates are compared on: those every candidate has a score for (a re-seed that crashed
    after its retries removes that seed from the comparison of all, so no candidate is judged on fewer or
    other seeds than the rest; a divergence is a score, 0), without ``search_seed`` (the seed the candidates
    were selected on: its scores carry the winner's curse) when another shared seed remains."""
    if not cands:
        return []
    common = set(cands[0].seeds).intersection(*(set(c.seeds) for c in cands[1:]))
    fresh = common - {search_seed} if search_seed is not None else common
    return sorted(fresh or common)


def selection_score(cand: Candidate, seeds: Sequence[int]) -> float:
    """The mean validation score of ``cand`` over ``seeds``."""
    by_seed = dict(zip(cand.seeds, cand.scores))
    return sum(by_seed[s] for s in seeds) / len(seeds) if seeds else float("nan")


def choose(cands: Sequence[Candidate], search_seed: int | None = None) -> Candidate:
    """The best mean validation score over ``selection_seeds`` (ties: the better single-seed rank in the search).
    ``search_seed`` given: choose on the fresh seeds only (docs/search-study.md, "The re-seed rule")."""
    if not cands:
        raise ValueError("no candidate to choose from")
    seeds = selection_seeds(cands, search_seed)
    return max(enumerate(cands), key=lambda ic: (selection_score(ic[1], seeds), -ic[0]))[1]


# ------------------------------------------------------------------------------------------------
# The champion rule (pure)
# ------------------------------------------------------------------------------------------------


def registered_name(dataset: str, synthetic: bool, fingerprint: str) -> str:
    """One registered model per benchmark and dataset: ``aminet-<dataset>-<synthetic|real>-<fingerprint8>``."""
    return f"aminet-{dataset}-{'synthetic' if synthetic else 'real'}-{fingerprint[:8]}"


def validation_protocol(cfg) -> str:
    """What the selection score measures, as a comparable string: two scores compare only when it is equal."""
    d, e = cfg.data, cfg.eval
    parts = [
        f"dataset={d.dataset}",
        "split=validation ids",
        f"feature={e.feature}",
        f"flip={e.flip}",
        f"rerank={e.rerank}",
        "score=(R1+mAP)/2",
    ]
    from aminet.data import registry

    parts += registry.get(d.dataset).protocol_parts(cfg)
    return "; ".join(parts)


def champion_decision(
    new_score: float, protocol: str, current: dict[str, str] | None, fingerprint: str | None = None
) -> tuple[bool, str]:
    """(move the alias?, why) given the current champion version's tags (None: no champion yet). Two scores
    compare only on the same validation protocol and the same data (dataset fingerprint), never across them."""
    if current is None:
        return True, "first model on this data"
    try:
        old = float(current.get("aminet.val_score", "nan"))
    except ValueError:
        old = float("nan")
    if current.get("aminet.protocol") != protocol:
        return False, "the current champion was selected under another validation protocol; not comparable"
    if fingerprint is not None and current.get("aminet.dataset_fingerprint") != fingerprint:
        theirs = current.get("aminet.dataset_fingerprint", "none recorded")
        return False, (
            f"the current champion was selected on other data (dataset fingerprint {theirs[:12]}, this search's "
            f"{fingerprint[:12]}); not comparable"
        )
    if current.get(RETIRED_TAG, "").lower() == "true":
        return True, "the current champion is retired"
    if not math.isfinite(old):
        return False, "the current champion has no recorded score"
    if new_score > old:
        return True, f"val score {100 * new_score:.2f} beats the champion's {100 * old:.2f}"
    return False, f"val score {100 * new_score:.2f} does not beat the champion's {100 * old:.2f}"


# A version tagged ``aminet.retired=true`` (by a person: a model found broken after the fact) is never made
# champion again, and a retired champion gives way to the best comparable version.
RETIRED_TAG = "aminet.retired"


class RegistryError(RuntimeError):
    """The model registry could not be read or written as the champion rule needs (one line)."""


def _code(exc: Exception) -> str:
    return getattr(exc, "error_code", None) or type(exc).__name__


def _current_champion(client, name: str, after: str = ""):
    """(tags, version) of ``name@champion``, or (None, None) when the alias does not exist. Any other failure
    (a timeout, a dropped connection, a server error) raises ``RegistryError``: the guard fails closed, it
    never mistakes an unreadable registry for an empty one. ``after`` says what this guard already did, for
    the line (after a move, "alias not moved" would be false)."""
    from mlflow.exceptions import MlflowException

    state = after or "alias not moved"
    try:
        current = client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        no_alias = exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc).lower()
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or no_alias:
            return None, None
        raise RegistryError(f"champion of {name}: the registry could not be read ({_code(exc)}); {state}")
    except Exception as exc:  # noqa: BLE001 - connection errors of any client: fail closed, in one line
        raise RegistryError(f"champion of {name}: the registry could not be read ({_code(exc)}); {state}")
    return dict(current.tags), str(current.version)


def _comparable(tags: dict, protocol: str, fingerprint: str | None) -> float | None:
    """The version's val score when a champion may be chosen by it (a finite recorded score, the same
    validation protocol and data, not retired), else None."""
    try:
        score = float(tags.get("aminet.val_score", "nan"))
    except ValueError:
        return None
    same_data = fingerprint is None or tags.get("aminet.dataset_fingerprint") == fingerprint
    retired = tags.get(RETIRED_TAG, "").lower() == "true"
    ok = math.isfinite(score) and tags.get("aminet.protocol") == protocol and same_data and not retired
    return score if ok else None


def _comparable_versions(client, name: str, protocol: str, fingerprint: str | None, after: str) -> dict[str, float]:
    """{version: val score} of every comparable version of ``name``."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception as exc:  # noqa: BLE001 - as for the alias: fail closed, in one line
        raise RegistryError(
            f"champion of {name}: the registry's versions could not be listed ({_code(exc)}); {after or 'alias not moved'}"
        )
    scores = {str(v.version): _comparable(dict(v.tags or {}), protocol, fingerprint) for v in versions}
    return {v: sc for v, sc in scores.items() if sc is not None}


def _best(scores: dict[str, float]) -> str:
    """The best version; on equal scores the earlier one (a later model must beat a champion, not tie it)."""
    return min(scores, key=lambda v: (-scores[v], int(v)))


def _set_alias(client, name: str, version: str) -> bool:
    """Point ``name@champion`` at ``version``. False when the write lost a race inside the store (two writers
    inserting the alias row at once: a unique-constraint error on SQLite), so the caller reads and decides
    again; a refusal (permissions, a server error) raises ``RegistryError`` in one line."""
    try:
        client.set_registered_model_alias(name, "champion", str(version))
    except Exception as exc:  # noqa: BLE001 - classified below
        text = f"{type(exc).__name__} {exc}"
        if "IntegrityError" in text or "UNIQUE constraint" in text or "duplicate key" in text:
            return False
        raise RegistryError(
            f"champion of {name}: the registry refused to move the alias to version {version} ({_code(exc)}); "
            "alias not moved"
        )
    return True


def guard_champion(
    client, name: str, version: str, score: float, protocol: str, fingerprint: str | None = None, rounds: int = 50
) -> tuple[bool, str]:
    """Move ``name@champion`` under the champion rule, safe against other searches guarding it at the same
    time, on any MLflow store (the registry has no lock and no compare-and-set).

    The rule, stated so that concurrent guards agree: the champion is the best version among the comparable
    ones (same validation protocol and data, a recorded score, not retired), the earlier on a tie. Each guard
    reads the alias and the comparable versions, writes the alias only when it does not point at that best
    version, then reads again, until a read finds the alias on the best version. Every version's tags are
    written before its guard starts, so a stale write (a guard that decided before a rival's better version
    was tagged, and wrote after the rival's move) is found by the writer's own next read and undone; when all
    guards have returned, the alias is on the best comparable version whatever the interleaving, and each
    guard's line is what it read last. An unreadable registry or a refused write raises ``RegistryError``
    saying whether the alias moved. Returns (this version is champion, the line)."""
    mine = str(version)
    wrote: str | None = None
    first_tags = first_holder = None
    for attempt in range(rounds):
        after = f"the alias was moved to version {wrote}, then could not be checked" if wrote else ""
        holder_tags, holder = _current_champion(client, name, after)
        if attempt == 0:
            first_tags, first_holder = holder_tags, holder
        comparable = _comparable_versions(client, name, protocol, fingerprint, after)
        comparable.setdefault(mine, score)  # our own tags may not be listed yet on an eventually consistent store
        if holder is not None and holder not in comparable:
            held = _comparable(holder_tags or {}, protocol, fingerprint)
            if held is not None:  # listed before it was tagged: its own read of the alias counts
                comparable[holder] = held
            elif (holder_tags or {}).get(RETIRED_TAG, "").lower() != "true":
                # a champion that cannot be compared (another protocol, other data, no score) is left alone
                _, why = champion_decision(score, protocol, holder_tags, fingerprint)
                return (
                    False,
                    f"Registered model: {name} version {mine}, NOT champion: {why}; champion stays version {holder}",
                )
        target = _best(comparable)
        if holder == target:
            if target == mine:
                _, why = champion_decision(
                    score, protocol, None if first_holder in (None, mine) else first_tags, fingerprint
                )
                if first_holder is None and len(comparable) > 1:
                    why = f"val score {100 * score:.2f} is the best of {len(comparable)} comparable versions"
                return True, f"Registered model: models:/{name}@champion (version {mine}; {why})"
            if first_holder not in (None, holder):
                why = f"version {holder} (val score {100 * comparable[holder]:.2f}) was registered meanwhile and is better"
            else:
                _, why = champion_decision(score, protocol, holder_tags, fingerprint)
            return (
                False,
                f"Registered model: {name} version {mine}, NOT champion: {why}; champion stays version {holder}",
            )
        if _set_alias(client, name, target):
            wrote = target
    raise RegistryError(
        f"champion of {name}: the alias did not settle after {rounds} rounds of other searches moving it; "
        + (f"last moved to version {wrote} by this search" if wrote else "alias not moved")
    )


# ------------------------------------------------------------------------------------------------
# Work on the cluster
# ------------------------------------------------------------------------------------------------


def evaluate_checkpoint(checkpoint, roots: dict[str, str | None]):
    """A trained model's per-trial test metrics on every benchmark of ``roots`` (name -> folder; run as a Ray
    task: on a GPU when the task holds one). ``checkpoint``: a ``ray.tune.Checkpoint``."""
    import torch

    from aminet.evaluation.trained import evaluate_benchmarks, load_trained

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with checkpoint.as_directory() as folder:
        model, cfg = load_trained(folder, device=device)
    return evaluate_benchmarks(model, cfg, roots, device=device)


def evaluate_on_cluster(
    checkpoints: Sequence, roots: dict[str, Path | None], resources: dict[str, float], retries: int
) -> list:
    """``evaluate_checkpoint`` for each checkpoint as parallel Ray tasks; the frames in order."""
    import ray

    task = ray.remote(evaluate_checkpoint).options(
        num_cpus=resources.get("cpu", 1),
        num_gpus=min(1.0, resources.get("gpu", 0.0)),
        max_retries=retries,
        retry_exceptions=False,
    )
    given = {name: str(root) for name, root in roots.items() if root is not None}
    refs = [task.remote(ck, given) for ck in checkpoints]
    return ray.get(refs)


def retrain_model(unit, uri: str):
    """One ``--retrain-best`` model as a Ray task: the fixed-config runner's function
    (``experiments.run.train_model``), its per-trial frame returned, or the one line its error left (a string;
    its MLflow run ended FAILED)."""
    from experiments.run import train_model

    try:
        return train_model(unit, uri)
    except Exception as exc:  # noqa: BLE001 - reported in one line by the driver, the run already FAILED
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def retrain_on_cluster(units: Sequence, uri: str, resources: dict[str, float], retries: int, local_store: bool) -> list:
    """``retrain_model`` for each unit as Ray tasks (one GPU each when the cluster has GPUs), in parallel with a
    tracking server. ``local_store``: the tracking store is a SQLite file on this machine, so the tasks run on
    this node (the only one that can write it) and one at a time (SQLite takes one writer; two runners writing
    at once can fail with "database is locked")."""
    import ray

    opts: dict[str, Any] = dict(
        num_cpus=resources.get("cpu", 1),
        num_gpus=1.0 if resources.get("gpu", 0) else 0.0,
        max_retries=retries,
        retry_exceptions=False,
    )
    if local_store:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        )
    from ray.exceptions import RayError

    task = ray.remote(retrain_model).options(**opts)

    def result(ref):  # a task Ray could not run at all (a worker lost past the retries, an argument it could not
        try:  # load) is the one line of its error too, as a failed training is
            return ray.get(ref)
        except RayError as exc:
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"

    if local_store:
        return [result(task.remote(unit, uri)) for unit in units]
    return [result(ref) for ref in [task.remote(unit, uri) for unit in units]]
