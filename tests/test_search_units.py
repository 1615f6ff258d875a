"""Unit tests of the search wing's parts that need neither Ray nor MLflow (the end-to-end drills are in
tests/test_search.py)."""

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from e2e_helpers import REPO
from e2e_helpers import x_space as _x_space

from aminet.config import Config

# ------------------------------------------------------------------------------------------------
# Pure parts
# ------------------------------------------------------------------------------------------------
from search.context import SearchState
from search.lineage import CLOCK_FILE, SearchClock, save_state
from search.plan import DEADLINE_FILE
from search.spaces import SpaceError, get_space, load_base, load_space, shipped_spaces
from search.tuning import SAMPLERS, PrunedAwareOptunaSearch, make_sampler
from trainables.params import BANDWIDTH_SETS, apply_params, to_overrides


def _state(tmp_path):
    path = tmp_path / "aminet_search.json"
    state = SearchState(space="sysu", parent_run_id="P", mlflow_uri="", experiment_id="1", study="", created=0.0)
    save_state(path, state)
    return state, path


def test_the_time_budget_survives_a_hard_kill(tmp_path):
    """A driver killed mid-search (no ``stop``) has its searching time charged on the next start, up to the last
    heartbeat; it is charged once, even when a later run is killed right after recording it."""
    state, path = _state(tmp_path)
    killed = SearchClock(tmp_path, 100.0, state, path, beat=0.05)
    t0 = time.time()
    assert killed.start() == pytest.approx(t0 + 100.0, abs=0.5)
    time.sleep(0.6)
    killed._stop.set()  # SIGKILL: the heartbeat stops, nothing else runs
    killed._thread.join()
    assert (tmp_path / CLOCK_FILE).is_file()

    state = SearchState.read(path)  # a new driver process reads the saved state
    resumed = SearchClock(tmp_path, 100.0, state, path, beat=0.05)
    deadline = resumed.start()
    charged = json.loads(path.read_text())["search_seconds"]
    assert 0.45 <= charged <= 0.7
    assert deadline == pytest.approx(time.time() + 100.0 - charged, abs=0.2)
    assert float((tmp_path / DEADLINE_FILE).read_text()) == pytest.approx(deadline, abs=1e-3)
    resumed.stop()
    after_stop = json.loads(path.read_text())["search_seconds"]
    assert after_stop >= charged and not (tmp_path / CLOCK_FILE).exists()

    # killed between the state write and the clock file's removal: the next start does not charge it again
    state = SearchState.read(path)
    (tmp_path / CLOCK_FILE).write_text(json.dumps({"started": state.clock_closed, "seen": time.time() + 50}))
    again = SearchClock(tmp_path, 100.0, state, path)
    again.start()
    assert json.loads(path.read_text())["search_seconds"] == pytest.approx(after_stop)
    again.stop()


def test_without_a_budget_there_is_no_deadline(tmp_path):
    state, path = _state(tmp_path)
    (tmp_path / DEADLINE_FILE).write_text("1\n")
    clock = SearchClock(tmp_path, None, state, path)
    assert clock.start() is None and not (tmp_path / DEADLINE_FILE).exists()
    clock.stop()
    assert "search_seconds" not in json.loads(path.read_text())


