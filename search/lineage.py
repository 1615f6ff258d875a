"""MLflow lineage of a search: the parent run and every write to it (the summary of the trials, the
selection, the test evaluation, the registration, the description), the state file and the time budget's
clock, and closing every run whatever ends the driver. The driver is MLflow's only writer; the trials' own
runs are written by ``search.tuning.TrialRunLogger``."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.context import DEADLINE_FILE, DEFAULT_TRANSFER, STATE_FILE, Plan, SearchState

__all__ = [
    "SearchRecord",
    "open_search",
    "close_runs",
    "log_search_summary",
    "save_state",
    "SearchClock",
    "describe_parent",
    "record_selection",
    "record_test_evaluation",
    "record_replay_test",
    "record_registration",
    "record_time_budget",
]


@dataclass
class SearchRecord:
    """Where a search is recorded: the MLflow store and parent run, the state file, the Optuna study, and
    what every trial run gets (tags, dataset inputs)."""

    client: Any
    uri: str
    exp_id: str
    parent_id: str
    state: SearchState
    state_path: Path
    study_url: str
    run_tags: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)

    # Every write to the parent run and the state file, as a method of the record (the functions below do
    # the work; the record supplies where).
    def save(self) -> None:
        """The state file, written atomically."""
        self.state.write(self.state_path)

    def close(self, status: str) -> None:
        """The parent run and any trial run still RUNNING end with ``status``."""
        close_runs(self.client, self.exp_id, self.parent_id, status)

    def log_summary(self, plan: Plan, results) -> None:
        log_search_summary(self.client, self.parent_id, plan, results, self.study_url)

    def record_selection(self, cfg, cands, winner, chosen_on=(), fresh=()) -> None:
        record_selection(self.client, self.parent_id, self.exp_id, cfg, cands, winner, chosen_on, fresh)

    def record_test_evaluation(self, inputs, per_trial, benchmarks, table: str) -> None:
        record_test_evaluation(self.client, self.parent_id, inputs, per_trial, benchmarks, table)

    def record_replay_test(self, figures: dict[str, float], where: str, table: str) -> None:
        record_replay_test(self.client, self.parent_id, figures, where, table)

    def record_registration(self, label: str) -> None:
        record_registration(self.client, self.parent_id, label)

    def record_time_budget(self, ran: str) -> None:
        record_time_budget(self.client, self.parent_id, ran)

    def describe(self, plan: Plan, winner, table: str | None = None, registered: str | None = None) -> None:
        """The parent run's description (the winner, its scores, the test table, the registration)."""
        describe_parent(self.client, self.parent_id, plan, winner, self.exp_id, table, registered)


