"""Bad input, table-driven, for every command line: non-zero exit, one line naming the problem, no
traceback, and nothing written (no MLflow database, no Ray experiment, no image cache, no dataset)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import TINY_EXPERIMENT_YAML, tiny_roots

REPO = Path(__file__).resolve().parents[1]

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    _, good, regdb = tiny_roots(tmp)
    empty_split = tmp / "SYSU-empty-split"
    shutil.copytree(good, empty_split)
    (empty_split / "exp" / "val_id.txt").write_text("\n")
    (empty_split / "exp" / "test_id.txt").write_text("\n")
    not_a_layout = tmp / "photos"
    (not_a_layout / "misc").mkdir(parents=True)
    (not_a_layout / "misc" / "a.jpg").write_bytes(b"\xff\xd8not really")
    (tmp / "tiny.yaml").write_text(TINY_EXPERIMENT_YAML)
    (tmp / "occupied").mkdir()
    (tmp / "occupied" / "keep.txt").write_text("mine")
    # tables whose meta.json lacks what a table needs: an empty object; a configuration without params
    toy = REPO / "tests" / "data" / "toy-table"
    for bad, edit in (("table-empty-meta", lambda m: {}), ("table-no-params", _drop_params)):
        (tmp / bad).mkdir()
        shutil.copy(toy / "rows.jsonl", tmp / bad / "rows.jsonl")
        (tmp / bad / "meta.json").write_text(json.dumps(edit(json.loads((toy / "meta.json").read_text()))))
    # a space naming one parameter twice (plain YAML would keep the last silently)
    text = (REPO / "search" / "spaces" / "sysu.yaml").read_text()
    (tmp / "twice.yaml").write_text(
        text.replace("parameters:\n", "parameters:\n  optim.warmup_share: {type: float, low: 0.0, high: 0.1}\n", 1)
    )
    # log: true with scale: base on a field whose base value is 0 (the paper's label smoothing)
    (tmp / "log-of-zero.yaml").write_text(
        text.replace(
            "parameters:\n",
            "parameters:\n  loss.label_smoothing: {type: float, low: 0.5, high: 2.0, log: true, scale: base}\n",
            1,
        )
    )
    # a SYSU root whose test split names only people who have no images (the final evaluation's set)
    ghost_test = tmp / "SYSU-ghost-test"
    shutil.copytree(good, ghost_test)
    (ghost_test / "exp" / "test_id.txt").write_text("9001,9002\n")
    # a RegDB root whose test index of trial 7 names a picture that is not there
    regdb_hole = tmp / "RegDB-hole"
    shutil.copytree(regdb, regdb_hole)
    first = (regdb_hole / "idx" / "test_thermal_7.txt").read_text().split()[0]
    (regdb_hole / first).unlink()
    (tmp / "in-the-way").write_text("a file where --storage wants a folder")
    return {
        "tmp": tmp,
        "good": good,
        "regdb": regdb,
        "empty_split": empty_split,
        "not_a_layout": not_a_layout,
        "ghost_test": ghost_test,
        "regdb_hole": regdb_hole,
    }


def _drop_params(meta):
    meta["configs"][3].pop("params")
    return meta


def _check(out, needle, tmp, written=()):
    err = out.stderr.strip()
    assert out.returncode != 0, out.stdout[-1000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if "WARNING" not in line and "INFO" not in line]
    assert len(lines) == 1, err[-2000:]
    assert needle in lines[0], lines[0]
    for path in written:
        assert not (tmp / path).exists(), f"{path} was written"


SEARCH_CASES = [
    ("unknown space", ["--space", "market1501"], "--space 'market1501'"),
    ("missing root", ["--data-root", "{tmp}/nowhere"], "--data-root: folder not found"),
    ("wrong layout", ["--data-root", "{not_a_layout}"], "SYSU-MM01 id file not found"),
    ("empty split file", ["--data-root", "{empty_split}"], "val_id.txt: no identities listed"),
    ("out of range", ["--set", "model.upper_body_ratio=1.5"], "model.upper_body_ratio"),
    ("wrong type", ["--set", "train.epochs=many"], "train.epochs"),
    ("unknown key", ["--set", "loss.mmd_wieght=1"], "mmd_wieght"),
    ("no samples", ["--num-samples", "0"], "--num-samples must be >= 1"),
    ("bad address", ["--address", "127.0.0.1:1"], "cannot reach a Ray head"),
    ("address syntax", ["--address", "somewhere"], "expected host:port"),
    ("unknown flag", ["--gpus", "2"], "unrecognized arguments: --gpus"),
    ("gpu without gpu", ["--gpus-per-trial", "1"], "no GPU"),
    ("two gpus per trial", ["--gpus-per-trial", "2"], "--gpus-per-trial 2: a trial trains on one device"),
    ("tracking server down", ["--mlflow-uri", "http://127.0.0.1:9/"], "--mlflow-uri http://127.0.0.1:9/: no tracking"),
    ("database down", ["--mlflow-uri", "postgresql://u:p@127.0.0.1:9/mlflow"], "cannot reach the database"),
    ("bad number", ["--cpus-per-trial", "two"], "--cpus-per-trial: invalid float value"),
    ("cmaes under asha", ["--sampler", "cmaes"], "--sampler cmaes learns only from trials trained to the full"),
    ("replay no table", ["--replay", "{tmp}/nowhere"], "--replay: "),
    ("replay empty meta", ["--replay", "{tmp}/table-empty-meta"], "meta.json: no 'space' (not a table's meta.json)"),
    ("replay config without params", ["--replay", "{tmp}/table-no-params"], "configs[3].params: expected a mapping"),
    ("time budget nan", ["--time-budget", "nan"], "--time-budget must be > 0 seconds (a finite number), got nan"),
    ("gpus per trial nan", ["--gpus-per-trial", "nan"], "--gpus-per-trial must be a finite number, got nan"),
    ("parameter named twice", ["--space", "{tmp}/twice.yaml"], "the key 'optim.warmup_share' appears twice"),
    ("log scale of a zero base", ["--space", "{tmp}/log-of-zero.yaml"], "loss.label_smoothing: log: true with scale"),
    ("replay and retrain", ["--replay", "{tmp}", "--retrain-best"], "--retrain-best trains real models"),
    ("test split of people without images", ["--data-root", "{ghost_test}"], "test_id.txt: 2 listed identities have"),
    ("regdb index naming a missing image", ["--regdb-root", "{regdb_hole}"], "_thermal_1.txt:3: image not found: "),
    ("storage not writable", ["--storage", "{tmp}/in-the-way/ray"], "/in-the-way/ray: cannot write there"),
]


@pytest.mark.parametrize("case, extra, needle", SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_search_cli(world, case, extra, needle):
    tmp = world["tmp"]
    if case == "gpu without gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    name = "s-" + case.replace(" ", "-")
    args = [
        sys.executable,
        str(REPO / "search" / "run.py"),
        "--space",
        "sysu",
        "--quick",
        "--data-root",
        str(world["good"]),
        "--regdb-root",
        str(world["regdb"]),
        "--name",
        name,
        "--storage",
        str(tmp / "ray"),
        "--mlflow-uri",
        f"sqlite:///{tmp / (name + '.db')}",
        "--set",
        f"data.cache_dir={tmp / ('cache-' + name)}",
    ]
    args += [a.format(**{k: v for k, v in world.items()}) for a in extra]
    start = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp)
    _check(out, needle, tmp, written=[name + ".db", f"ray/{name}", "cache-" + name, "mlruns", "ray_results"])
    assert out.returncode == 2
    if "down" in case:  # an unreachable tracking store ends at once, not after MLflow's minutes of retries
        assert time.monotonic() - start < 30


EXPERIMENT_CASES = [
    ("missing config", ["{tmp}/nope.yaml"], "config file not found"),
    ("wrong layout", ["{tmp}/tiny.yaml", "--data-root", "{not_a_layout}"], "SYSU-MM01 id file not found"),
    ("empty split file", ["{tmp}/tiny.yaml", "--data-root", "{empty_split}"], "_id.txt: no identities listed"),
    ("wrong type", ["{tmp}/tiny.yaml", "--set", "train.epochs=many"], "train.epochs"),
    ("out of range", ["{tmp}/tiny.yaml", "--set", "loss.mmd_multipliers=[]"], "loss.mmd_multipliers"),
    ("bad seeds", ["{tmp}/tiny.yaml", "--seeds", "-1"], "--seeds"),
    ("bad trials", ["{tmp}/tiny.yaml", "--trials", "11"], "--trials"),
    ("bad tag", ["{tmp}/tiny.yaml", "--tag", "novalue"], "--tag"),
    ("tracking server down", ["{tmp}/tiny.yaml", "--mlflow-uri", "http://127.0.0.1:9/"], "no tracking server"),
    (
        "regdb index naming a missing image",
        [
            "{tmp}/tiny.yaml",
            "--set",
            "data.dataset=regdb",
            "--set",
            "data.regdb_trial=7",
            "--data-root",
            "{regdb_hole}",
        ],
        "_thermal_1.txt:3: image not found: ",
    ),
]


@pytest.mark.parametrize("case, extra, needle", EXPERIMENT_CASES, ids=[c[0] for c in EXPERIMENT_CASES])
def test_experiments_cli(world, case, extra, needle):
    tmp = world["tmp"]
    db = "e-" + case.replace(" ", "-") + ".db"
    args = [
        sys.executable,
        str(REPO / "experiments" / "run.py"),
        "--mlflow-uri",
        f"sqlite:///{tmp / db}",
        "--quiet",
        "--set",
        f"data.cache_dir={tmp / 'cache-exp'}",
        *[a.format(**world) for a in extra],
    ]
    if "--data-root" not in extra:
        args += ["--data-root", str(world["good"])]
    start = time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp)
    _check(out, needle, tmp, written=[db, "cache-exp", "runs"])
    assert out.returncode == 2
    if "down" in case:
        assert time.monotonic() - start < 30


SYNTHETIC_CASES = [
    ("unknown layout", ["--layout", "market", "--out", "{tmp}/syn1"], "invalid choice: 'market'", "syn1"),
    ("too few ids", ["--layout", "sysu", "--out", "{tmp}/syn2", "--ids", "1"], "at least", "syn2"),
    ("wrong type", ["--layout", "sysu", "--out", "{tmp}/syn3", "--ids", "many"], "invalid int value", "syn3"),
    ("occupied output", ["--layout", "regdb", "--out", "{tmp}/occupied"], "exists and is not empty", None),
]


@pytest.mark.parametrize("case, extra, needle, out_dir", SYNTHETIC_CASES, ids=[c[0] for c in SYNTHETIC_CASES])
def test_synthetic_cli(world, case, extra, needle, out_dir):
    tmp = world["tmp"]
    out = subprocess.run(
        [sys.executable, "-m", "aminet.data.synthetic", *[a.format(**world) for a in extra]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )
    _check(out, needle, tmp, written=[out_dir] if out_dir else [])
    assert (tmp / "occupied" / "keep.txt").read_text() == "mine"
    assert not list(tmp.glob(".syn*")) and not list(tmp.glob(".occupied*"))  # no temporary folder left


BENCH_CASES = [
    ("zero repeats", ["eval", "--repeats", "0"], "--repeats must be >= 1"),
    ("no gpu", ["eval", "--device", "cuda"], "no CUDA device"),
    ("unknown bench", ["speed"], "invalid choice: 'speed'"),
    ("batch too small", ["model", "--batch", "2"], "--batch must be >= 4"),
    ("wrong type", ["eval", "--repeats", "few"], "invalid int value"),
]


@pytest.mark.parametrize("case, extra, needle", BENCH_CASES, ids=[c[0] for c in BENCH_CASES])
def test_bench_cli(world, case, extra, needle):
    if case == "no gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    out = subprocess.run(
        [sys.executable, str(BENCH), *extra], capture_output=True, text=True, timeout=120, cwd=world["tmp"]
    )
    _check(out, needle, world["tmp"])
