"""The search: sample -> config mapping, spaces, the PRUNED-aware searcher, and end-to-end searches with Ray
Tune, Optuna and MLflow on tiny synthetic data (crash retry, interrupt + resume, a second Ray node)."""

import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from e2e_helpers import REPO, RUN, search_args, search_env, search_runs, search_study, tiny_roots

from aminet.config import Config
from search.spaces import SpaceError, get_space, load_base, load_space, shipped_spaces
from search.tuning import SAMPLERS, PrunedAwareOptunaSearch, make_sampler
from trainables.params import BANDWIDTH_SETS, apply_params, to_overrides

# ------------------------------------------------------------------------------------------------
# Pure parts
# ------------------------------------------------------------------------------------------------


def _x_space(trial):  # module level: Ray checkpoints the searcher (and its space) with plain pickle
    trial.suggest_float("x", 0.0, 1.0)


@pytest.mark.parametrize("name", shipped_spaces())
def test_warm_start_reproduces_the_papers_config(name):
    space = get_space(name)
    base = space.base(quick=False)
    paper = Config.from_dict(load_base(REPO / "experiments" / f"{space.dataset}.yaml"))
    first = apply_params(base, space.warm_start(base)[0])
    for key in (
        "loss.mmd_intra_weight",
        "loss.mmd_inter_weight",
        "loss.mmd_multipliers",
        "model.upper_body_ratio",
        "optim.lr",
        "optim.warmup_share",
        "optim.milestone_shares",
        "optim.schedule",
        "train.epochs",
    ):
        assert first.flat()[key] == paper.flat()[key], key
    assert first.data.purpose == "search"  # a search never trains on, or looks at, the test ids
    expected = {"sysu": (0.4, 0.6, 0.5), "regdb": (0.2, 0.8, 0.6)}[name]
    assert (first.loss.mmd_intra_weight, first.loss.mmd_inter_weight, first.model.upper_body_ratio) == expected


@pytest.mark.parametrize("name", shipped_spaces())
@pytest.mark.parametrize("quick", [False, True])
def test_space_budgets_and_points_are_consistent(name, quick):
    space = get_space(name)
    base = space.base(quick=quick)
    b = space.budget_for(quick)
    assert b.epochs == base.train.epochs and b.grace_period >= b.epochs / 4 - 1e-9
    fn = pickle.loads(pickle.dumps(space.define_by_run(base)))  # Ray checkpoints the searcher with pickle
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for point in space.warm_start(base):
        study.enqueue_trial(point)
    for _ in range(12):
        trial = study.ask()
        fn(trial)
        for k, v in trial.params.items():  # warm-start points lie inside the distributions
            assert trial.distributions[k]._contains(trial.distributions[k].to_internal_repr(v)), (k, v)
        cfg = apply_params(base, trial.params)  # every sample is a valid config
        assert cfg.loss.mmd_multipliers == BANDWIDTH_SETS[trial.params["bandwidths"]]
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", shipped_spaces())
def test_full_budget_takes_any_training_length(name):
    """`--budget full --set train.epochs=40` (the README's kind of override) gives the paper's schedule at
    40 epochs instead of refusing the 80-epoch milestones."""
    space = get_space(name)
    base = space.base(quick=False, overrides=["train.epochs=40"])
    assert base.optim.warmup_epochs(40) == 5 and base.optim.milestone_epochs(40) == [10, 25]
    for point in space.warm_start(base):
        cfg = apply_params(base, point)
        assert cfg.optim.milestone_epochs(40) == [10, 25] and cfg.train.epochs == 40


def test_shipped_spaces_are_the_yaml_files():
    assert shipped_spaces() == ["regdb", "sysu"]
    assert get_space("sysu").path == REPO / "search" / "spaces" / "sysu.yaml"


_MY_SPACE = """
dataset: regdb
base: regdb.yaml
quick: {base: smoke.yaml, set: {eval.trials: 2}}
budget:
  full: {epochs: 40, eval_every: 5, grace: 10, trials: 12}
  quick: {epochs: 4, eval_every: 2, grace: 1, trials: 3}
parameters:
  mmd_inter: {type: float, low: 0.5, high: 1.0, step: 0.1}
  lr: {type: float, low: 0.5, high: 2.0, log: true, scale: base}
  schedule: {type: categorical, choices: [step, cosine]}
  milestone1_frac: {type: float, low: 0.3, high: 0.6, when: {schedule: step}}
  cfg.data.instances: {type: int, low: 2, high: 8, step: 2}
  cfg.loss.triplet_weight: {type: float, low: 0.1, high: 10.0, log: true, when: {schedule: [cosine]}}
warm_start:
  - {mmd_inter: 0.8, schedule: cosine}
"""


