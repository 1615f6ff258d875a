"""Unit tests of the search wing's parts that need neither Ray nor MLflow (the end-to-end drills are in
tests/test_search.py)."""

import json
import time

import pytest

from search.lineage import CLOCK_FILE, SearchClock, save_state
from search.plan import DEADLINE_FILE


def _state(tmp_path):
    path = tmp_path / "aminet_search.json"
    state = {"stage": "search"}
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

    state = json.loads(path.read_text())  # a new driver process reads the saved state
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
    state = json.loads(path.read_text())
    (tmp_path / CLOCK_FILE).write_text(json.dumps({"started": state["clock_closed"], "seen": time.time() + 50}))
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

    d = Drill.parse(["nan-if=mmd_intra=0.2:3", "crash-once=/tmp/m:2", "kill-once=/tmp/k:2:1"])
    assert d.nan_if == ("mmd_intra", "0.2", 3) and d.crash_once == ("/tmp/m", 2) and d.kill_once == ("/tmp/k", 2, 1)
    assert d.for_trial({"mmd_intra": 0.2}).nan_at_step == 3 and d.for_trial({"mmd_intra": 0.4}).nan_at_step is None
    hook = Drill(nan_at_step=5).on_loss(iters_per_epoch=4)
    assert hook(1, 1, 2.0) != hook(1, 1, 2.0) and hook(1, 0, 2.0) == 2.0  # NaN at epoch 1 step 1 only
    assert Drill().on_loss(4) is None and Drill().on_step() is None
    for bad in ("nan-at-step", "nan-at-step=x", "explode=1", "nan-if=:1", "kill-once=m:2"):
        with pytest.raises(DrillError, match="--drill"):
            Drill.parse([bad])
