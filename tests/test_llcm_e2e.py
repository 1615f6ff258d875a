"""LLCM end to end through the registry (issue 40): a fixed-config run (experiments/run.py) and a search
(``search/run.py --space llcm``) on a tiny synthetic LLCM in the official layout, each reporting LLCM's two
directions over its gallery trials, and the champion registered under the LLCM name."""

import subprocess
import sys

import pytest
import yaml
from e2e_helpers import REPO, RUN, TINY, TINY_EXPERIMENT_YAML, all_runs

from aminet.data import synthetic


@pytest.fixture(scope="module")
def tiny_llcm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llcm")
    return tmp, synthetic.generate("llcm", tmp / "LLCM", ids=12, images=2, height=64, width=32, workers=1)


@pytest.mark.slow
def test_a_fixed_config_run_on_llcm_reports_both_directions(tiny_llcm):
    tmp, root = tiny_llcm
    raw = yaml.safe_load(TINY_EXPERIMENT_YAML)
    raw["name"] = "tiny-llcm"
    raw["data"]["dataset"] = "llcm"
    (tmp / "tiny_llcm.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp / 'fixed.db'}"
    cmd = [sys.executable, str(REPO / "experiments" / "run.py"), str(tmp / "tiny_llcm.yaml"), "--data-root", str(root)]
    cmd += ["--seeds", "0", "--mlflow-uri", uri, "--quiet", "--set", f"data.cache_dir={tmp / 'cache'}"]
    out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "ir2vis" in out.stdout and "vis2ir" in out.stdout
    runs = all_runs(uri)
    parent = runs[runs["tags.aminet.role"] == "summary"].iloc[0]
    assert parent["params.data.dataset"] == "llcm" and parent["params.run.trials"] == "-"
    for direction in ("ir2vis", "vis2ir"):
        assert 0.0 <= parent[f"metrics.test/{direction}/R1_mean"] <= 1.0
    child = runs[runs["tags.aminet.role"] == "model"].iloc[0]
    assert child.status == "FINISHED"


@pytest.mark.slow
def test_a_search_on_llcm_selects_evaluates_and_registers(tiny_llcm):
    tmp, root = tiny_llcm
    uri = f"sqlite:///{tmp / 'search.db'}"
    sets = [
        a
        for o in [*TINY, "train.epochs=2", "optim.milestones=[1]", f"data.cache_dir={tmp / 'cache'}"]
        for a in ("--set", o)
    ]
    cmd = [sys.executable, RUN, "--space", "llcm", "--quick", "--data-root", f"llcm={root}", "--name", "l1"]
    cmd += ["--storage", str(tmp / "ray"), "--mlflow-uri", uri, "--verbose", "0", "--num-samples", "2"]
    cmd += ["--scheduler", "none", "--top-k", "1", "--reseeds", "0", *sets]
    out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ir2vis" in out.stdout and "in-domain" in out.stdout and "All Search" not in out.stdout
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    versions = client.search_model_versions("name LIKE 'aminet-llcm-%'")
    assert len(versions) == 1 and versions[0].name.startswith("aminet-llcm-synthetic-")
    assert "dataset=llcm" in versions[0].tags["aminet.protocol"]
    runs = all_runs(uri)
    parent = runs[runs["tags.aminet.role"] == "search"].iloc[0] if "tags.aminet.role" in runs else None
    assert parent is not None
    assert any(c.startswith("metrics.test/llcm/ir2vis/") for c in runs.columns)