def open_search(plan: Plan) -> SearchRecord:
    """The search's parent run (created, or reopened on a resume) and its state file."""
    import datetime as _dt

    from mlflow.tracking import MlflowClient

    from tracking.reporting import dataset_input, mlflow_store, source_tags

    plan.state_dir.mkdir(parents=True, exist_ok=True)
    study_url = f"sqlite:///{plan.state_dir / 'optuna.db'}"
    st, fingerprint = plan.settings, plan.fingerprint
    uri, exp_id = mlflow_store(st.mlflow_uri, st.mlflow_experiment)
    client = MlflowClient(uri)
    state_path = plan.state_dir / STATE_FILE
    data_name = f"{plan.space.dataset}-{'synthetic' if plan.synthetic_data else 'real'}"
    # One input per split (MLflow keeps one context per dataset name and digest): the training identities and
    # the held-out validation identities of the same folder (same content digest).
    inputs = [dataset_input(f"{data_name}-{c}", fingerprint, plan.base.data.root, c) for c in ("train", "validation")]
    run_tags = {"aminet.space": plan.space.name, "aminet.search": plan.name, **source_tags("search/run.py")}
    if plan.resume:
        state = SearchState.read(state_path)
        parent_id = state.parent_run_id
        client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "aminet.resumed_at", _dt.datetime.now().isoformat(timespec="seconds"))
        print(f"resuming search {plan.name} (MLflow parent run {parent_id})", file=sys.stderr)
        return SearchRecord(client, uri, exp_id, parent_id, state, state_path, study_url, run_tags, inputs)
    b = plan.budget
    tags = {
        "aminet.role": "search",
        "aminet.space": plan.space.name,
        **source_tags("search/run.py"),
        "aminet.dataset_fingerprint": fingerprint,
        "aminet.data_root": str(plan.base.data.root),
        "aminet.ray_experiment": plan.experiment_path,
        "aminet.optuna_study": f"{plan.name} @ {study_url}",
        "aminet.budget": "quick" if plan.quick else "full",
        "aminet.synthetic": str(plan.synthetic_data),
    }
    parent_id = client.create_run(exp_id, run_name=plan.name, tags=tags).info.run_id
    try:
        client.log_text(parent_id, plan.base.to_yaml(), "search/base_config.yaml")
        client.log_text(parent_id, plan.space.text(), "search/space.yaml")
        settings = {
            "space": plan.space.name,
            "num_samples": b.num_samples,
            "epochs": b.epochs,
            "eval_every": b.eval_every,
            "grace_period": b.grace_period,
            "reduction_factor": b.reduction_factor,
            "max_concurrent": plan.concurrent,
            "cpus_per_trial": plan.resources["cpu"],
            "gpus_per_trial": plan.resources["gpu"],
            "sampler": st.sampler,
            "scheduler": st.scheduler,
            "replay": str(plan.replay) if plan.replay else "none",
            "time_budget_s": st.time_budget,
            "seed": st.seed,
            "top_k": st.top_k,
            "space_file": str(plan.space.path),
            "reseeds": st.reseeds,
            "transfer_from": ", ".join(st.identity.get("transfer_from") or []) or "none",
            "transfer_method": (st.identity.get("transfer_method") or DEFAULT_TRANSFER)
            if st.identity.get("transfer_from")
            else "none",
        }
        for k, v in settings.items():
            client.log_param(parent_id, f"search.{k}", v)
        if st.identity.get("transfer_from"):  # what the sources made of the space: its ranges and first points
            client.log_dict(
                parent_id,
                {"signature": plan.space.signature(), "warm_start": plan.space.warm_start(plan.base)},
                "search/transferred_space.json",
            )
        client.log_inputs(parent_id, datasets=inputs)
        state = SearchState(
            space=plan.space.name,
            parent_run_id=parent_id,
            mlflow_uri=uri,
            experiment_id=exp_id,
            study=study_url,
            created=time.time(),
            args={**st.identity, "mlflow_uri": uri},
            base_config=plan.base.to_yaml(),
            space_params=plan.space.signature(),
            fingerprint=fingerprint,
            budget=vars(plan.budget),
        )
        state.write(state_path)
    except BaseException:
        close_runs(client, exp_id, parent_id, "FAILED")
        raise
    return SearchRecord(client, uri, exp_id, parent_id, state, state_path, study_url, run_tags, inputs)