def test_a_space_file_with_every_kind_of_parameter(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(_MY_SPACE)
    space = get_space(str(path))
    assert (space.name, space.dataset, space.budget.epochs, space.quick_budget.num_samples) == ("mine", "regdb", 40, 3)
    base = space.base(quick=False)
    assert base.train.epochs == 40 and base.data.purpose == "search" and base.data.dataset == "regdb"
    assert space.base(quick=True).eval.trials == 2
    # Warm start: the point's values, the rest from the base where they lie in range; the conditional
    # milestone is left out (schedule is cosine), the triplet weight (active) comes from the base.
    (point,) = space.warm_start(base)
    assert point == {
        "mmd_inter": 0.8,
        "lr": base.optim.lr,
        "schedule": "cosine",
        "cfg.data.instances": base.data.instances,
        "cfg.loss.triplet_weight": base.loss.triplet_weight,
    }
    fn = pickle.loads(pickle.dumps(space.define_by_run(base)))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(point)
    seen = set()
    for _ in range(30):
        trial = study.ask()
        fn(trial)
        p = trial.params
        assert ("milestone1_frac" in p) == (p["schedule"] == "step")  # conditions hold
        assert ("cfg.loss.triplet_weight" in p) == (p["schedule"] == "cosine")
        assert base.optim.lr * 0.5 - 1e-12 <= p["lr"] <= base.optim.lr * 2.0 + 1e-12  # scale: base
        assert p["cfg.data.instances"] in (2, 4, 6, 8) and round(p["mmd_inter"] * 10, 6) % 1 == 0
        cfg = apply_params(base, p)
        assert cfg.data.instances == p["cfg.data.instances"] and cfg.loss.mmd_inter_weight == p["mmd_inter"]
        seen.add(p["schedule"])
        study.tell(trial, 0.0)
    assert seen == {"step", "cosine"}


@pytest.mark.parametrize(
    "edit, needle",
    [
        (("dataset: regdb", "dataset: market"), "dataset: 'market'"),
        (("base: regdb.yaml", "base: nowhere.yaml"), "base: nowhere.yaml: not found"),
        (("trials: 12", "trials: 0"), "budget.full.trials: expected an integer >= 1"),
        (("grace: 10", "grace: 50"), "budget.full.grace: 50 is more than epochs"),
        (("mmd_inter: {type", "mmd_intr: {type"), "parameters.mmd_intr: not a search parameter"),
        (("low: 0.5, high: 1.0", "low: 1.5, high: 1.0"), "parameters.mmd_inter: low (1.5) is above high"),
        (("type: int", "type: integer"), "parameters.cfg.data.instances.type: 'integer'"),
        (("when: {schedule: step}", "when: {shedule: step}"), "parameters.milestone1_frac.when.shedule: must name"),
        (("when: {schedule: step}", "when: {schedule: linear}"), "'linear' is not a value schedule can take"),
        (("cfg.data.instances", "cfg.data.instancez"), "cfg.data.instancez"),
        (("{mmd_inter: 0.8", "{mmd_inter: 0.3"), "warm_start[0].mmd_inter: 0.3 is outside"),
        (("log: true, scale: base", "log: true, scale: paper"), "parameters.lr.scale: 'paper'"),
        (("parameters:", "parameterz:"), "parameterz: unknown key"),
        (("  mmd_inter: {", "  mmd_inter: [{"), "not valid YAML"),
    ],
)
def test_bad_space_files_fail_with_one_line_naming_the_key(tmp_path, edit, needle):
    path = tmp_path / "bad.yaml"
    assert edit[0] in _MY_SPACE
    path.write_text(_MY_SPACE.replace(edit[0], edit[1], 1))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and needle in message, message


@pytest.mark.parametrize("kind", SAMPLERS)
def test_every_sampler_samples_the_shipped_space(kind):
    space = get_space("sysu")
    base = space.base(quick=True)
    fn = space.define_by_run(base)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(kind, seed=0, num_samples=6))
    for i in range(5):  # past the startup trials: the model-based part proposes too
        trial = study.ask()
        fn(trial)
        apply_params(base, trial.params)
        study.tell(trial, trial.params["mmd_inter"] - abs(trial.params["mmd_intra"] - 0.4))
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_the_searcher_starts_no_trial_after_its_deadline(tmp_path):
    deadline = tmp_path / "deadline"
    s = PrunedAwareOptunaSearch(
        _x_space,
        metric="score",
        mode="max",
        storage=optuna.storages.InMemoryStorage(),
        study_name="t",
        max_epochs=2,
        deadline_file=str(deadline),
    )
    assert "x" in s.suggest("a")  # no deadline file: no budget
    deadline.write_text(f"{time.time() + 60}\n")
    assert "x" in s.suggest("b")
    deadline.write_text(f"{time.time() - 1}\n")
    assert s.suggest("c") == s.FINISHED
    s = pickle.loads(pickle.dumps(s))  # Ray restores the searcher from a pickle: the file still decides
    deadline.write_text(f"{time.time() + 60}\n")
    assert "x" in s.suggest("d")


def test_to_overrides_maps_fractions_to_epochs_and_rejects_unknown_names():
    base = Config.from_dict({"train": {"epochs": 80}})
    out = to_overrides(
        {
            "warmup_frac": 0.1,
            "milestone1_frac": 0.3,
            "milestone2_frac": 0.7,
            "lr": 0.05,
            "cfg.loss.triplet_weight": 0.5,
        },
        base,
    )
    assert out == {
        "optim.warmup_share": 0.1,
        "optim.milestone_shares": [0.3, 0.7],
        "optim.lr": 0.05,
        "loss.triplet_weight": 0.5,
    }
    cfg = apply_params(base, {"warmup_frac": 0.1, "milestone1_frac": 0.3, "milestone2_frac": 0.7})
    assert cfg.optim.warmup_epochs(80) == 8 and cfg.optim.milestone_epochs(80) == [24, 56]
    cosine = apply_params(base, {"schedule": "cosine", "warmup_frac": 0.25})
    assert cosine.optim.warmup_epochs(80) == 20 and cosine.optim.milestone_epochs(80) == [20, 50]
    with pytest.raises(KeyError, match="mmd_intra_w"):
        to_overrides({"mmd_intra_w": 0.3}, base)
    with pytest.raises(KeyError, match="bandwidths"):
        to_overrides({"bandwidths": "huge"}, base)


def test_searcher_tells_early_stopped_trials_as_pruned():
    storage = optuna.storages.InMemoryStorage()
    s = PrunedAwareOptunaSearch(_x_space, metric="score", mode="max", storage=storage, study_name="u", max_epochs=6)
    for tid in ("full", "stopped", "crashed"):
        assert "x" in s.suggest(tid)
    for e in (2, 4, 6):
        s.on_trial_result("full", {"score": 0.1 * e, "epoch": e})
    s.on_trial_complete("full", {"score": 0.6, "epoch": 6})
    s.on_trial_result("stopped", {"score": 0.3, "epoch": 2})
    s.on_trial_result("stopped", {"score": 0.3, "epoch": 2})  # a retried trial repeats a step: ignored
    s.on_trial_complete("stopped", {"score": 0.35, "epoch": 2})
    s.on_trial_complete("crashed", None, error=True)
    trials = optuna.load_study(study_name="u", storage=storage).trials
    states = {t.number: (t.state.name, t.value) for t in trials}
    assert states == {0: ("COMPLETE", 0.6), 1: ("PRUNED", 0.3), 2: ("FAIL", None)}
    assert trials[0].intermediate_values == {2: pytest.approx(0.2), 4: pytest.approx(0.4), 6: pytest.approx(0.6)}


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return tiny_roots(tmp_path_factory.mktemp("search"))