def _args(tmp_path, *extra):
    from search.plan import parse_args

    return parse_args(
        ["--space", "sysu", "--name", "s1", "--storage", str(tmp_path / "ray"), "--mlflow-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]
    )  # fmt: skip


def _plan(tmp_path, *extra):
    from search.plan import plan_search

    return plan_search(_args(tmp_path, *extra))


def _save(plan, tmp_path, **changes):
    from search.plan import STATE_FILE, identity

    state = {"space": "sysu", "args": identity(_args(tmp_path)), "base_config": plan.base.to_yaml()}
    state.update(changes)
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    (plan.state_dir / STATE_FILE).write_text(json.dumps(state))
    return state


def test_a_resume_whose_base_config_changed_is_refused_with_the_field_named(tmp_path):
    from search.plan import UsageError

    plan = _plan(tmp_path)
    _save(plan, tmp_path, base_config=plan.base.replace({"optim.lr": 0.5, "loss.mmd_inter_weight": 0.1}).to_yaml())
    with pytest.raises(UsageError) as err:
        _plan(tmp_path, "--resume")
    msg = str(err.value)
    assert "\n" not in msg and "loss.mmd_inter_weight: 0.1 saved" in msg and "optim.lr" in msg

    _save(plan, tmp_path)  # the same base: resumes
    assert _plan(tmp_path, "--resume").resume


def test_a_resume_whose_space_changed_is_refused_with_the_parameter_named(tmp_path):
    """A search saved before the parameters were renamed, or with another range, samples another space."""
    from search.plan import UsageError

    plan = _plan(tmp_path)
    saved = plan.space.signature()
    narrower = {**saved, "optim.warmup_share": "float [0.0, 0.25]"}
    old_names = {("mmd_intra" if k == "loss.mmd_intra_weight" else k): v for k, v in saved.items()}
    for changed, needle in ((narrower, "optim.warmup_share: 'float [0.0, 0.25]' saved"), (old_names, "mmd_intra:")):
        _save(plan, tmp_path, space_params=changed)
        with pytest.raises(UsageError) as err:
            _plan(tmp_path, "--resume")
        msg = str(err.value)
        assert "\n" not in msg and needle in msg and "sysu.yaml" in msg, msg
    _save(plan, tmp_path, space_params=saved)
    assert _plan(tmp_path, "--resume").resume


def test_a_resume_after_the_space_files_trial_count_changed_is_refused_and_the_hint_names_the_file(tmp_path):
    """Issue 38: a space file whose trial count was edited resumed, then every resume ended "interrupted"
    (Ray restores the saved trials, the driver wanted more). Now refused in one line naming the field and the
    file; and the resume hint repeats the space as given (a path), not a name that cannot be run."""
    import shutil

    from search.plan import UsageError, resume_command
    from search.spaces import SPACES_DIR

    space_file = tmp_path / "myspace.yaml"
    shutil.copy(SPACES_DIR / "sysu.yaml", space_file)

    def args(*extra):
        from search.plan import parse_args, plan_search

        return plan_search(parse_args(["--space", str(space_file), "--name", "s1", "--storage", str(tmp_path / "ray"),
                                       "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]))  # fmt: skip

    plan = args()
    from search.plan import STATE_FILE, identity, parse_args

    state = {"space": plan.space.name, "base_config": plan.base.to_yaml(), "budget": vars(plan.budget),
             "args": identity(parse_args(["--space", str(space_file), "--storage", str(tmp_path / "ray"),
                                          "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]))}  # fmt: skip
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    (plan.state_dir / STATE_FILE).write_text(json.dumps(state))
    resumed = args("--resume")
    hint = resume_command(resumed)
    assert f"--space {space_file} --name s1 --resume" in hint and "--space myspace " not in hint
    state["budget"] = {**vars(plan.budget), "num_samples": plan.budget.num_samples - 1}  # the file said one fewer
    (plan.state_dir / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(UsageError) as err:
        args("--resume")
    msg = str(err.value)
    assert "\n" not in msg and f"num_samples: {plan.budget.num_samples - 1} saved" in msg and str(space_file) in msg


def test_hints_name_the_command_the_user_ran(monkeypatch):
    import sys

    from aminet.cli import invoked_as

    for argv0, orig, expected in [
        ("/venv/bin/aminet-search", ["/venv/bin/python", "/venv/bin/aminet-search", "--space", "x"], "aminet-search"),
        ("/src/search/run.py", ["python", "-m", "search.run", "--space", "x"], "python -m search.run"),
        ("search/run.py", ["python", "search/run.py", "--space", "x"], "python search/run.py"),
        ("../aminet/search/run.py", ["python", "../aminet/search/run.py"], "python ../aminet/search/run.py"),
        ("/usr/bin/pytest", ["python", "-m", "pytest"], "DEFAULT"),
    ]:
        monkeypatch.setattr(sys, "argv", [argv0])
        monkeypatch.setattr(sys, "orig_argv", orig)
        assert invoked_as("search.run", "DEFAULT") == expected, (argv0, orig)


def test_the_git_commit_is_aminets_own_never_an_enclosing_repository(tmp_path):
    """Issue 38: installed with ``pip install .`` into a project whose venv lies inside the user's own git
    repository, every run recorded the *user's* commit. Only a checkout of aminet itself gives a commit."""
    import shutil
    import subprocess
    import sys

    import tracking.reporting as reporting

    user = tmp_path / "user-project"
    site = user / ".venv" / "lib" / "site-packages"
    (site / "tracking").mkdir(parents=True)
    shutil.copy(reporting.__file__, site / "tracking" / "reporting.py")
    (site / "tracking" / "__init__.py").write_text("")
    git = ["git", "-c", "user.email=u@example.org", "-c", "user.name=u"]
    subprocess.run([*git, "init", "-q", str(user)], check=True)
    (user / "mine.txt").write_text("the user's project\n")
    subprocess.run([*git, "-C", str(user), "add", "mine.txt"], check=True)
    subprocess.run([*git, "-C", str(user), "commit", "-qm", "user"], check=True)
    code = "import sys; sys.path.insert(0, sys.argv[1]); from tracking.reporting import git_commit; print(git_commit())"
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unknown"
    tags = reporting.source_tags("search/run.py")
    assert (
        tags["aminet.version"] != ""
        and "mlflow.source.git.commit" not in tags
        or len(tags["mlflow.source.git.commit"]) == 40
    )


def test_a_resume_on_changed_data_is_refused(tmp_path):
    from search.plan import UsageError, preflight

    plan = _plan(tmp_path)
    _save(plan, tmp_path, fingerprint="0123456789abcdef")
    resumed = _plan(tmp_path, "--resume")
    with pytest.raises(UsageError, match="not the data the search started on .*0123456789abcdef saved"):
        preflight(resumed)
    fingerprint = preflight(plan).fingerprint
    _save(plan, tmp_path, fingerprint=fingerprint)
    assert preflight(_plan(tmp_path, "--resume")).fingerprint == fingerprint


def test_drills_are_read_from_their_specs_and_refuse_bad_ones():
    from aminet.engine.drills import Drill, DrillError

    d = Drill.parse(["nan-if=loss.mmd_intra_weight=0.2:3", "crash-once=/tmp/m:2", "kill-once=/tmp/k:2:1"])
    assert (
        d.nan_if == ("loss.mmd_intra_weight", "0.2", 3)
        and d.crash_once == ("/tmp/m", 2)
        and d.kill_once == ("/tmp/k", 2, 1)
    )
    assert (
        d.for_trial({"loss.mmd_intra_weight": 0.2}).nan_at_step == 3
        and d.for_trial({"loss.mmd_intra_weight": 0.4}).nan_at_step is None
    )
    hook = Drill(nan_at_step=5).on_loss(iters_per_epoch=4)
    assert hook(1, 1, 2.0) != hook(1, 1, 2.0) and hook(1, 0, 2.0) == 2.0  # NaN at epoch 1 step 1 only
    assert Drill().on_loss(4) is None and Drill().on_step() is None
    for bad in ("nan-at-step", "nan-at-step=x", "explode=1", "nan-if=:1", "kill-once=m:2"):
        with pytest.raises(DrillError, match="--drill"):
            Drill.parse([bad])


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
    expected = {"sysu": (0.4, 0.6, 0.5), "regdb": (0.2, 0.8, 0.6), "llcm": (0.4, 0.6, 0.5)}[name]
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
        assert cfg.loss.mmd_multipliers == BANDWIDTH_SETS[trial.params["loss.mmd_multipliers"]]
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
    from aminet.data import registry

    assert shipped_spaces() == ["llcm", "regdb", "sysu"]
    for bench in registry.entries():  # each benchmark ships its space and its fixed config, for its own data
        assert get_space(bench.space_name).dataset == bench.name
        assert Config.from_dict(load_base(REPO / bench.config_file)).data.dataset == bench.name
    assert get_space("sysu").path == REPO / "search" / "spaces" / "sysu.yaml"


_MY_SPACE = """
dataset: regdb
base: regdb.yaml
quick: {base: smoke.yaml, set: {eval.trials: 2}}
budget:
  full: {epochs: 40, eval_every: 5, grace: 10, trials: 12}
  quick: {epochs: 4, eval_every: 2, grace: 1, trials: 3}
parameters:
  loss.mmd_inter_weight: {type: float, low: 0.5, high: 1.0, step: 0.1}
  optim.lr: {type: float, low: 0.5, high: 2.0, log: true, scale: base}
  optim.schedule: {type: categorical, choices: [step, cosine]}
  optim.milestone_shares.0: {type: float, low: 0.3, high: 0.6, when: {optim.schedule: step}}
  data.instances: {type: int, low: 2, high: 8, step: 2}
  loss.triplet_weight: {type: float, low: 0.1, high: 10.0, log: true, when: {optim.schedule: [cosine]}}
warm_start:
  - {loss.mmd_inter_weight: 0.8, optim.schedule: cosine}
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
        "loss.mmd_inter_weight": 0.8,
        "optim.lr": base.optim.lr,
        "optim.schedule": "cosine",
        "data.instances": base.data.instances,
        "loss.triplet_weight": base.loss.triplet_weight,
    }
    fn = pickle.loads(pickle.dumps(space.define_by_run(base)))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(point)
    seen = set()
    for _ in range(30):
        trial = study.ask()
        fn(trial)
        p = trial.params
        assert ("optim.milestone_shares.0" in p) == (p["optim.schedule"] == "step")  # conditions hold
        assert ("loss.triplet_weight" in p) == (p["optim.schedule"] == "cosine")
        assert base.optim.lr * 0.5 - 1e-12 <= p["optim.lr"] <= base.optim.lr * 2.0 + 1e-12  # scale: base
        assert p["data.instances"] in (2, 4, 6, 8) and round(p["loss.mmd_inter_weight"] * 10, 6) % 1 == 0
        cfg = apply_params(base, p)
        assert cfg.data.instances == p["data.instances"] and cfg.loss.mmd_inter_weight == p["loss.mmd_inter_weight"]
        seen.add(p["optim.schedule"])
        study.tell(trial, 0.0)
    assert seen == {"step", "cosine"}


@pytest.mark.parametrize(
    "edit, needle",
    [
        (("dataset: regdb", "dataset: market"), "dataset: 'market'"),
        (("base: regdb.yaml", "base: nowhere.yaml"), "base: nowhere.yaml: not found"),
        (("trials: 12", "trials: 0"), "budget.full.trials: expected an integer >= 1"),
        (("grace: 10", "grace: 50"), "budget.full.grace: 50 is more than epochs"),
        (
            ("loss.mmd_inter_weight: {type", "loss.mmd_inter_w: {type"),
            "parameters.loss.mmd_inter_w: not a config field",
        ),
        (("  loss.mmd_inter_weight: {", "  cfg.loss.mmd_inter_weight: {"), "the cfg. prefix is gone"),
        (("low: 0.5, high: 1.0", "low: 1.5, high: 1.0"), "parameters.loss.mmd_inter_weight: low (1.5) is above high"),
        (("type: int", "type: integer"), "parameters.data.instances.type: 'integer'"),
        (
            ("when: {optim.schedule: step}", "when: {optim.shedule: step}"),
            "parameters.optim.milestone_shares.0.when.optim.shedule: must name",
        ),
        (("when: {optim.schedule: step}", "when: {optim.schedule: linear}"), "'linear' is not a value optim.schedule"),
        (("data.instances", "data.instancez"), "data.instancez"),
        (("{loss.mmd_inter_weight: 0.8", "{loss.mmd_inter_weight: 0.3"), "warm_start[0].loss.mmd_inter_weight: 0.3 is"),
        (("log: true, scale: base", "log: true, scale: paper"), "parameters.optim.lr.scale: 'paper'"),
        (("parameters:", "parameterz:"), "parameterz: unknown key"),
        (("  loss.mmd_inter_weight: {", "  loss.mmd_inter_weight: [{"), "not valid YAML"),
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
        study.tell(trial, trial.params["loss.mmd_inter_weight"] - abs(trial.params["loss.mmd_intra_weight"] - 0.4))
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
            "optim.warmup_share": 0.1,
            "optim.milestone_shares.0": 0.3,
            "optim.milestone_shares.1": 0.7,
            "optim.lr": 0.05,
            "loss.triplet_weight": 0.5,
        },
        base,
    )
    assert out == {
        "optim.warmup_share": 0.1,
        "optim.milestone_shares": [0.3, 0.7],
        "optim.lr": 0.05,
        "loss.triplet_weight": 0.5,
    }
    cfg = apply_params(
        base, {"optim.warmup_share": 0.1, "optim.milestone_shares.0": 0.3, "optim.milestone_shares.1": 0.7}
    )
    assert cfg.optim.warmup_epochs(80) == 8 and cfg.optim.milestone_epochs(80) == [24, 56]
    cosine = apply_params(base, {"optim.schedule": "cosine", "optim.warmup_share": 0.25})
    assert cosine.optim.warmup_epochs(80) == 20 and cosine.optim.milestone_epochs(80) == [20, 50]
    with pytest.raises(KeyError, match="mmd_intra_w"):
        to_overrides({"mmd_intra_w": 0.3}, base)
    with pytest.raises(KeyError, match="loss.mmd_multipliers"):
        to_overrides({"loss.mmd_multipliers": "huge"}, base)


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
    units = retrain_units(plan, {"sysu": "P1", "regdb": "P2", "llcm": "P3"}, "SEARCH")
    got = [(u.dataset, u.seed, u.trial, u.parent_run_id) for u in units]
    assert got == [
        ("sysu", 0, None, "P1"),
        ("sysu", 1, None, "P1"),
        ("regdb", 0, 1, "P2"),
        ("regdb", 0, 2, "P2"),
        ("regdb", 1, 1, "P2"),
        ("regdb", 1, 2, "P2"),
        ("llcm", 0, None, "P3"),
        ("llcm", 1, None, "P3"),
    ]
    assert all(u.tags == {"aminet.search_parent": "SEARCH", "aminet.search_name": "s"} for u in units)
    assert {u.config_file for u in units if u.dataset == "regdb"} == {str(tmp_path / "final_regdb.yaml")}


# ------------------------------------------------------------------------------------------------
# Selection, re-seeding and the champion (issue 14)
# ------------------------------------------------------------------------------------------------


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
    an exception: the read fails), ``versions`` the comparable versions listed, ``moves`` records the alias
    moves (``refuse``: the write raises it)."""

    def __init__(self, *holders, versions=None, refuse=None):
        self.holders = list(holders)
        self.versions = versions or {}
        self.moves = []
        self.refuse = refuse

    @staticmethod
    def _tags(score):
        return {"aminet.val_score": repr(score), "aminet.protocol": "p", "aminet.dataset_fingerprint": "fp"}

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
        return SimpleNamespace(version=version, tags=self._tags(score))

    def search_model_versions(self, query):
        from types import SimpleNamespace

        return [SimpleNamespace(version=v, tags=self._tags(sc)) for v, sc in self.versions.items()]

    def set_registered_model_alias(self, name, alias, version):
        if self.refuse is not None:
            raise self.refuse
        self.moves.append(version)


def test_the_champion_guard_fails_closed_and_checks_its_move():
    from mlflow.exceptions import RestException

    from search.champion import RegistryError, guard_champion

    down = _Registry(ConnectionError("timed out"))
    with pytest.raises(RegistryError, match="could not be read") as info:
        guard_champion(down, "m", "3", 0.9, "p", "fp")
    assert down.moves == [] and "\n" not in str(info.value)  # an unreadable registry is not an empty one
    first = _Registry(None, ("3", 0.9), versions={"3": 0.9})
    assert guard_champion(first, "m", "3", 0.9, "p", "fp")[0] and first.moves == ["3"]
    # Two searches finish together: both read "no champion"; the other one's better version lands after our
    # move. Checking the move, we decide again against it and put it back.
    raced = _Registry(None, ("4", 0.95), ("4", 0.95), versions={"3": 0.9, "4": 0.95})
    moved, line = guard_champion(raced, "m", "3", 0.9, "p", "fp")
    assert not moved and raced.moves == ["4"] and "champion stays version 4" in line
    # the check after a move fails: the line says the alias moved (it did), not "alias not moved"
    unsure = _Registry(None, ConnectionError("reset"), versions={"3": 0.9})
    with pytest.raises(RegistryError) as info:
        guard_champion(unsure, "m", "3", 0.9, "p", "fp")
    assert unsure.moves == ["3"] and "moved to version 3, then could not be checked" in str(info.value)
    assert "alias not moved" not in str(info.value)
    # a refused write is one line naming the refusal, not the client's raw exception
    denied = RestException({"error_code": "PERMISSION_DENIED", "message": "User lacks permission"})
    refused = _Registry(None, versions={"3": 0.9}, refuse=denied)
    with pytest.raises(RegistryError) as info:
        guard_champion(refused, "m", "3", 0.9, "p", "fp")
    assert "refused to move the alias to version 3 (PERMISSION_DENIED); alias not moved" in str(info.value)


def test_a_champion_of_other_data_is_not_compared_score_to_score(tmp_path):
    from mlflow.tracking import MlflowClient

    from search.champion import guard_champion

    client = MlflowClient(f"sqlite:///{tmp_path / 'reg.db'}")
    name = "aminet-sysu-real-00000000"
    client.create_registered_model(name)

    def version(score, fingerprint):
        v = client.create_model_version(name, source=str(tmp_path)).version
        for k, val in {
            "aminet.val_score": repr(score),
            "aminet.protocol": "p",
            "aminet.dataset_fingerprint": fingerprint,
        }.items():
            client.set_model_version_tag(name, v, k, val)
        return v

    theirs = version(0.30, "other-data-fingerprint")
    assert guard_champion(client, name, theirs, 0.30, "p", "other-data-fingerprint")[0]
    mine = version(0.90, "this-data-fingerprint")
    moved, line = guard_champion(client, name, mine, 0.90, "p", "this-data-fingerprint")
    assert not moved and "other data" in line and f"champion stays version {theirs}" in line
    assert client.get_model_version_by_alias(name, "champion").version == theirs
    # a person retires the champion: the best comparable version takes its place at the next guard
    client.set_model_version_tag(name, theirs, "aminet.retired", "true")
    later = version(0.50, "this-data-fingerprint")
    moved, line = guard_champion(client, name, later, 0.50, "p", "this-data-fingerprint")
    assert not moved and client.get_model_version_by_alias(name, "champion").version == mine


def _race(uri, prefix, rounds, delays=(0.0, 0.0)):
    """Two processes guard one champion at once ``rounds`` times; returns {round: [(score, version, moved,
    line)]} and the client."""
    import multiprocessing as mp

    from champion_race import guard_rounds
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_registered_models()  # the store exists (schema made) before the two searches start
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=guard_rounds, args=(uri, prefix, score, "p", "fp", rounds, barrier, delay, out))
        for score, delay in zip((0.6, 0.4), delays)
    ]
    for p in procs:
        p.start()
    got = {}
    for _ in range(2 * rounds):
        i, score, version, moved, line = out.get(timeout=120)
        assert i >= 0, line  # a worker that failed outright
        got.setdefault(i, []).append((score, version, moved, line))
    for p in procs:
        p.join(timeout=60)
    return got, MlflowClient(uri)


def _check_race(got, client, prefix, rounds):
    assert sorted(got) == list(range(rounds))
    for i, pair in got.items():
        (better_score, better, better_moved, better_line), (_, worse, worse_moved, worse_line) = sorted(
            pair, reverse=True
        )
        assert better_score == 0.6 and better_moved is True, (i, better_line)
        assert worse_moved is not None, (i, worse_line)  # no exception escaped
        champion = client.get_model_version_by_alias(f"{prefix}-{i}", "champion").version
        assert str(champion) == better, (i, better_line, worse_line)
        if i % 2 == 0:  # both tagged before either decided: the worse search is never told it is champion
            assert worse_moved is False and f"champion stays version {better}" in worse_line, (i, worse_line)


def test_two_searches_guarding_one_champion_at_once_on_sqlite_leave_the_better_one(tmp_path):
    """Issue 38: the better of two models registered and guarded at the same instant is champion every time,
    and both searches are told what they read last (30 rounds, two processes on one SQLite file)."""
    rounds = 30
    got, client = _race(f"sqlite:///{tmp_path / 'reg.db'}", "race", rounds)
    _check_race(got, client, "race", rounds)


@pytest.mark.slow
def test_two_searches_guarding_one_champion_through_a_tracking_server_leave_the_better_one(tmp_path):
    """The same race through a real ``mlflow server`` (several server workers), once with both links equal
    and once with the worse search's link 0.5 s slower per call (the case that always went wrong)."""
    import subprocess
    import sys
    import urllib.request

    from e2e_helpers import free_port

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'srv.db'}",
            "--default-artifact-root",
            str(tmp_path / "art"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115 - closed with the process
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        got, client = _race(uri, "even", 20)
        _check_race(got, client, "even", 20)
        got, client = _race(uri, "slow", 6, delays=(0.0, 0.5))
        _check_race(got, client, "slow", 6)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("name", shipped_spaces())
def test_every_searched_name_is_the_config_field_it_sets(name):
    """One name per hyperparameter: a sampled value lands in the config field of the same name, except the
    two translated lists (a bandwidth set's name, the milestones searched item by item)."""
    from trainables.params import BANDWIDTHS, MILESTONES, target_field

    space = get_space(name)
    base = space.base(quick=True)
    for p in (q.resolved(base) for q in space.params):
        values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for v in values:
            flat = apply_params(base, {p.name: v}).flat()
            if p.name == BANDWIDTHS:
                assert flat[p.name] == BANDWIDTH_SETS[v]
            elif p.name in MILESTONES:
                assert (
                    target_field(p.name) is None and max(v, base.optim.warmup_share) in flat["optim.milestone_shares"]
                )
            else:
                assert target_field(p.name) == p.name and flat[p.name] == v, (p.name, v)


@pytest.mark.parametrize("constrained", [True, False])
def test_tpe_ranks_a_diverged_trial_below_every_trial_that_did_not_diverge(constrained):
    """TPE ranks PRUNED trials by the epoch they reached first: without the constraint, a trial that diverged
    at epoch 5 is among the good trials, above one that ASHA stopped at epoch 2 with a real score."""
    from optuna.samplers._tpe.sampler import _split_trials  # the split TPE learns from (Optuna 5)

    sampler = make_sampler("tpe", seed=0, num_samples=6)
    if not constrained:
        sampler._constraints_func = None  # what the driver did before
    storage = optuna.storages.InMemoryStorage()
    s = PrunedAwareOptunaSearch(
        _x_space, metric="score", mode="max", storage=storage, study_name="d", max_epochs=6, sampler=sampler
    )
    for tid in ("full", "stopped", "late"):
        s.suggest(tid)
    for e in (2, 4, 6):
        s.on_trial_result("full", {"score": 0.2, "epoch": e})
    s.on_trial_complete("full", {"score": 0.2, "epoch": 6})
    s.on_trial_complete("stopped", {"score": 0.1, "epoch": 2})
    s.on_trial_result("late", {"score": 0.3, "epoch": 2})
    s.on_trial_result("late", {"score": 0.35, "epoch": 4})
    s.on_trial_complete("late", {"score": 0.0, "epoch": 5, "diverged": 1.0})
    study = optuna.load_study(study_name="d", storage=storage)
    number = {t.user_attrs["ray_trial_id"]: t.number for t in study.trials}
    below, above = _split_trials(study, study.trials, 2)
    good = {t.number for t in below}
    if constrained:
        assert good == {number["full"], number["stopped"]} and number["late"] in {t.number for t in above}
        s.suggest("next")  # and the constrained sampler still proposes
    else:
        assert good == {number["full"], number["late"]}  # the defect: the divergence counts as good


def test_a_storage_without_room_for_the_checkpoints_is_refused_before_anything_starts(tmp_path, monkeypatch):
    """Issue 38: a full disk under --storage was 404 s of retries and 3,091 lines. The preflight compares the
    free space with the search's own estimate (checkpoint size from the model on the meta device) first."""
    import shutil
    from collections import namedtuple

    from aminet.engine.checkpoint import checkpoint_bytes
    from search.plan import UsageError, check_storage, storage_need

    plan = _plan(tmp_path)
    need, how = storage_need(plan, concurrent=2)
    one = checkpoint_bytes(plan.base)
    assert need > one and "checkpoints of" in how
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * need, 10 * need - 20 << 20, 20 << 20))
    with pytest.raises(UsageError) as err:
        check_storage(plan)
    assert "\n" not in str(err.value) and "20 MiB free, the search needs about" in str(err.value)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * need, 0, 10 * need))
    check_storage(plan)  # room enough: nothing said
    assert not list((tmp_path / "ray").glob(".aminet-write-test-*"))  # the write probe is gone


def test_the_checkpoint_estimate_matches_a_saved_checkpoint(tiny_config, tmp_path):
    """The disk estimate is the size of what training saves (model, heads, optimizer state), within 25 %."""
    from aminet.engine.checkpoint import checkpoint_bytes
    from aminet.engine.trainer import train

    cfg = tiny_config("train.epochs=1", "train.eval_every=1", "optim.warmup_epochs=0", "optim.milestones=[]")
    train(cfg, run_dir=tmp_path / "run", quiet=True)
    saved = sorted((tmp_path / "run").rglob("state.pt"))
    assert saved, "no checkpoint written"
    size = saved[-1].stat().st_size
    assert 0.75 * size <= checkpoint_bytes(cfg) <= 1.25 * size, (checkpoint_bytes(cfg), size)


def test_a_full_disk_found_mid_search_is_named_in_the_last_line():
    import errno
    from types import SimpleNamespace

    from search.run import failure_line

    plan = SimpleNamespace(storage="/data/ray")
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as low:
            raise RuntimeError("optuna StorageInternalError: An exception is raised during the commit") from low
    except RuntimeError as exc:
        line = failure_line(exc, plan)
    assert line.startswith("the disk is full") and "--storage /data/ray" in line and "\n" not in line
    assert failure_line(ValueError("two\nlines"), plan) == "ValueError: two lines"


def test_a_failure_on_a_full_storage_disk_is_called_a_full_disk(tmp_path, monkeypatch):
    """Measured on a 1.1 GB tmpfs filled mid-search: Ray's syncer logged the ENOSPC errors, and the driver then
    failed reading a truncated file back (``EOFError: Ran out of input``), with no ENOSPC in the chain. The last
    line names the full disk from the free space under --storage."""
    import shutil
    from collections import namedtuple
    from types import SimpleNamespace

    from search.run import failure_line

    plan = SimpleNamespace(storage=str(tmp_path))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 200_000, 200_000))
    line = failure_line(EOFError("Ran out of input"), plan)
    assert line.startswith(f"the disk under --storage {tmp_path} is full (0.2 MiB free") and "EOFError" in line
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 0, 1 << 30))
    assert failure_line(EOFError("Ran out of input"), plan) == "EOFError: Ran out of input"


