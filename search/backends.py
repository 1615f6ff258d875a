"""What answers a search's trials, as one value the plan chooses (``Plan.backend``): ``TRAINING`` (each trial
trains AMINet, ``trainables/aminet_trainable.py``) or ``REPLAY`` (a tabulated benchmark answers,
``search/replay.py``: the study's replay of the real driver). The driver asks the backend for the trial's and
the re-seed's trainable, whether Ray may reuse a trial's worker, the data's fingerprint at preflight and the
test evaluation of the winner; no other module branches on replay."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.context import Plan
    from search.lineage import SearchRecord

__all__ = ["Backend", "TRAINING", "REPLAY"]


@dataclass(frozen=True)
class Backend:
    name: str  # "training" or "replay"

    def trial(self, plan: Plan) -> Any:
        """The search's trainable with its fixed arguments (before resources)."""
        from ray import tune

        if self.name == "replay":
            from search.replay import train_replay

            return tune.with_parameters(train_replay, **_replay_kwargs(plan))
        from trainables.aminet_trainable import train_aminet

        return tune.with_parameters(train_aminet, base_yaml=plan.base.to_yaml(), drill=plan.drill)

    def reseed(self, plan: Plan, points: list[dict]) -> Any:
        """The re-seed trials' trainable: every (candidate, seed) pair trained to the full budget."""
        from ray import tune

        if self.name == "replay":
            from search.replay import replay_reseed

            return tune.with_parameters(replay_reseed, points=points, **_replay_kwargs(plan))
        from trainables.aminet_trainable import train_reseed

        return tune.with_parameters(train_reseed, base_yaml=plan.base.to_yaml(), points=points, drill=plan.drill)

    @property
    def reuse_workers(self) -> bool:
        """A real trial gets a fresh worker process (its CUDA memory, compiled graphs, data loader threads and a
        fault drill's kill end with it; its start-up is seconds against minutes of training). A replayed trial
        holds nothing but the table, so its worker is reused: on a simulated cluster the trials' start-ups
        would otherwise be what the machine measures, not the driver (docs/performance.md)."""
        return self.name == "replay"

    def replay_fingerprint(self, plan: Plan) -> Plan | None:
        """A replay reads no data: the plan completed with the table's digest as its fingerprint (None for
        training, whose preflight reads the data)."""
        if self.name != "replay":
            return None
        from search.blackbox import Table

        return replace(plan, fingerprint=f"replay-{Table.load(plan.replay).digest()}")

    def evaluate(self, rec: SearchRecord, plan: Plan, winner) -> str:
        """The winner's test evaluation: the test protocols of its seed models (training), or the table rows'
        recorded test metrics (replay; no model exists, so none is registered)."""
        from search import outcome

        if self.name == "replay":
            return outcome.replay_evaluation(rec, plan, winner)
        return outcome.test_evaluation(rec, plan, winner)


def _replay_kwargs(plan: Plan) -> dict:
    b = plan.budget
    return dict(
        table_dir=str(plan.replay),
        eval_every=b.eval_every,
        epochs=b.epochs,
        time_scale=plan.replay_time_scale,
        model=plan.replay_model,
    )


TRAINING = Backend("training")
REPLAY = Backend("replay")