@pytest.mark.parametrize(
    "case, extra, needle",
    [
        ("space", ["--space", "market"], "--space 'market'"),
        ("space-file", ["--space", "/nonexistent/space.yaml"], "--space /nonexistent/space.yaml: file not found"),
        ("time-budget", ["--time-budget", "0"], "--time-budget must be > 0"),
        ("root", ["--data-root", "/nonexistent/SYSU"], "--data-root: folder not found"),
        ("override", ["--set", "loss.mmd_intra_weight=-1"], "loss.mmd_intra_weight"),
        ("override-key", ["--set", "loss.mmd_weigth=1"], "mmd_weigth"),
        ("address", ["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: cannot reach"),
        ("resume", ["--resume"], "--resume: no search named"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_anything_starts(roots, case, extra, needle):
    tmp, sysu, regdb = roots
    name = f"bad-{case}"
    out = subprocess.run(
        search_args(tmp, sysu, regdb, name) + extra,
        capture_output=True,
        text=True,
        timeout=300,
        env=search_env(),
        cwd=tmp,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], out.stderr[-2000:]
    assert not (tmp / (name + ".db")).exists() and not (tmp / "ray" / name).exists()


@pytest.mark.slow
def test_asha_stopped_trials_are_pruned_in_optuna_with_the_real_scheduler(tmp_path):
    """A toy trainable whose score is its parameter: ASHA must stop the weak one at the first rung."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def toy(config):
        for epoch in range(1, 7):
            tune.report({"score": config["x"], "epoch": epoch})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
        searcher = PrunedAwareOptunaSearch(
            _x_space,
            metric="score",
            mode="max",
            points_to_evaluate=[{"x": 0.9}, {"x": 0.1}],
            storage=storage,
            study_name="toy",
            max_epochs=6,
        )
        tuner = tune.Tuner(
            toy,
            tune_config=tune.TuneConfig(
                metric="score",
                mode="max",
                search_alg=searcher,
                num_samples=2,
                max_concurrent_trials=1,
                scheduler=ASHAScheduler(time_attr="epoch", max_t=6, grace_period=2, reduction_factor=2),
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="toy", verbose=0),
        )
        tuner.fit()
    finally:
        ray.shutdown()
    trials = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'o.db'}").trials
    by_x = {round(t.params["x"], 1): t for t in trials}
    assert by_x[0.9].state.name == "COMPLETE" and max(by_x[0.9].intermediate_values) == 6
    assert by_x[0.1].state.name == "PRUNED" and by_x[0.1].value == pytest.approx(0.1)
    assert max(by_x[0.1].intermediate_values) < 6


@pytest.mark.slow
def test_a_time_budget_stops_starting_trials_then_the_search_selects_registers_and_retrains(roots):
    """--time-budget: trials running at the deadline finish (a half-trained one could not be selected), no
    new one starts, and the search still selects, evaluates and registers; here with the random sampler.
    Then --retrain-best: the winner's config re-trained as fixed-config runs on both benchmarks (one Ray task
    per model), linked to the search."""
    tmp, sysu, regdb = roots
    name = "budgeted"
    out = subprocess.run(
        search_args(
            tmp,
            sysu,
            regdb,
            name,
            "--num-samples",
            "20",
            "--time-budget",
            "15",
            "--reseeds",
            "0",
            "--sampler",
            "random",
            "--retrain-best",
            "--retrain-trials",
            "1",
        ),
        capture_output=True,
        text=True,
        timeout=900,
        env=search_env(),
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--time-budget 15 s reached" in out.stderr and "champion" in out.stdout
    client, parents, trials = search_runs(tmp, name)
    assert parents[0].info.status == "FINISHED" and parents[0].data.params["search.sampler"] == "random"
    assert 1 <= len(trials) < 20 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["aminet.outcome"] for r in trials} <= {"completed", "stopped_early"}
    assert "completed" in {r.data.tags["aminet.outcome"] for r in trials}  # running trials were not cut off
    assert {r.data.tags.get("aminet.device") for r in trials} == {"cpu fp32"}  # what each trial trained on
    state = json.loads((tmp / "ray" / name / "aminet_search.json").read_text())
    assert state["stage"] == "finished" and state["search_seconds"] >= 15
    assert f"optuna-dashboard sqlite:///{tmp / 'ray' / name / 'optuna.db'}" in out.stdout

    # --retrain-best: final runs on both benchmarks under the search's parent run.
    parent_id = parents[0].info.run_id
    exp = client.get_experiment_by_name("aminet-final")
    runs = client.search_runs([exp.experiment_id], f"tags.`aminet.search_parent` = '{parent_id}'")
    summaries = [r for r in runs if r.data.tags.get("aminet.role") == "summary"]
    assert sorted(r.data.params["data.dataset"] for r in summaries) == ["regdb", "sysu"]
    assert all(r.data.params["data.purpose"] == "final" for r in summaries)
    assert {r.info.status for r in runs} == {"FINISHED"}
    models = [r for r in runs if r.data.tags.get("aminet.role") == "model"]
    assert sorted(r.data.tags["aminet.trial"] for r in models) == ["-", "1"]  # SYSU: one run; RegDB: trial 1
    assert "Visible to Thermal" in out.stdout and "All Search" in out.stdout
    # Each model was its own Ray task, a child of its benchmark's summary run, which then holds the
    # mean +- std over seeds computed from the children's per-trial tables.
    assert "2 model(s) as Ray tasks (sysu: 1, regdb: 1)" in out.stdout
    by_dataset = {r.data.params["data.dataset"]: r for r in summaries}
    for m in models:
        assert m.data.tags["mlflow.parentRunId"] == by_dataset[m.data.params["data.dataset"]].info.run_id
    sysu_model = next(m for m in models if m.data.params["data.dataset"] == "sysu")
    sysu_summary = by_dataset["sysu"].data.metrics
    assert sysu_summary["test/all/R1_mean"] == pytest.approx(sysu_model.data.metrics["test/all/R1"])
    assert sysu_summary["test/all/R1_std"] == 0.0
    assert "test/v2t/mAP_mean" in by_dataset["regdb"].data.metrics

    # optuna-dashboard (the README's live view of a search) serves this study's database.
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "optuna-dashboard"),
            f"sqlite:///{tmp / 'ray' / name / 'optuna.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("optuna-dashboard did not answer within 60 s")
        (study,) = [x for x in studies if x["study_name"] == name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == len(trials) and "lr" in {p["name"] for p in detail["trials"][0]["params"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_search_end_to_end_with_a_crashed_trial_retried_from_its_checkpoint(roots):
    tmp, sysu, regdb = roots
    name = "e2e"
    marker = tmp / "crashed.marker"
    trial_tmp = tmp / "trial-tmp"  # the temp folder of the search's processes (each trial's local checkpoints)
    trial_tmp.mkdir()
    out = subprocess.run(
        search_args(tmp, sysu, regdb, name, "--num-samples", "3", "--drill", f"crash-once={marker}:2"),
        capture_output=True,
        text=True,
        timeout=900,
        env=search_env(TMPDIR=str(trial_tmp)),
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert marker.is_file()  # the injected crash happened ...
    assert not list(trial_tmp.glob("aminet-trial-*"))  # no trial's local folder is left, early-stopped or not
    assert "Thermal to Visible" in out.stdout and "All Search" in out.stdout and "champion" in out.stdout

    client, parents, trials = search_runs(tmp, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    # ... and the trial was retried within the same MLflow run: one run per trial, all ended.
    assert len(trials) == 3 and len({r.data.tags["ray.trial_id"] for r in trials}) == 3
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    resumed = [r for r in trials if int(r.data.tags.get("aminet.resumed_from", 0)) >= 2]
    assert len(resumed) == 1, "the crashed trial continues from its epoch-2 checkpoint"
    hist = client.get_metric_history(resumed[0].info.run_id, "val/score")
    assert sorted({m.step for m in hist}) == list(range(1, int(resumed[0].data.tags["aminet.last_epoch"]) + 1))

    # What a reader of the MLflow UI needs (issue 15): runs named by Optuna trial number and values, the
    # whole config under the fixed-config names plus the sampled values, every epoch's training figures,
    # validation under val/ without duplicates, the datasets as inputs, source and git tags.
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in trials)
    assert numbers == sorted(t.number for t in search_study(tmp, name).trials)
    from aminet.data.cache import dataset_fingerprint

    for r in trials:
        n = r.data.tags["optuna.trial_number"]
        assert r.info.run_name.startswith(f"trial {n}: intra "), r.info.run_name
        assert {"optim.lr", "loss.mmd_intra_weight", "model.upper_body_ratio", "lr", "mmd_intra"} <= set(r.data.params)
        assert not any(k.startswith("search.") for k in r.data.params)
        assert float(r.data.params["optim.lr"]) == pytest.approx(float(r.data.params["lr"]))
        last = int(r.data.tags["aminet.last_epoch"])
        for key in ("train/loss", "train/lr", "train/images_per_s", "train/epoch_seconds", "train/id"):
            assert sorted({m.step for m in client.get_metric_history(r.info.run_id, key)}) == list(range(1, last + 1))
        assert "val/all/R1" in r.data.metrics and not {"R1", "mAP", "score", "resumed_from"} & set(r.data.metrics)
        assert r.data.tags["mlflow.source.name"] == "search/run.py" and r.data.tags["mlflow.source.git.commit"]
        contexts = {
            next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset for d in r.inputs.dataset_inputs
        }
        assert set(contexts) == {"train", "validation"}
        assert {d.digest for d in contexts.values()} == {dataset_fingerprint(sysu)}
        assert contexts["train"].name == "sysu-synthetic-train" and contexts["validation"].name.endswith("validation")

    # Optuna: early-stopped trials are PRUNED, full ones COMPLETE; the MLflow outcome agrees.
    study = search_study(tmp, name)
    assert len(study.trials) == 3
    outcome = {r.data.tags["ray.trial_id"]: r.data.tags["aminet.outcome"] for r in trials}
    assert sorted(outcome.values()).count("completed") == sum(t.state.name == "COMPLETE" for t in study.trials)
    assert sorted(outcome.values()).count("stopped_early") == sum(t.state.name == "PRUNED" for t in study.trials)
    # Disk: Ray keeps one checkpoint of a finished trial (the one selection evaluates) and none of a stopped one
    for trial_id, how in outcome.items():
        folder = next(p for p in (tmp / "ray" / name).iterdir() if p.is_dir() and f"_{trial_id}_" in p.name)
        assert len(list(folder.glob("checkpoint_*"))) == (1 if how == "completed" else 0), (how, folder)

    m = parent.data.metrics
    for key in ("val/score", "test/sysu/all/R1", "test/sysu/indoor/mAP", "test/regdb/v2t/R1", "test/regdb/t2v/mINP"):
        assert 0.0 <= m[key] <= 1.0, key
    assert parent.data.tags["test.regdb.v2t.scope"].startswith("cross-dataset, 10 trials")
    assert parent.data.tags["test.sysu.all.scope"].startswith("in-domain, 10 trials")
    arts = {a.path for d in ("", "plots", "best", "search") for a in client.list_artifacts(parent.info.run_id, d)}
    for path in (
        "plots/optimization_history.png",
        "plots/parallel_coordinate.png",
        "plots/intermediate_values.png",
        "best/config.yaml",
        "search/trials.csv",
        "search/base_config.yaml",
    ):
        assert path in arts, path
    # three trials are too few for parameter importances: said, not drawn from noise
    assert parent.data.tags["importance"].startswith("not computed: ") and "plots/param_importances.png" not in arts
    assert not any(k.startswith("importance/") for k in m)
    local = client.download_artifacts(parent.info.run_id, "best/config.yaml", str(tmp))
    best_cfg = Config.from_yaml(Path(local).read_text())
    assert best_cfg.data.purpose == "search" and best_cfg.model.arch == "resnet18"
    from aminet.data.cache import dataset_fingerprint

    name = f"aminet-sysu-synthetic-{dataset_fingerprint(sysu)[:8]}"
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version is not None and version.tags["aminet.search"] == "e2e"
    # The parent describes the search and links the winner, which is tagged.
    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context") + ":" + d.dataset.name
        for d in parent.inputs.dataset_inputs
    }
    assert {
        "train:sysu-synthetic-train",
        "validation:sysu-synthetic-validation",
        "test:sysu-synthetic-test",
        "test:regdb-synthetic-test",
    } <= contexts, contexts
    note = parent.data.tags["mlflow.note.content"]
    assert "Winner: [trial" in note and "Test protocols" in note and "Units:" in note
    winner_run = client.get_run(parent.data.tags["aminet.best_trial_run"])
    assert winner_run.data.tags["aminet.winner"] == "true" and winner_run.info.run_id in note
    check_champion_loads_safely(client, name, version, tmp)
    # Re-seeds: the top 2 finished trials x 1 more seed, as Ray trials under the same parent run.
    reseeds = [
        r
        for r in client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        if r.data.tags.get("aminet.role") == "reseed"
    ]
    finished = sum(t.state.name == "COMPLETE" for t in study.trials)
    assert len(reseeds) == min(2, finished) and {r.data.params["seed"] for r in reseeds} == {"1"}
    assert all(r.info.run_name.startswith("reseed top") for r in reseeds)
    assert {r.info.status for r in reseeds} == {"FINISHED"}
    assert m["val/score_std"] >= 0 and "search/reseeds.csv" in {
        a.path for a in client.list_artifacts(parent.info.run_id, "search")
    }
    assert "over seeds [0, 1]" in out.stdout or finished == 0

    # The same search in the real MLflow UI, in a headless Chromium (scripts/check_mlflow_ui.py): the runs page
    # in the training view with the trial runs under the parent, a trial, the parent's description and the
    # champion's model page. CI installs Debian's chromium and Playwright (.ci/run); elsewhere this part needs
    # both and is left out without them.
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser and importlib.util.find_spec("playwright"):
        ui = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "check_mlflow_ui.py"),
                "--mlflow-uri",
                f"sqlite:///{tmp / 'e2e.db'}",  # the search's store (``name`` is now the registered model's)
                "--out",
                str(tmp / "ui_screens"),
                "--browser",
                browser,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ui.returncode == 0, (ui.stdout + ui.stderr)[-3000:]
        assert {p.name for p in (tmp / "ui_screens").iterdir()} == {
            "1_runs.png",
            "2_trial.png",
            "3_parent.png",
            "4_model.png",
        }


def check_champion_loads_safely(client, name, version, tmp):
    """The champion is not a pickle: weights as a state dict, a model from code, a signature and an input
    example; its source is the run that trained it (a trial or re-seed run, not the search's parent); loaded
    in a fresh process it gives the features the training process computes from the checkpoint."""
    import numpy as np
    import torch

    from aminet.evaluation.protocol import extract_features
    from aminet.evaluation.trained import load_trained

    source = client.get_run(version.run_id)
    assert (
        source.data.tags["aminet.role"] in ("trial", "reseed") and version.tags["aminet.source_run"] == version.run_id
    )
    assert version.description and "Validation score" in version.description
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(tmp / "champ")))
    files = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert not any(f.endswith(".pkl") or f.endswith(".pickle") for f in files), files
    assert "artifacts/weights.pt" in files and "artifacts/config.yaml" in files and "MLmodel" in files
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "signature:" in mlmodel and "saved_input_example_info" in mlmodel and "python_model.pkl" not in mlmodel
    torch.load(model_dir / "artifacts" / "weights.pt", weights_only=True)  # plain tensors: loads with weights_only

    model, cfg = load_trained(version.tags["aminet.checkpoint"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, cfg.data.height, cfg.data.width, 3), dtype=np.uint8)
    np.save(tmp / "probe.npy", images)
    expected = extract_features(model.extract, images, "infrared", flip=cfg.eval.flip)[cfg.eval.feature].numpy()
    code = (
        f"import mlflow, numpy as np; mlflow.set_tracking_uri({client.tracking_uri!r}); "
        f"m = mlflow.pyfunc.load_model('models:/{name}@champion'); "
        f"np.save({str(tmp / 'served.npy')!r}, m.predict(np.load({str(tmp / 'probe.npy')!r}), "
        f"params={{'modality': 'infrared'}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    served = np.load(tmp / "served.npy")
    assert served.shape == expected.shape and np.allclose(served, expected, atol=1e-5)


@pytest.mark.slow
def test_interrupted_search_resumes_without_rerunning_or_duplicating(roots):
    tmp, sysu, regdb = roots
    name = "resume"
    no_extras = ("--no-register", "--reseeds", "0", "--no-final-eval")  # what is tested is the resume itself
    args = search_args(tmp, sysu, regdb, name, "--num-samples", "3", "--max-concurrent", "1", *no_extras)
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=search_env(), cwd=tmp, start_new_session=True
    )
    deadline = time.time() + 400
    first_done = None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        try:
            _, _, trials = search_runs(tmp, name)
        except Exception:  # noqa: BLE001 - the database is being created
            continue
        done = [r for r in trials if "aminet.outcome" in r.data.tags]
        if done:
            first_done = done[0].data.tags["ray.trial_id"]
            break
    assert first_done is not None, "no trial finished in time"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=180) == 130
    client, parents, _ = search_runs(tmp, name)
    assert parents[0].info.status == "KILLED"
    results = {
        p.name.split("_")[2]: sum(1 for _ in open(p / "result.json"))
        for p in (tmp / "ray" / name).glob("train_aminet_*")
        if (p / "result.json").is_file()
    }
    before = results[first_done]

    args = search_args(
        tmp,
        sysu,
        regdb,
        name,
        "--num-samples",
        "3",
        "--max-concurrent",
        "1",
        *no_extras,
        "--resume",
    )
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, env=search_env(), cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    client, parents, trials = search_runs(tmp, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 3 and len({r.data.tags["ray.trial_id"] for r in trials}) == 3
    assert {r.info.status for r in trials} == {"FINISHED"}
    after = {
        p.name.split("_")[2]: sum(1 for _ in open(p / "result.json"))
        for p in (tmp / "ray" / name).glob("train_aminet_*")
    }
    assert after[first_done] == before  # the finished trial was not run again
    assert len(search_study(tmp, name).trials) == 3
    state = json.loads((tmp / "ray" / name / "aminet_search.json").read_text())
    assert state["parent_run_id"] == parents[0].info.run_id


def test_importances_are_withheld_until_enough_trials_completed():
    """Parameter importances (PED-ANOVA on the COMPLETE trials) are reported only from MIN_TRIALS_FOR_IMPORTANCE
    complete trials on; pruned (ASHA-stopped) trials do not count, and the reason names the count."""
    from search.importance import MIN_TRIALS_FOR_IMPORTANCE, importance_withheld

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(MIN_TRIALS_FOR_IMPORTANCE - 1):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, trial.params["x"])
    for _ in range(5):  # stopped early: not evidence for importances
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    reason = importance_withheld(study)
    assert reason.startswith(f"{MIN_TRIALS_FOR_IMPORTANCE - 1} trial(s) trained to the full budget")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, trial.params["x"])
    assert importance_withheld(study) == ""


def test_importances_rank_the_parameter_that_matters_and_the_plot_draws_the_same_numbers():
    """With the minimum number of complete trials, the importances give the parameter the objective depends on
    most of the weight (Optuna's default top quantile, one trial of ten, gives it ~0.6 on average here), the
    same numbers every time, and the importance plot draws exactly those numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from search.importance import MIN_TRIALS_FOR_IMPORTANCE, FittedImportances, parameter_importances

    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        trial.suggest_categorical("z", ["a", "b"])  # inert
        return x + 0.05 * y

    share_of_x = []
    for seed in range(10):
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
        study.optimize(objective, n_trials=MIN_TRIALS_FOR_IMPORTANCE - 1)
        assert parameter_importances(study)[0] == {}
        study.optimize(objective, n_trials=1)
        imp, why_not = parameter_importances(study)
        assert why_not == "" and set(imp) == {"x", "y", "z"} and abs(sum(imp.values()) - 1) < 1e-9
        assert max(imp, key=imp.get) == "x"
        assert parameter_importances(study) == (imp, "")
        share_of_x.append(imp["x"])
    assert np.mean(share_of_x) > 0.75

    ax = ovm.plot_param_importances(study, evaluator=FittedImportances(imp))
    drawn = {t.get_text(): bar.get_width() for t, bar in zip(ax.get_yticklabels(), ax.patches, strict=True)}
    plt.close(ax.figure)
    assert drawn == pytest.approx(imp)


def test_search_summary_logs_importances_and_their_plot_once_enough_trials_completed(tmp_path, capsys):
    """A search with enough complete trials gets importance metrics, the same numbers as a JSON artifact, and
    the importance plot among the parent's plots, and no "not computed" tag; the console ranks them."""
    from types import SimpleNamespace

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from search.importance import MIN_TRIALS_FOR_IMPORTANCE
    from search.lineage import log_search_summary

    study_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(
        study_name="s", storage=study_url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(lambda t: t.suggest_float("lr", 0, 1) + 0.0 * t.suggest_float("w", 0, 1), MIN_TRIALS_FOR_IMPORTANCE)

    class Results(list):  # what the summary reads of Ray's ResultGrid
        def get_dataframe(self):
            return pd.DataFrame({"trial_id": ["a"], "score": [0.5], "config/lr": [0.1]})

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    log_search_summary(client, run_id, SimpleNamespace(name="s"), Results(), study_url)
    run = client.get_run(run_id)
    logged = {k.split("/", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("importance/")}
    assert set(logged) == {"lr", "w"} and max(logged, key=logged.get) == "lr"
    saved = json.loads(Path(client.download_artifacts(run_id, "search/importances.json", str(tmp_path))).read_text())
    assert saved == pytest.approx(logged)
    assert "plots/param_importances.png" in [a.path for a in client.list_artifacts(run_id, "plots")]
    assert "importance" not in run.data.tags and "plot.param_importances" not in run.data.tags
    assert f"parameter importances (Optuna's PED-ANOVA): lr {logged['lr']:.2f}, w " in capsys.readouterr().err


def test_searcher_ignores_results_of_a_trial_the_study_already_closed():
    """After a driver is SIGKILLed, Ray may restore a trial whose end it had not snapshotted although the
    study (SQLite) already holds it: its repeated results must not fail the trial."""
    storage = optuna.storages.InMemoryStorage()
    s = PrunedAwareOptunaSearch(_x_space, metric="score", mode="max", storage=storage, study_name="k", max_epochs=4)
    s.suggest("a")
    study = optuna.load_study(study_name="k", storage=storage)
    study.tell(study.trials[0].number, 0.5)  # what the killed driver had told
    s.on_trial_result("a", {"score": 0.7, "epoch": 4})
    s.on_trial_complete("a", {"score": 0.7, "epoch": 4})
    t = optuna.load_study(study_name="k", storage=storage).trials[0]
    assert (t.state.name, t.value) == ("COMPLETE", 0.5)


def test_retrain_best_plans_one_task_per_model(tmp_path):
    """--retrain-best trains each model (seed, and RegDB trial) as its own task under its benchmark's
    summary run, so the cluster can run them in parallel."""
    from types import SimpleNamespace

    from search.outcome import retrain_units

    plan = SimpleNamespace(
        state_dir=tmp_path, name="s", settings=SimpleNamespace(retrain_seeds=(0, 1), retrain_trials=(1, 2))
    )
    units = retrain_units(plan, "sqlite:///x.db", {"sysu": "P1", "regdb": "P2"}, "SEARCH")
    assert [d for d, _ in units] == ["sysu"] * 2 + ["regdb"] * 4

    def flag(cmd, name):
        i = cmd.index(name)
        return cmd[i + 1 : i + 2]

    got = [
        (d, flag(c, "--seeds"), flag(c, "--trials") if "--trials" in c else None, flag(c, "--parent-run-id"))
        for d, c in units
    ]
    assert got == [
        ("sysu", ["0"], None, ["P1"]),
        ("sysu", ["1"], None, ["P1"]),
        ("regdb", ["0"], ["1"], ["P2"]),
        ("regdb", ["0"], ["2"], ["P2"]),
        ("regdb", ["1"], ["1"], ["P2"]),
        ("regdb", ["1"], ["2"], ["P2"]),
    ]
    assert all("aminet.search_parent=SEARCH" in c for _, c in units)


# ------------------------------------------------------------------------------------------------
# Selection, re-seeding and the champion (issue 14)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_only_trials_that_reached_the_full_budget_can_win(tmp_path):
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from search.champion import finished

    class StopHigh(FIFOScheduler):
        """A scheduler decision the test controls: the trial with x=0.9 (the best score at every epoch) is
        stopped after epoch 2, as an asynchronous ASHA rung can stop a trial whose last score is the highest."""

        def on_trial_result(self, tune_controller, trial, result):
            if trial.config["x"] > 0.8 and result["epoch"] >= 2:
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    def toy(config):
        for epoch in range(1, 7):
            tune.report({"score": config["x"] * (1.0 if epoch < 6 else 0.9), "epoch": epoch})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            toy,
            param_space={"x": tune.grid_search([0.9, 0.5, 0.3])},
            tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=StopHigh()),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="toy", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    # What Ray itself would crown: the stopped trial (last score 0.9 at epoch 2 beats 0.45 at epoch 6).
    assert grid.get_best_result("score", "max", scope="last").config["x"] == 0.9
    chosen = finished(grid, max_epochs=6)
    assert [r.config["x"] for r in chosen] == [0.5, 0.3]


def _result(score, epoch, config=None, error=None, diverged=False, trial_id="t"):
    from types import SimpleNamespace

    metrics = {"score": score, "epoch": epoch, "trial_id": trial_id, "R1": score, "mAP": score, "mINP": score}
    if diverged:
        metrics["diverged"] = 1.0
    return SimpleNamespace(metrics=metrics, config=config or {}, error=error, checkpoint=object(), path="p")


def test_reseeding_picks_the_best_mean_not_the_luckiest_seed():
    from search.champion import candidates_from, choose, finished, reseed_seeds

    lucky = _result(0.80, 6, {"lr": 1}, trial_id="lucky")
    steady = _result(0.70, 6, {"lr": 2}, trial_id="steady")
    results = [
        lucky,
        steady,
        _result(0.95, 3, {"lr": 3}),
        _result(0.99, 6, {"lr": 4}, error=RuntimeError("x")),
        _result(0.0, 6, {"lr": 5}, diverged=True),
    ]
    top = finished(results, 6)
    assert [r.config["lr"] for r in top] == [1, 2]  # stopped, failed and diverged trials never compete
    seeds = reseed_seeds(0, 2)
    assert seeds == [1, 2]
    reseeds = [
        _result(0.40, 6, {"candidate": 0, "seed": 1}),
        _result(0.0, 4, {"candidate": 0, "seed": 2}, diverged=True),
        _result(0.72, 6, {"candidate": 1, "seed": 1}),
        _result(0.68, 6, {"candidate": 1, "seed": 2}),
    ]
    cands = candidates_from(top, 0, reseeds, 6)
    assert cands[0].seeds == [0, 1, 2] and cands[0].scores == [0.80, 0.40, 0.0]  # a divergence scores 0
    assert cands[1].mean == pytest.approx(0.70) and cands[1].std == pytest.approx(0.02)
    assert choose(cands).trial_id == "steady"
    assert choose(cands).best_model() is reseeds[2]  # its best seed on validation is the model registered


def test_reseed_candidates_are_compared_on_the_seeds_they_share_and_fresh_seeds_only_when_asked():
    from search.champion import candidates_from, choose, selection_score, selection_seeds

    top = [_result(0.90, 6, {"lr": 1}, trial_id="first"), _result(0.70, 6, {"lr": 2}, trial_id="second")]
    reseeds = [
        _result(0.60, 6, {"candidate": 0, "seed": 1}),
        _result(0.20, 6, {"candidate": 0, "seed": 2}),
        _result(0.72, 6, {"candidate": 1, "seed": 1}),
        _result(0.99, 6, {"candidate": 1, "seed": 2}, error=RuntimeError("lost node")),  # crashed: no score
    ]
    cands = candidates_from(top, 0, reseeds, 6)
    assert cands[0].seeds == [0, 1, 2] and cands[1].seeds == [0, 1]
    # Over all its seeds "first" (0.90, 0.60, 0.20: 0.567) would lose to "second" (0.70, 0.72: 0.71) only
    # because its bad seed 2 counts and the crashed seed of "second" does not: compare on shared seeds 0, 1.
    assert selection_seeds(cands) == [0, 1]
    assert selection_score(cands[0], [0, 1]) == pytest.approx(0.75)
    assert choose(cands).trial_id == "first"
    # fresh seeds only: the selection seed 0 (on which "first" was ranked first) is left out
    assert selection_seeds(cands, search_seed=0) == [1]
    assert choose(cands, search_seed=0).trial_id == "second"
    # with no re-seeds, the search's seed is all there is
    alone = candidates_from(top, 0, [], 6)
    assert selection_seeds(alone, search_seed=0) == [0] and choose(alone, search_seed=0).trial_id == "first"


def test_champion_alias_moves_only_for_a_better_score_on_the_same_data_and_protocol(tmp_path):
    from mlflow.tracking import MlflowClient

    from aminet.config import load_config
    from search.champion import guard_champion, registered_name, validation_protocol

    assert registered_name("sysu", True, "abcdef0123456789") == "aminet-sysu-synthetic-abcdef01"
    assert registered_name("sysu", False, "abcdef0123456789") != registered_name("sysu", True, "abcdef0123456789")
    client = MlflowClient(f"sqlite:///{tmp_path / 'reg.db'}")
    name = "aminet-sysu-real-00000000"
    client.create_registered_model(name)
    proto = validation_protocol(load_config(None, ["data.purpose=search"]))
    other = validation_protocol(load_config(None, ["data.purpose=search", "eval.trials=3"]))
    assert proto != other

    def version(score, protocol):
        v = client.create_model_version(name, source=str(tmp_path)).version
        client.set_model_version_tag(name, v, "aminet.val_score", repr(score))
        client.set_model_version_tag(name, v, "aminet.protocol", protocol)
        return v

    v1 = version(0.50, proto)
    assert guard_champion(client, name, v1, 0.50, proto)[0]  # the first model becomes champion
    v2 = version(0.40, proto)
    moved, line = guard_champion(client, name, v2, 0.40, proto)
    assert not moved and "NOT champion" in line and f"stays version {v1}" in line
    v3 = version(0.90, other)
    assert not guard_champion(client, name, v3, 0.90, other)[0]  # another protocol: not comparable
    v4 = version(0.60, proto)
    assert guard_champion(client, name, v4, 0.60, proto)[0]
    assert client.get_model_version_by_alias(name, "champion").version == v4


def _saved_search(tmp, name, stage="search", **args):
    folder = tmp / "ray" / name
    folder.mkdir(parents=True)
    saved = {
        "data_root": None,
        "sysu_root": None,
        "regdb_root": None,
        "budget": "quick",
        "num_samples": 3,
        "overrides": [],
        "mlflow_uri": f"sqlite:///{tmp / (name + '.db')}",
        "mlflow_experiment": "aminet-search",
        "grace_period": None,
        "seed": 0,
        "top_k": 2,
        "reseeds": 1,
        **args,
    }
    (folder / "aminet_search.json").write_text(
        json.dumps(
            {
                "space": "sysu",
                "parent_run_id": "x",
                "stage": stage,
                "summary": "selected trial abc: val score 42.00",
                "args": saved,
            }
        )
    )
    return folder


def test_resume_refuses_flags_that_differ_from_the_saved_search(roots):
    tmp, sysu, regdb = roots
    name = "resume-diff"
    _saved_search(tmp, name, data_root=str(sysu), regdb_root=str(regdb), overrides=["train.epochs=4"])
    base = [sys.executable, RUN, "--space", "sysu", "--name", name, "--storage", str(tmp / "ray"), "--resume"]
    for extra, needle in (
        (["--set", "train.epochs=40"], "--set differs"),
        (["--data-root", str(regdb)], "--data-root differs"),
        (["--num-samples", "5"], "--num-samples differs"),
        (["--mlflow-uri", f"sqlite:///{tmp / 'other.db'}"], "--mlflow-uri differs"),
    ):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=120, env=search_env(), cwd=tmp)
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and len(errors) == 1 and needle in errors[0], out.stderr[-2000:]
    assert not (tmp / "other.db").exists()


def test_resuming_a_finished_search_prints_its_summary(roots):
    tmp, _, _ = roots
    name = "resume-done"
    _saved_search(tmp, name, stage="finished")
    out = subprocess.run(
        [sys.executable, RUN, "--space", "sysu", "--name", name, "--storage", str(tmp / "ray"), "--resume"],
        capture_output=True,
        text=True,
        timeout=120,
        env=search_env(),
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "val score 42.00" in out.stdout and "has finished" in out.stderr


def test_the_trial_logger_writes_once_per_evaluation_and_flushes_at_the_end():
    """Per-epoch MLflow writes were most of the driver's cost per result (docs/performance.md): training figures
    wait for the next evaluation (or the trial's end) and go in one batch, each metric at its own epoch."""
    from types import SimpleNamespace

    from search.tuning import TrialRunLogger

    class Client:
        def __init__(self):
            self.batches, self.ended = [], []

        def log_batch(self, run_id, metrics=(), tags=()):
            self.batches.append((run_id, list(metrics), list(tags)))

        def set_tag(self, *a):
            pass

        def set_terminated(self, run_id, status):
            self.ended.append((run_id, status, len(self.batches)))

    logger = TrialRunLogger("sqlite:///unused.db", "0", "parent", max_epochs=6)
    logger._client = client = Client()
    trial = SimpleNamespace(trial_id="t1", last_result={"epoch": 3}, config={})
    logger._runs["t1"] = "run1"
    for epoch in (1, 2, 3):
        result = {"epoch": epoch, "loss": 1.0 / epoch, "node_id": "n1"}
        if epoch == 2:
            result.update(score=0.5, R1=0.4, mAP=0.6)
        logger.log_trial_result(epoch, trial, result)
    assert len(client.batches) == 1  # epochs 1 and 2, written at the evaluation
    steps = sorted((m.key, m.step) for m in client.batches[0][1])
    assert ("train/loss", 1) in steps and ("train/loss", 2) in steps and ("val/score", 2) in steps
    assert [t.key for t in client.batches[0][2]] == ["ray.node_id", "aminet.resumed_from"]
    logger.log_trial_end(trial)  # stopped after epoch 3: its figures are written before the run ends
    assert [(m.key, m.step) for m in client.batches[1][1]] == [("train/loss", 3)]
    assert client.ended == [("run1", "FINISHED", 2)]


def test_the_snapshot_period_is_2_s_for_small_searches_and_grows_with_large_ones():
    from search.cluster import snapshot_period

    assert snapshot_period(6) == snapshot_period(200) == 2.0
    assert snapshot_period(1000) == 10.0 and snapshot_period(8000) == 80.0


def test_a_trial_ending_with_a_nan_score_is_closed_in_optuna_at_once():
    s = PrunedAwareOptunaSearch(
        _x_space, metric="score", mode="max", storage=optuna.storages.InMemoryStorage(), study_name="n", max_epochs=2
    )
    s.suggest("a")
    s.on_trial_complete("a", result={"score": float("nan"), "epoch": 2})
    assert [t.state.name for t in s._ot_study.get_trials(deepcopy=False)] == ["FAIL"]


class _Registry:
    """A registry client stub: ``holders`` are the successive answers to reading the alias (None: no alias,
    an exception: the read fails), ``moves`` records the alias moves."""

    def __init__(self, *holders):
        self.holders = list(holders)
        self.moves = []

    def get_model_version_by_alias(self, name, alias):
        from types import SimpleNamespace

        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        h = self.holders.pop(0) if len(self.holders) > 1 else self.holders[0]
        if isinstance(h, Exception):
            raise h
        if h is None:
            raise MlflowException("Registered model alias champion not found.", error_code=INVALID_PARAMETER_VALUE)
        version, score = h
        return SimpleNamespace(version=version, tags={"aminet.val_score": repr(score), "aminet.protocol": "p"})

    def set_registered_model_alias(self, name, alias, version):
        self.moves.append(version)


def test_the_champion_guard_fails_closed_and_checks_its_move():
    from search.champion import RegistryError, guard_champion

    down = _Registry(ConnectionError("timed out"))
    with pytest.raises(RegistryError, match="could not be read") as info:
        guard_champion(down, "m", "3", 0.9, "p")
    assert down.moves == [] and "\n" not in str(info.value)  # an unreadable registry is not an empty one
    first = _Registry(None, ("3", 0.9))
    assert guard_champion(first, "m", "3", 0.9, "p")[0] and first.moves == ["3"]
    # Two searches finish together: both read "no champion"; the other one's better version lands after our
    # move. Checking the move, we decide again against it and leave it standing.
    raced = _Registry(None, ("4", 0.95), ("4", 0.95))
    moved, line = guard_champion(raced, "m", "3", 0.9, "p")
    assert not moved and raced.moves == ["3"] and "champion stays version 4" in line