def test_a_resume_counts_what_the_search_already_wrote_towards_its_disk_need(tmp_path, monkeypatch):
    """After a full disk is freed, the resume must not be refused for the space its own checkpoints hold."""
    import shutil
    from collections import namedtuple
    from dataclasses import replace

    from search.plan import UsageError, check_storage, storage_need

    plan = _plan(tmp_path)
    need, _ = storage_need(plan, concurrent=min(plan.budget.num_samples, os.cpu_count() or 1))
    folder = Path(plan.experiment_path)
    folder.mkdir(parents=True)
    (folder / "checkpoint.bin").write_bytes(b"\0" * (8 << 20))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(need * 4, 0, need - (4 << 20)))
    with pytest.raises(UsageError, match="MiB free, the search needs about"):
        check_storage(plan)  # a new search: 4 MiB short
    check_storage(replace(plan, saved_state=SearchState(space="sysu")))  # the resume: its 8 MiB already written count


def test_optuna_trials_whose_record_was_lost_are_told_what_ray_says(tmp_path):
    """Issue 38, measured: a search resumed after a full disk had lost the searcher's record of its trials (its
    state file truncated); Ray trained them to the end, and the end-of-search sweep failed them in Optuna for
    good. The sweep now tells each RUNNING trial what its Ray result says."""
    from types import SimpleNamespace

    from search.cluster import end_orphaned_trials

    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for rid in ("full", "stopped", "crashed", None):
        t = study.ask()
        if rid:
            t.set_user_attr("ray_trial_id", rid)
    results = [
        SimpleNamespace(metrics={"trial_id": "full", "score": 0.5, "epoch": 4}, error=None),
        SimpleNamespace(metrics={"trial_id": "stopped", "score": 0.3, "epoch": 2}, error=None),
        SimpleNamespace(metrics={"trial_id": "crashed", "epoch": 1}, error=RuntimeError("boom")),
    ]
    end_orphaned_trials("s", url, results, max_epochs=4)
    got = {
        t.user_attrs.get("ray_trial_id"): (t.state.name, t.value)
        for t in optuna.load_study(study_name="s", storage=url).trials
    }
    assert got == {
        "full": ("COMPLETE", 0.5),
        "stopped": ("PRUNED", None),
        "crashed": ("FAIL", None),
        None: ("FAIL", None),
    }


