"""The search end to end: real Ray trials, Optuna, MLflow and the registry on tiny synthetic data (the drills),
and the command line's one-line refusals. The parts without Ray are in tests/test_search_units.py."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from e2e_helpers import REPO, RUN, free_port, search_args, search_env, search_runs, search_study, tiny_roots
from e2e_helpers import x_space as _x_space

from aminet.config import Config
from search.tuning import PrunedAwareOptunaSearch

# ------------------------------------------------------------------------------------------------
# Pure parts
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
    import urllib.request

    port = free_port()
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
        assert len(detail["trials"]) == len(trials) and "optim.lr" in {p["name"] for p in detail["trials"][0]["params"]}
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

    sampled = {t.number: t.params for t in search_study(tmp, name).trials}
    for r in trials:
        n = r.data.tags["optuna.trial_number"]
        assert r.info.run_name.startswith(f"trial {n}: intra "), r.info.run_name
        assert {"optim.lr", "loss.mmd_intra_weight", "model.upper_body_ratio", "loss.mmd_multipliers"} <= set(
            r.data.params
        )
        assert not any(k.startswith(("search.", "cfg.")) for k in r.data.params)
        # one name per hyperparameter: what Optuna sampled is the config field of that name in the trial's run
        for key in ("optim.lr", "loss.mmd_intra_weight", "model.upper_body_ratio"):
            assert float(r.data.params[key]) == pytest.approx(sampled[int(n)][key])
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
        if not (tmp / "ray" / name / "aminet_search.json").is_file():
            continue  # the driver has not made its MLflow store yet: reading it now would race its creation
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


@pytest.mark.slow
def test_ctrl_c_while_every_trial_trains_is_an_interrupt_that_resumes(roots):
    """Issue 38: Ctrl-C (SIGINT to the process group, as a terminal sends it) while every trial of the budget
    is training. Ray counts the cut-short trials as ended, so the driver took it for a finished search: the
    Optuna trials were failed for good, selection failed, no resume hint. Now: exit 130 with the hint, the
    Optuna trials left RUNNING, and the resume trains them to the end."""
    tmp, sysu, regdb = roots
    name = "ctrlc"
    flags = ("--num-samples", "2", "--max-concurrent", "2", "--scheduler", "none", "--no-register", "--reseeds", "0",
             "--no-final-eval")  # fmt: skip
    args = search_args(tmp, sysu, regdb, name, *flags)
    err = tmp / "ctrlc.err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=stderr, env=search_env(), cwd=tmp, start_new_session=True
        )
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            folders = list((tmp / "ray" / name).glob("train_aminet_*"))
            reported = [(p / "result.json").is_file() and (p / "result.json").stat().st_size > 0 for p in folders]
            if len(folders) == 2 and all(reported):  # both trials past their first epoch, neither finished
                break
        else:
            pytest.fail("the two trials did not both start training in time")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=180) == 130, err.read_text()[-3000:]
    text = err.read_text()
    assert f"--name {name} --resume" in text and "no trial trained to the full budget" not in text
    states = [t.state.name for t in search_study(tmp, name).trials]
    assert states == ["RUNNING", "RUNNING"], states  # not FAIL: they have not ended
    _, parents, _ = search_runs(tmp, name)
    assert parents[0].info.status == "KILLED"

    out = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=900, env=search_env(), cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [t.state.name for t in search_study(tmp, name).trials] == ["COMPLETE", "COMPLETE"]
    _, parents, trials = search_runs(tmp, name)
    assert parents[0].info.status == "FINISHED" and sorted(r.info.status for r in trials) == ["FINISHED"] * 2


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