def close_runs(client, exp_id: str, parent_id: str, status: str) -> None:
    """Mark the parent and any child still RUNNING as ended: nothing is left RUNNING."""
    try:
        for run in client.search_runs(
            [exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'"
        ):
            client.set_terminated(run.info.run_id, "KILLED" if status != "FINISHED" else "FINISHED")
        client.set_terminated(parent_id, status)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the original error
        print(f"warning: could not close MLflow runs: {exc}", file=sys.stderr)


def log_search_summary(client, parent_id: str, plan: Plan, results, study_url: str) -> None:
    """Trials table, trial states, failures, Optuna plots and importances on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import pandas as pd

    frame = results.get_dataframe()
    keep = [
        c
        for c in frame.columns
        if c.startswith("config/")
        or c
        in (
            "trial_id",
            "epoch",
            "score",
            "R1",
            "mAP",
            "mINP",
            "diverged",
            "resumed_from",
            "training_iteration",
            "time_total_s",
        )
    ]
    client.log_text(parent_id, frame[keep].to_csv(index=False), "search/trials.csv")
    study = optuna.load_study(study_name=plan.name, storage=study_url)
    sdf = study.trials_dataframe()
    client.log_text(parent_id, sdf.to_csv(index=False), "search/optuna_trials.csv")
    counts = sdf["state"].value_counts().to_dict() if len(sdf) else {}
    for state, n in counts.items():
        client.log_metric(parent_id, f"trials/{str(state).lower()}", float(n))

    failed = [r for r in results if r.error is not None]
    if failed:
        lines = []
        for r in failed:
            msg = " ".join(str(r.error).split())
            tail = msg.split("Traceback")[0][-300:] if "Traceback" in msg else msg[-300:]
            lines.append({"trial": Path(r.path).name, "error": tail})
        client.log_text(parent_id, pd.DataFrame(lines).to_csv(index=False), "search/failed_trials.csv")
        print(f"\n{len(failed)} trial(s) FAILED (the search went on):", file=sys.stderr)
        for row in lines:
            print(f"  {row['trial'][:40]}: {row['error'][-200:]}", file=sys.stderr)
    client.log_metric(parent_id, "trials/errored", float(len(failed)))
    diverged = [r for r in results if r.error is None and (r.metrics or {}).get("diverged")]
    client.log_metric(parent_id, "trials/diverged", float(len(diverged)))
    if diverged:
        print(
            f"\n{len(diverged)} trial(s) DIVERGED (non-finite loss; not retried, told to Optuna as PRUNED at the "
            f"worst score):",
            file=sys.stderr,
        )
        for r in diverged:
            print(f"  {Path(r.path).name[:40]}: {str(r.metrics.get('error', ''))[-200:]}", file=sys.stderr)

    import warnings

    from optuna.visualization import matplotlib as ovm

    from search.importance import FittedImportances, parameter_importances

    # Importances are computed once: the logged metrics and the plot's bars are the same numbers.
    importances, why_not = parameter_importances(study)
    if why_not:
        client.set_tag(parent_id, "importance", f"not computed: {why_not}")
        client.set_tag(parent_id, "plot.param_importances", f"not drawn: {why_not}")
        print(f"parameter importances: not computed ({why_not})", file=sys.stderr)
    else:
        for k, v in importances.items():
            client.log_metric(parent_id, f"importance/{k}", v)
        client.log_dict(parent_id, importances, "search/importances.json")
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in sorted(importances.items(), key=lambda kv: -kv[1]))
        print(f"parameter importances (Optuna's PED-ANOVA): {ranked}", file=sys.stderr)
    plots = {
        "optimization_history": ovm.plot_optimization_history,
        **(
            {"param_importances": lambda s: ovm.plot_param_importances(s, evaluator=FittedImportances(importances))}
            if importances
            else {}
        ),
        "parallel_coordinate": ovm.plot_parallel_coordinate,
        "intermediate_values": ovm.plot_intermediate_values,
    }
    for name, fn in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            # Wide enough for one axis per parameter and full labels; cropped to what is drawn. The same plots,
            # interactive, are in optuna-dashboard (README).
            fig.set_size_inches(14 if name == "parallel_coordinate" else 10, 6)
            fig.tight_layout()
            client.log_figure(parent_id, fig, f"plots/{name}.png", save_kwargs={"bbox_inches": "tight", "dpi": 110})
            plt.close(fig)
        except Exception as exc:  # noqa: BLE001 - a plot Optuna cannot draw for this study
            client.set_tag(parent_id, f"plot.{name}", f"not drawn: {' '.join(str(exc).split())[:200]}")


def record_selection(client, parent_id: str, exp_id: str, cfg, cands, winner, chosen_on=(), fresh=()) -> None:
    """On the parent run: every candidate's scores over seeds, the winner's config, selection and validation
    figures (mean over seeds), its parameters as tags, its resolved config ``cfg``, and a link to (and tag on) the
    winning trial's run."""
    import pandas as pd

    from search.champion import selection_score
    from search.tuning import mlflow_metrics, trial_run

    fresh_score = selection_score(winner, list(fresh)) if fresh else None
    rows = [
        {
            "rank": i + 1,
            "trial_id": c.trial_id,
            "mean": c.mean,
            "std": c.std,
            "n": len(c.scores),
            "selection_seeds": " ".join(map(str, chosen_on)),
            "selection_score": selection_score(c, list(chosen_on)),
            "seeds": " ".join(map(str, c.seeds)),
            "scores": " ".join(f"{v:.4f}" for v in c.scores),
            **{f"param.{k}": v for k, v in c.params.items()},
        }
        for i, c in enumerate(cands)
    ]
    client.log_text(parent_id, pd.DataFrame(rows).to_csv(index=False), "search/reseeds.csv")
    for i, c in enumerate(cands):
        client.log_metric(parent_id, f"reseed/top{i + 1}/val_score_mean", c.mean)
        client.log_metric(parent_id, f"reseed/top{i + 1}/val_score_std", c.std)
        client.set_tag(
            parent_id, f"reseed.top{i + 1}", f"trial {c.trial_id}, seeds {c.seeds}, mean {c.mean:.4f} +- {c.std:.4f}"
        )
    client.log_text(parent_id, cfg.to_yaml(), "best/config.yaml")
    client.log_dict(
        parent_id,
        {
            "params": winner.params,
            "trial_id": winner.trial_id,
            "seeds": winner.seeds,
            "val_scores": winner.scores,
            "val_score_mean": winner.mean,
            "val_score_std": winner.std,
            "selection_seeds": list(chosen_on),
            "selection_score": selection_score(winner, list(chosen_on)),
            "fresh_seeds": list(fresh),
            "fresh_seeds_score": fresh_score,
        },
        "best/selection.json",
    )
    # The trials' objective name (val/score) on the parent too: the winner's mean over seeds, and its std; and
    # its mean over the fresh seeds only (free of the optimism of the seed it was ranked top-k on).
    client.log_metric(parent_id, "val/score", winner.mean)
    client.log_metric(parent_id, "val/score_std", winner.std)
    if fresh_score is not None:
        client.log_metric(parent_id, "val/score_fresh_seeds", fresh_score)
    per_seed = [mlflow_metrics(r.metrics) for r in winner.results if r is not None]
    for k in per_seed[0] if per_seed else []:
        if k.startswith("val/") and k != "val/score" and all(k in m for m in per_seed):
            client.log_metric(parent_id, k, sum(m[k] for m in per_seed) / len(per_seed))
    for k, v in winner.params.items():
        client.set_tag(parent_id, f"best.{k}", str(v))
    client.set_tag(parent_id, "aminet.best_trial", winner.trial_id)
    found = trial_run(client, exp_id, parent_id, winner.trial_id)
    if found is not None:  # the winning trial's run: tagged, and linked from the parent
        winner.run_id = found.info.run_id
        client.set_tag(winner.run_id, "aminet.winner", "true")
        client.set_tag(parent_id, "aminet.best_trial_run", winner.run_id)


def record_test_evaluation(client, parent_id: str, inputs, per_trial, benchmarks, table: str) -> None:
    """The winner's test evaluation on the parent run: the test datasets as inputs, every (benchmark, seed,
    trial) row, and per benchmark ``(name, scope, trials, summary)`` the mean and std over seeds of each
    setting's metrics (``test/<benchmark>/<setting>/<metric>``) with its scope as a tag; the paper table."""
    client.log_inputs(parent_id, datasets=inputs)
    client.log_text(parent_id, per_trial.drop(columns=["cmc"]).to_csv(index=False), "best/test_per_trial.csv")
    for bench, scope, trials, summary in benchmarks:
        for row in summary.itertuples():
            for m in ("R1", "R10", "R20", "mAP", "mINP"):
                client.log_metric(parent_id, f"test/{bench}/{row.setting}/{m}", float(getattr(row, f"{m}_mean")))
                client.log_metric(parent_id, f"test/{bench}/{row.setting}/{m}_std", float(getattr(row, f"{m}_std")))
            client.set_tag(
                parent_id, f"test.{bench}.{row.setting}.scope", f"{scope}, {trials} trials, {row.seeds} seeds"
            )
    client.log_text(parent_id, table + "\n", "best/test_table.txt")


def record_replay_test(client, parent_id: str, figures: dict[str, float], where: str, table: str) -> None:
    """A replayed search's recorded test figures on the parent run, under the real evaluation's names, and
    where in the table they come from (tag ``aminet.replay``)."""
    for key, value in figures.items():
        client.log_metric(parent_id, key, value)
    client.set_tag(parent_id, "aminet.replay", where)
    client.log_text(parent_id, table + "\n", "best/test_table.txt")


def record_registration(client, parent_id: str, label: str) -> None:
    """The registered model version (and whether it became the champion) on the parent run."""
    client.set_tag(parent_id, "aminet.registered_model", label)


def record_time_budget(client, parent_id: str, ran: str) -> None:
    """The time budget ended the search before its trial count: how many trials ran."""
    client.set_tag(parent_id, "aminet.time_budget_reached", f"{ran} trials")


def save_state(path: Path, state: SearchState) -> None:
    """Write the search's state file whole or not at all (``SearchState.write``)."""
    state.write(path)


CLOCK_FILE = "clock.json"  # the running search's clock: when this run started searching, when it was last seen
CLOCK_BEAT_S = 10.0  # how often a searching driver writes that it is still searching


class SearchClock:
    """The --time-budget clock, kept on disk so that it survives a hard kill.

    ``start`` first charges a run that ended without ``stop`` (SIGKILL, a lost machine) with the time from its
    start to its last heartbeat (at most ``CLOCK_BEAT_S`` is lost), then writes the deadline for the searcher
    (the budget less every earlier run's searching time) and a heartbeat thread that rewrites the clock file
    every ``beat`` seconds. ``stop`` adds this run's time to the state file, marked with the run's start so a
    kill between that write and the clock file's removal is never charged twice."""

    def __init__(
        self, state_dir: Path, budget_s: float | None, state: SearchState, state_path: Path, beat: float = CLOCK_BEAT_S
    ):
        self.file, self.deadline_file = state_dir / CLOCK_FILE, state_dir / DEADLINE_FILE
        self.budget_s, self.state, self.state_path, self.beat = budget_s, state, state_path, beat
        self.started: float | None = None
        self.deadline: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _charge_unstopped_run(self) -> None:
        try:
            last = json.loads(self.file.read_text())
        except (FileNotFoundError, ValueError):
            return
        if last.get("started") != self.state.clock_closed:
            self.state.search_seconds = (self.state.search_seconds or 0.0) + max(
                0.0, float(last["seen"]) - float(last["started"])
            )
            self.state.clock_closed = last["started"]
            self.state.write(self.state_path)
        self.file.unlink(missing_ok=True)

    def _write(self, seen: float) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"started": self.started, "seen": seen}))
        tmp.replace(self.file)

    def _beat(self) -> None:
        while not self._stop.wait(self.beat):
            self._write(time.time())

    def start(self) -> float | None:
        """The deadline (Unix time) after which no new trial starts; None without a budget."""
        self._charge_unstopped_run()
        if self.budget_s is None:
            self.deadline_file.unlink(missing_ok=True)
            return None
        self.started = time.time()
        self.deadline = self.started + self.budget_s - (self.state.search_seconds or 0.0)
        self.deadline_file.write_text(f"{self.deadline:.3f}\n")
        self._write(self.started)
        self._thread = threading.Thread(target=self._beat, name="aminet-search-clock", daemon=True)
        self._thread.start()
        return self.deadline

    def stop(self) -> None:
        """Add this run's searching time to the state file (a resume gets the rest of the budget)."""
        if self.started is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.state.search_seconds = (self.state.search_seconds or 0.0) + time.time() - self.started
        self.state.clock_closed = self.started
        self.state.write(self.state_path)
        self.file.unlink(missing_ok=True)
        self.started = None


