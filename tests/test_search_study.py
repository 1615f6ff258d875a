"""The search study's parts: the tabulated benchmark (design, rows, lookups), the replay trainable through the
real driver, the simulator against that driver, and the study harness at toy size.

The committed toy table (``tests/data/toy-table``) was made with
``python benchmarks/tabulate_space.py --out tests/data/toy-table --configs 12 --multi-seed 4 --seeds 3
--set data.iters_per_epoch=1``: the shipped space and budget (6 epochs) with one step per epoch.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from search import blackbox
from search.spaces import get_space

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "data" / "toy-table"
sys.path.insert(0, str(REPO / "benchmarks"))


def _params():
    space = get_space("sysu")
    base = space.base(quick=True)
    return space, base, [p.resolved(base) for p in space.params]


# ------------------------------------------------------------------------------------------------
# Designing and reading a table
# ------------------------------------------------------------------------------------------------


def test_unit_mapping_covers_each_parameter_as_its_type_says():
    _, _, params = _params()
    by_name = {p.name: p for p in params}
    grid = [i / 400 for i in range(400)]
    bw = by_name["loss.mmd_multipliers"]
    counts = {c: sum(blackbox.from_unit(bw, x) == c for x in grid) for c in bw.choices}
    assert set(counts.values()) == {100}  # four choices, equal cells
    lr = by_name["optim.lr"]
    values = [blackbox.from_unit(lr, x) for x in grid]
    assert min(values) == pytest.approx(lr.low) and max(values) <= lr.high
    # log-uniform: the geometric middle of the range sits at x = 0.5
    assert blackbox.from_unit(lr, 0.5) == pytest.approx(math.sqrt(lr.low * lr.high))
    ubr = by_name["model.upper_body_ratio"]
    stepped = {blackbox.from_unit(ubr, x) for x in grid}
    assert stepped == {round(0.3 + 0.05 * k, 10) for k in range(11)}  # every grid value, nothing else
    assert all(ubr.contains(v) for v in stepped)


def test_the_design_starts_with_the_paper_default_and_fills_the_space():
    space, base, params = _params()
    configs, seeds = blackbox.design(space, base, 64, 8, 3)
    assert configs[0]["kind"] == "default" and configs[0]["params"] == space.warm_start(base)[0]
    assert configs[1]["kind"] == "warm_start"
    assert len(configs) == 64 and len({blackbox.params_key(c["params"]) for c in configs}) == 64
    assert [len(seeds[c["config"]]) for c in configs] == [3] * 8 + [1] * 56
    sobol = [c["params"] for c in configs if c["kind"] == "sobol"]
    # conditional parameters only where their condition holds, as the define-by-run function samples them
    assert all(("optim.milestone_shares.0" in p) == (p["optim.schedule"] == "step") for p in sobol)
    # space-filling: every quarter of every float range is visited
    for p in params:
        if p.type == "float" and not p.when:
            xs = [(s[p.name] - p.low) / (p.high - p.low) for s in sobol]
            if p.log:
                xs = [math.log(s[p.name] / p.low) / math.log(p.high / p.low) for s in sobol]
            assert {min(3, int(4 * x)) for x in xs} == {0, 1, 2, 3}, p.name
    order = blackbox.job_order(seeds, 8)
    assert order[:8] == [(c, 0) for c in range(8)] and order[8:24] == [(c, s) for c in range(8) for s in (1, 2)]
    assert len(order) == 8 * 3 + 56


def test_a_row_cut_short_by_a_killed_writer_is_dropped_not_glued(tmp_path):
    blackbox.append_row(tmp_path, {"config": 0, "seed": 0})
    with open(tmp_path / blackbox.ROWS, "a") as f:
        f.write('{"config": 1, "se')  # killed mid-write
    assert blackbox.done_jobs(tmp_path) == {(0, 0)}  # the cut row is skipped on reading
    blackbox.append_row(tmp_path, {"config": 2, "seed": 0})
    lines = (tmp_path / blackbox.ROWS).read_text().splitlines()
    assert [json.loads(x)["config"] for x in lines] == [0, 2]


def test_the_committed_toy_table_reads_and_answers_lookups():
    table = blackbox.Table.load(TOY)
    _, _, params = _params()
    assert table.epochs == 6 and len(table.config_ids()) == 12
    default = table.default_config()
    assert table.lookup(table.params(default)) == default
    assert len(table.seeds(0)) == 3 and table.seeds(11) == [0]
    assert table.row(11, 2) is table.row(11, 0)  # a seed the table lacks wraps onto the recorded ones
    for c in table.config_ids():  # a configuration is its own nearest row
        assert table.nearest(table.params(c), params) == c
    moved = {**table.params(5), "loss.mmd_intra_weight": min(1.0, table.params(5)["loss.mmd_intra_weight"] + 1e-3)}
    assert table.lookup(moved) is None and table.nearest(moved, params) == 5
    row = table.row(default)
    assert len(row.val) == 6 and row.final == row.val[-1] and set(row.test) >= {"all/R1", "all/mAP"}


def test_a_tabulation_with_other_settings_is_refused_in_one_line(tmp_path):
    out = tmp_path / "t"
    shutil.copytree(TOY, out)
    cmd = [sys.executable, str(REPO / "benchmarks" / "tabulate_space.py"), "--out", str(out), "--configs", "13"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "configs" in lines[0] and str(out) in lines[0], done.stderr


# ------------------------------------------------------------------------------------------------
# The simulator and the study harness
# ------------------------------------------------------------------------------------------------


def test_the_simulator_replays_budgets_and_stops_as_asha_does():
    from search_study import Bench, simulate

    bench = Bench.load(TOY)
    full = simulate(bench, "random", seed=0, trials=9, concurrency=1, asha=False)
    assert [t["state"] for t in full["sequence"]] == ["COMPLETE"] * 9 and full["epochs"] == 9 * 6
    assert [t["config"] for t in full["sequence"][:2]] == [0, 1]  # the warm-start points first
    asha = simulate(bench, "random", seed=0, trials=9, concurrency=1, asha=True)
    states = [t["state"] for t in asha["sequence"]]
    assert "STOPPED" in states and asha["epochs"] < full["epochs"]
    # a stopped trial ran to the rung (the grace period) only; the selection is the best finished trial
    assert all(t["epochs"] == bench.budget.grace_period for t in asha["sequence"] if t["state"] == "STOPPED")
    done = [t for t in asha["sequence"] if t["state"] == "COMPLETE"]
    assert asha["selected"] == max(done, key=lambda t: bench.val(t["config"]))["config"]
    # the same sampler seed on the same setting replays the same search; concurrency changes the order
    assert simulate(bench, "random", 0, 9, 1, True)["sequence"] == asha["sequence"]
    assert simulate(bench, "tpe", 3, 9, 4, True)["time"] < simulate(bench, "tpe", 3, 9, 1, True)["time"]


def test_iqm_and_bootstrap_match_their_definitions():
    import numpy as np
    from scipy.stats import trim_mean
    from search_study import bootstrap_ci, iqm

    values = [9.0, 1.0, 5.0, 3.0, 7.0, 100.0, 2.0, 4.0]
    middle = sorted(values)[2:6]  # the middle half of 8 values
    assert iqm(values) == pytest.approx(np.mean(middle)) == pytest.approx(trim_mean(values, 0.25))
    assert iqm(values[:7]) == pytest.approx(trim_mean(values[:7], 0.25))
    lo, hi = bootstrap_ci(values)
    assert lo <= iqm(values) <= hi and hi < 100


@pytest.mark.slow
def test_the_study_at_toy_size_writes_its_results_and_plots(tmp_path):
    from search_study import main

    out = tmp_path / "study"
    argv = ["--table", str(TOY), "--out", str(out), "--reps", "3", "--samplers", "tpe", "random", "cmaes"]
    assert main([*argv, "--trials", "8", "--concurrency", "1", "2", "--asha-grid", "2:3", "1:3"]) == 0
    report = json.loads((out / "results.json").read_text())
    cuts = {(True, 2, 3), (True, 1, 3), (False, None, None)}
    assert {
        (r["sampler"], r["concurrency"], r["asha"], r["grace"], r["reduction_factor"]) for r in report["summary"]
    } == {(s, c, *cut) for s in ("tpe", "random", "cmaes") for c in (1, 2) for cut in cuts}
    by_cut = {(r["sampler"], r["concurrency"], r["grace"]): r["epochs_mean"] for r in report["summary"] if r["asha"]}
    # the same random configurations, cut at epoch 1 instead of 2: less training, and both less than none
    assert by_cut[("random", 1, 1)] < by_cut[("random", 1, 2)] < 8 * 6
    for row in report["summary"]:
        assert row["test_regret_iqm"] >= 0 and row["reps"] == 3
        assert row["model_based_share"] == 0 or row["sampler"] != "random"
        # every search visits at least the two warm-start rows, and never more rows than it ran trials
        assert 2 <= row["distinct_rows_mean"] <= row["trials"]
    a = report["table_analysis"]
    assert -1 <= a["spearman_val_test_r1"] <= 1 and set(a["rung_agreement"]["all"]) >= {"1", "2", "5", "n"}
    assert (out / "regret_n8_c1_asha-g1r3.png").is_file() and (out / "rung_agreement.png").is_file()
    assert (out / "regret_n8_c1_none.png").is_file()

    # a supplement (more repetitions of one setting) merged in: that setting replaced, the rest kept
    extra = tmp_path / "extra"
    flags = "--reps 5 --samplers random --trials 8 --concurrency 1 --asha-grid 2:3 --schedulers asha".split()
    assert main(["--table", str(TOY), "--out", str(extra), *flags]) == 0
    before = {(r["sampler"], r["concurrency"], r["grace"]): r for r in report["summary"]}
    assert main(["--table", str(TOY), "--out", str(out), "--merge", str(extra)]) == 0
    merged = json.loads((out / "results.json").read_text())
    after = {(r["sampler"], r["concurrency"], r["grace"]): r for r in merged["summary"]}
    assert after.keys() == before.keys() and after[("random", 1, 2)]["reps"] == 5
    assert all(after[k] == before[k] for k in after if k != ("random", 1, 2))
    assert "1 settings replaced by" in (out / "summary.md").read_text()
    # a study of another table is refused in one line, and nothing is rewritten
    other = json.loads((extra / "results.json").read_text())
    (extra / "results.json").write_text(json.dumps({**other, "table_digest": "0" * 16}))
    assert main(["--table", str(TOY), "--out", str(out), "--merge", str(extra)]) == 2
    assert json.loads((out / "results.json").read_text()) == merged


# ------------------------------------------------------------------------------------------------
# The replay trainable through the real driver
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_replayed_search_runs_the_real_driver_and_matches_the_simulator(tmp_path):
    """``search/run.py --replay``: trials answered from the table, ASHA, selection, re-seeding and MLflow as in a
    real search; the Optuna study it leaves holds the simulator's trial sequence (same sampler and seed)."""
    from e2e_helpers import search_env, search_runs, search_study, tiny_roots
    from search_study import Bench, simulate

    tmp, sysu, regdb = tiny_roots(tmp_path)
    name = "replayed"
    cmd = [
        sys.executable, str(REPO / "search" / "run.py"), "--space", "sysu", "--budget", "quick",
        "--data-root", str(sysu), "--regdb-root", str(regdb), "--replay", str(TOY), "--num-samples", "8",
        "--max-concurrent", "1", "--seed", "4", "--name", name, "--storage", str(tmp / "ray"),
        "--mlflow-uri", f"sqlite:///{tmp / (name + '.db')}", "--verbose", "0",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=search_env(), cwd=tmp, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REPLAYED test metrics" in done.stdout
    bench = Bench.load(TOY)
    sim = simulate(bench, "tpe", seed=4, trials=8, concurrency=1, asha=True)
    study = search_study(tmp, name)
    real = [(t.params, t.state.name) for t in study.get_trials(deepcopy=False)]
    assert real == [(t["params"], "COMPLETE" if t["state"] == "COMPLETE" else "PRUNED") for t in sim["sequence"]]
    client, parents, trials = search_runs(tmp, name)
    assert len(parents) == 1 and len(trials) == 8
    parent = parents[0]
    assert parent.data.tags["aminet.replay"].startswith(str(TOY))
    # the parent's test figures are the table's recorded test metrics of the selected configuration's rows
    from search.replay import answer

    winner = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "best/selection.json", str(tmp))).read_text()
    )
    # chosen on every seed the candidates share, the search's own included; the fresh seeds' mean beside it
    by_seed = dict(zip(winner["seeds"], winner["val_scores"]))
    assert winner["selection_seeds"] == [0, 1] and winner["fresh_seeds"] == [1]
    assert parent.data.metrics["val/score_fresh_seeds"] == pytest.approx(by_seed[1])
    config = answer(bench.table, bench.space_params, {k: v for k, v in winner["params"].items() if k != "optuna_trial"})
    recorded = [bench.table.row(config, s).test["all/R1"] for s in winner["seeds"]]
    assert parent.data.metrics["test/sysu/all/R1"] == pytest.approx(sum(recorded) / len(recorded), abs=1e-6)