def test_data_roots_are_keyed_by_benchmark_and_named_on_the_command_line(tmp_path):
    """``--data-root NAME=PATH`` gives any registered benchmark its folder (the plan's ``roots``); the plain
    form is the space's benchmark; an unknown name, a missing folder and two folders for one benchmark are
    one line each; a resume given another named root is refused."""
    from aminet.data import synthetic
    from search.plan import UsageError

    llcm = synthetic.generate("llcm", tmp_path / "LLCM", ids=8, images=1, height=32, width=16, workers=1)
    sysu = synthetic.generate("sysu", tmp_path / "SYSU", ids=8, images=1, height=32, width=16, workers=1)
    plan = _plan(tmp_path, "--data-root", str(sysu), "--data-root", f"llcm={llcm}")
    assert plan.roots["sysu"] == sysu and plan.roots["llcm"] == llcm and plan.roots["regdb"] is None
    assert list(plan.given_roots) == ["sysu", "llcm"] and plan.base.data.root == str(sysu)
    assert _plan(tmp_path, "--data-root", f"sysu={sysu}").base.data.root == str(sysu)  # the named form of the same
    for extra, needle in (
        (["--data-root", f"market={llcm}"], "'market' is not a registered benchmark (sysu, regdb, llcm)"),
        (["--data-root", f"llcm={tmp_path / 'nowhere'}"], "--data-root llcm=: folder not found"),
        (["--data-root", f"sysu={llcm}", "--sysu-root", str(sysu)], "name different folders for sysu"),
    ):
        with pytest.raises(UsageError) as err:
            _plan(tmp_path, *extra)
        assert needle in str(err.value) and "\n" not in str(err.value)
    _save(plan, tmp_path, args=__import__("search.plan").plan.identity(_args(tmp_path, "--data-root", str(sysu))))
    with pytest.raises(UsageError, match="--data-root NAME=PATH differs from the saved search"):  # noqa: RUF043
        _plan(tmp_path, "--resume", "--data-root", f"llcm={llcm}")