def describe_parent(
    client, parent_id: str, plan: Plan, winner, exp_id: str, table: str | None = None, registered: str | None = None
) -> None:
    """The parent run's description (MLflow's markdown note): the winner, linked, its scores, the test table."""
    from tracking.reporting import run_page

    run = getattr(winner, "run_id", None)
    link = (
        f"[trial {winner.params.get('optuna_trial', winner.trial_id)}]({run_page(exp_id, run)[1:]})"
        if run
        else f"trial {winner.trial_id}"
    )
    params = "\n".join(f"| {k} | {v} |" for k, v in winner.params.items() if k != "optuna_trial")
    text = (
        f"## Search `{plan.name}` ({plan.space.name} space, {plan.budget.num_samples} trials, "
        f"{plan.budget.epochs} epochs)\n\nWinner: {link}, validation score (R1 + mAP) / 2 = "
        f"**{100 * winner.mean:.2f} +- {100 * winner.std:.2f} %** over seeds {winner.seeds} (chosen on "
        f"validation identities only, among trials that finished, by the mean over seeds).\n\n"
        f"| parameter | value |\n|---|---|\n{params}\n\n"
        f"Units: MLflow metrics are fractions (0-1); the tables below are in percent, mean +- std over seeds.\n"
    )
    if table:
        text += f"\n### Test protocols\n\n```\n{table.strip()}\n```\n"
    if registered:
        text += f"\n{registered}\n"
    client.set_tag(parent_id, "mlflow.note.content", text)