@pytest.mark.slow
def test_a_replay_answered_by_the_surrogate_runs_the_real_driver(tmp_path):
    """``--replay-model forest``: each proposal is answered by the table's forest surrogate at exactly its values
    (one configuration and seed the same answer again, another seed another draw of the seed noise), and the
    parent's test figure is the surrogate's expected test R1 of the winner's configuration."""
    from e2e_helpers import search_env, search_runs, tiny_roots
    from search_study import Bench

    from search.replay import _surrogate_row, load_surrogate

    tmp, sysu, regdb = tiny_roots(tmp_path)
    name = "forest"
    cmd = [
        sys.executable, str(REPO / "search" / "run.py"), "--space", "sysu", "--budget", "quick",
        "--data-root", str(sysu), "--regdb-root", str(regdb), "--replay", str(TOY), "--replay-model", "forest",
        "--num-samples", "3", "--scheduler", "none", "--top-k", "1", "--reseeds", "0", "--max-concurrent", "1",
        "--name", name, "--storage", str(tmp / "ray"), "--mlflow-uri", f"sqlite:///{tmp / (name + '.db')}",
        "--verbose", "0",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=search_env(), cwd=tmp, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REPLAYED test metrics" in done.stdout
    client, parents, trials = search_runs(tmp, name)
    assert len(trials) == 3 and all(t.data.metrics["train/replay_config"] == -1 for t in trials)
    assert not any("test" in k for t in trials for k in t.data.metrics)  # a trial shows no test figure
    winner = json.loads(
        Path(client.download_artifacts(parents[0].info.run_id, "best/selection.json", str(tmp))).read_text()
    )
    params = {k: v for k, v in winner["params"].items() if k != "optuna_trial"}
    expected_r1 = min(max(float(load_surrogate(str(TOY.resolve())).mean(params)[-1]), 0.0), 1.0)
    assert parents[0].data.metrics["test/sysu/all/R1"] == pytest.approx(expected_r1, abs=1e-6)
    # the answers: fixed by (configuration, seed), so a resumed or repeated trial replays the same run
    bench = Bench.load(TOY)
    a = dict(bench.table.params(bench.table.config_ids()[0]))
    folder = str(TOY.resolve())
    assert _surrogate_row(folder, a, 0).val == _surrogate_row(folder, a, 0).val
    assert _surrogate_row(folder, a, 0).val != _surrogate_row(folder, a, 1).val


def test_the_shipped_spaces_make_the_first_rung_neutral_and_the_old_bounds_did_not(tmp_path):
    from search.spaces import load_space

    for name in ("sysu", "regdb"):
        space = get_space(name)
        for quick in (True, False):
            b = space.budget_for(quick)
            assert space.first_rung_conflicts(space.base(quick=quick), b.epochs, b.grace_period) == [], (name, quick)
    text = (REPO / "search" / "spaces" / "sysu.yaml").read_text()
    old = text.replace("high: 0.2}", "high: 0.25}").replace("low: 0.25, high: 0.7", "low: 0.2, high: 0.7")
    assert old != text
    (tmp_path / "old.yaml").write_text(old)
    space = load_space(tmp_path / "old.yaml")
    for quick in (True, False):
        b = space.budget_for(quick)
        why = space.first_rung_conflicts(space.base(quick=quick), b.epochs, b.grace_period)
        assert len(why) == 2 and "warm-up" in why[0] and "milestone" in why[1], why


def test_a_table_with_the_old_parameter_names_is_refused_then_renamed_to_the_committed_one(tmp_path):
    """Tables made before parameters were named by their config fields: refused in one line that names the
    fix, and ``migrate_table.py`` gives back exactly the committed (renamed) toy table's rows."""
    from migrate_table import OLD_NAMES, main

    old = {v: k for k, v in OLD_NAMES.items()}
    folder = tmp_path / "old"
    shutil.copytree(TOY, folder)
    meta = json.loads((folder / blackbox.META).read_text())
    for c in meta["configs"]:
        c["params"] = {old.get(k, k): v for k, v in c["params"].items()}
    del meta["renamed"]
    (folder / blackbox.META).write_text(json.dumps(meta, indent=1))
    rows = blackbox.read_rows(folder / blackbox.ROWS)
    for r in rows:
        r["params"] = {old.get(k, k): v for k, v in r["params"].items()}
    (folder / blackbox.ROWS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    with pytest.raises(blackbox.TableError, match=r"lacks \(bandwidths, lr, milestone1_frac.*migrate_table.py"):
        blackbox.Table.load(folder).check_names(get_space("sysu"))
    assert main([str(folder)]) == 0
    blackbox.Table.load(folder).check_names(get_space("sysu"))
    assert blackbox.read_rows(folder / blackbox.ROWS) == blackbox.read_rows(TOY / blackbox.ROWS)
    got = json.loads((folder / blackbox.META).read_text())
    assert got["configs"] == json.loads((TOY / blackbox.META).read_text())["configs"]
    assert got["renamed"]["names"] == OLD_NAMES
    before = (folder / blackbox.ROWS).read_bytes()
    assert main([str(folder)]) == 0 and (folder / blackbox.ROWS).read_bytes() == before  # once only