def test_the_state_file_is_typed_and_a_broken_one_is_one_line(tmp_path):
    """``SearchState``: written whole, None fields left out, an older file's unknown keys dropped on reading; a
    state file that is not one (truncated, or a list) refuses the resume in one line naming it."""
    from search.plan import STATE_FILE, UsageError

    path = tmp_path / STATE_FILE
    SearchState(space="sysu", parent_run_id="P", stage="reseed").write(path)
    raw = json.loads(path.read_text())
    assert raw["stage"] == "reseed" and "summary" not in raw and "search_seconds" not in raw
    path.write_text(json.dumps({**raw, "roots": {"sysu": "/x"}, "reseed_points": [{}]}))  # an older file's keys
    assert SearchState.read(path) == SearchState(space="sysu", parent_run_id="P", stage="reseed")
    plan = _plan(tmp_path)
    for broken in ('{"space": "sysu", "parent_run', "[1, 2]"):
        plan.state_dir.mkdir(parents=True, exist_ok=True)
        (plan.state_dir / STATE_FILE).write_text(broken)
        with pytest.raises(UsageError) as err:
            _plan(tmp_path, "--resume")
        assert "not a search state file" in str(err.value) and "\n" not in str(err.value)


def test_a_full_sqlite_database_is_a_full_disk_and_a_wrapped_traceback_is_its_last_line():
    """Measured on a 40 MB tmpfs under --storage filled mid-search: Optuna's study database (SQLite, under
    --storage) failed first, and Ray's ``TuneError`` handed the driver the whole traceback as text, which the
    last line quoted (a traceback in one line). SQLite's words are a full disk; a wrapped traceback is shown by
    the error it ended with."""
    from types import SimpleNamespace

    from search.run import failure_line

    plan = SimpleNamespace(storage="/data/ray")
    wrapped = (
        'Traceback (most recent call last):\n  File "sqlalchemy/engine/base.py", line 1977, in _exec\n'
        "    self.dialect.do_execute(\nsqlite3.OperationalError: database or disk is full\n"
    )
    line = failure_line(RuntimeError(wrapped), plan)
    assert line.startswith("the disk is full (database or disk is full) under --storage /data/ray")
    other = wrapped.replace("database or disk is full", "no such table: trials")
    assert failure_line(RuntimeError(other), plan) == "RuntimeError: sqlite3.OperationalError: no such table: trials"


