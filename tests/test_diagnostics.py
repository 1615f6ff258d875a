"""scripts/term_pull.py: the per-term gradient pull and modality gap of a trained checkpoint (the diagnostic
behind docs/results.md's explanation of the ablation)."""

import importlib.util
from pathlib import Path

import pytest

from aminet.engine.trainer import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "term_pull.py"


def _term_pull():
    spec = importlib.util.spec_from_file_location("term_pull", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def term_pull():
    return _term_pull()


def test_term_pull_weighs_each_term_and_leaves_untrained_terms_measurable(tiny_config, tmp_path, term_pull):
    # an M1-like model (trained without MMD terms): the MMD pull is still measured, with the weights asked for
    cfg = tiny_config(
        "train.epochs=1",
        "train.eval_every=1",
        "optim.warmup_epochs=0",
        "optim.milestones=[]",
        "loss.mmd_intra_weight=0",
        "loss.mmd_inter_weight=0",
    )
    folder = train(cfg, None, tmp_path / "run", quiet=True).checkpoint
    base = term_pull.measure(folder, 1, 0.4, 0.6)
    double = term_pull.measure(folder, 1, 0.4, 1.2)
    off = term_pull.measure(folder, 1, 0.0, 0.0)
    # same batches, same augmentation draws: the weighted IDAL gradient scales with its weight, the others not
    assert base["idal_grad"] > 0
    assert double["idal_grad"] == pytest.approx(2 * base["idal_grad"], rel=1e-4)
    assert double["id_grad"] == pytest.approx(base["id_grad"], rel=1e-5)
    assert off["idal_grad"] == 0 and off["imdal_grad"] == 0
    assert off["id_share"] + off["triplet_share"] == pytest.approx(1.0)
    assert sum(base[f"{t}_share"] for t in term_pull.TERMS) == pytest.approx(1.0)
    assert -1 <= base["idal_cos_reid"] <= 1
    # the gap statistics are cosine similarities of unit features, and the checkpoint's model was not changed
    for key in ("cross_same", "cross_diff", "within_same"):
        assert -1 <= base[key] <= 1
    assert base["cross_same"] == off["cross_same"] and base["centroid_gap"] == off["centroid_gap"]


def test_term_pull_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys, term_pull):
    assert term_pull.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "not a checkpoint folder" in err[0]