def test_a_library_traceback_of_a_full_disk_is_one_line_and_others_are_untouched():
    """Ray logs a failed searcher write ("Error stopping trial") with three chained tracebacks; for a full disk
    the record keeps its message and says why, in one line, with no traceback."""
    import io
    import logging
    import sqlite3

    from search.cluster import quiet_libraries

    quiet_libraries()
    log = logging.getLogger("ray.tune.execution.tune_controller")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    try:
        for error in (sqlite3.OperationalError("database or disk is full"), ValueError("a real bug")):
            try:
                try:
                    raise error
                except Exception as low:
                    raise RuntimeError("An exception is raised during the commit") from low
            except RuntimeError:
                log.exception("Trial %s: Error stopping trial.", "t1")
        state = logging.getLogger("ray.tune.execution.experiment_state")  # found by the CI drill
        state.addHandler(handler)
        try:
            raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        except OSError:
            state.error("Saving experiment state to storage at '/x' failed with exception: ", exc_info=True)
        state.removeHandler(handler)
        sync = logging.getLogger("ray.train._internal.syncer")  # Ray's syncer formats the traceback into its message
        sync.addHandler(handler)
        sync.warning(
            "Last sync command failed with the following error:\n%s",
            'Traceback (most recent call last):\n  File "x.py", line 1\nOSError: [Errno 28] No space left on device',
        )
        sync.removeHandler(handler)
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert (
        lines.pop() == "Last sync command failed with the following error: (the disk is full: No space left on device)"
    )
    assert lines.pop() == (
        "Saving experiment state to storage at '/x' failed with exception:  (the disk is full: No space left on device)"
    )
    assert lines[0] == "Trial t1: Error stopping trial. (the disk is full: database or disk is full)"
    assert lines[1] == "Trial t1: Error stopping trial." and "Traceback (most recent call last):" in lines[2:]
    assert sum("Traceback" in line for line in lines) == 2  # the other error keeps its two chained tracebacks


def test_a_search_without_an_address_starts_its_own_ray_and_never_joins_a_recorded_cluster(monkeypatch):
    """Ray's ``ray.init()`` without an address joins the newest cluster recorded in its temp folder, even one
    killed since (three CI failures of the GPU check's search stage: a test before it on the same process had
    killed its own ``ray start`` cluster). Without ``--address`` the search starts its own instance, or joins
    the cluster ``RAY_ADDRESS`` names."""
    from types import SimpleNamespace

    import ray

    from search.cluster import init_ray

    calls = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = SimpleNamespace(address=None, dashboard=False, verbose=0)
    init_ray(settings)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    init_ray(settings)
    assert [c["address"] for c in calls] == ["local", "10.0.0.1:6379"]
