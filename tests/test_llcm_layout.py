"""LLCM's official layout and test protocol (issue 40), on a hand-built tiny tree: which images are queries,
which one image per identity and camera each trial's gallery draws (against an independent replay of the
public code's draw, ``random.seed(trial)`` then ``random.choice`` over the sorted files), the cameras, and
the bad inputs."""

import random
from pathlib import Path

import numpy as np
import pytest

from aminet.data import llcm


def _tree(root: Path) -> Path:
    """Identities 3 and 12 (test), visible in cameras 1, 3 and 9, near-infrared in cameras 2 and 4 (and an
    empty camera-5 folder); three files per folder, named so that sorting matters."""
    for folder, cams in (("test_vis", (1, 3, 9)), ("test_nir", (2, 4))):
        for pid in (3, 12):
            for cam in cams:
                d = root / folder / f"cam{cam}" / f"{pid:04d}"
                d.mkdir(parents=True)
                for name in ("b.jpg", "a.jpg", "c.jpg"):
                    (d / name).write_bytes(b"x")
    (root / "test_nir" / "cam5" / "0003").mkdir(parents=True)
    (root / "idx").mkdir()
    (root / "idx" / "test_id.txt").write_text("12,3\n")
    (root / "idx" / "train_vis.txt").write_text("test_vis/cam1/0003/a.jpg 0\ntest_vis/cam3/0012/b.jpg 1\n")
    (root / "idx" / "train_nir.txt").write_text("test_nir/cam2/0003/a.jpg 0\n")
    return root


def _replay_draw(root: Path, folder: str, cams, trial: int) -> list[str]:
    random.seed(trial)  # the public code's global draw, replayed here
    out = []
    for pid in sorted([f"{x:04d}" for x in (12, 3)]):
        for cam in cams:
            d = root / folder / f"cam{cam}" / pid
            if d.is_dir() and list(d.iterdir()):
                out.append(random.choice(sorted(str(d / f) for f in [p.name for p in d.iterdir()])))
    return out


def test_queries_are_every_image_of_the_query_modality(tmp_path):
    root = _tree(tmp_path / "LLCM")
    paths, pids, cams = llcm.query_set(root, "ir2vis")
    assert len(paths) == 2 * 2 * 3 and all("/test_nir/" in p for p in paths)
    assert pids.tolist() == [3] * 6 + [12] * 6 and cams.tolist() == [2, 2, 2, 4, 4, 4] * 2
    assert [Path(p).name for p in paths[:3]] == ["a.jpg", "b.jpg", "c.jpg"]
    paths, pids, cams = llcm.query_set(root, "vis2ir")
    assert len(paths) == 2 * 3 * 3 and set(cams.tolist()) == {1, 3, 9}


@pytest.mark.parametrize("trial", [0, 1, 7])
def test_each_trial_draws_one_gallery_image_per_identity_and_camera_as_the_public_code_does(tmp_path, trial):
    root = _tree(tmp_path / "LLCM")
    paths, pids, cams = llcm.gallery_set(root, "ir2vis", trial)
    assert paths == _replay_draw(root, "test_vis", range(1, 10), trial)
    assert pids.tolist() == [3, 3, 3, 12, 12, 12] and cams.tolist() == [1, 3, 9, 1, 3, 9]
    paths, _, cams = llcm.gallery_set(root, "vis2ir", trial)
    assert paths == _replay_draw(root, "test_nir", (1, 2, 4, 5, 6, 7, 8, 9), trial)
    assert cams.tolist() == [2, 4, 2, 4]  # no camera 3 in the near-infrared set; an empty folder adds nothing


def test_the_trials_differ_and_the_global_random_state_is_untouched(tmp_path):
    root = _tree(tmp_path / "LLCM")
    draws = {tuple(llcm.gallery_set(root, "ir2vis", t)[0]) for t in range(10)}
    assert len(draws) > 1
    random.seed(123)
    before = random.random()
    random.seed(123)
    llcm.gallery_set(root, "ir2vis", 4)
    assert random.random() == before


def test_training_lists_and_bad_inputs(tmp_path):
    root = _tree(tmp_path / "LLCM")
    paths, labels = llcm.read_train_list(root, "visible")
    assert len(paths) == 2 and labels.tolist() == [0, 1] and all(Path(p).is_file() for p in paths)
    (root / "idx" / "train_nir.txt").write_text("test_nir/cam2/0003/missing.jpg 0\n")
    with pytest.raises(FileNotFoundError, match=r"train_nir.txt:1: image not found"):
        llcm.read_train_list(root, "infrared")
    with pytest.raises(ValueError, match="direction 'v2t'"):
        llcm.query_set(root, "v2t")
    (root / "idx" / "test_id.txt").write_text("3,3\n")
    with pytest.raises(ValueError, match="listed twice"):
        llcm.query_set(root)
    (root / "idx" / "test_id.txt").write_text("77\n")
    with pytest.raises(ValueError, match="empty"):
        llcm.gallery_set(root)


def test_the_protocol_end_to_end_with_the_llcm_metric(tmp_path):
    """Features that put each identity's images together: both directions score perfectly under the
    LLCM rule, and every query's own-camera positives are dropped (a gallery of only those would be empty)."""
    from aminet.evaluation import llcm_metrics

    root = _tree(tmp_path / "LLCM")
    for direction in llcm.DIRECTIONS:
        _, qp, qc = llcm.query_set(root, direction)
        _, gp, gc = llcm.gallery_set(root, direction, 0)
        dist = (qp[:, None] != gp[None, :]).astype(np.float64) + 0.01 * np.abs(qc[:, None] - gc[None, :])
        cmc, mAP, mINP = llcm_metrics(dist, qp, gp, qc, gc)
        assert cmc[0] == 1.0 and mAP == pytest.approx(1.0) and mINP == pytest.approx(1.0)


def test_the_synthetic_llcm_layout_reads_as_the_official_one(tmp_path):
    """The synthetic LLCM (issue 40) in the official layout: the reader and the protocol run on it unchanged,
    the training lists point at real files with labels 0..N-1, and its visible images are low-light."""
    from PIL import Image

    from aminet.data import synthetic

    root = synthetic.generate("llcm", tmp_path / "LLCM", ids=9, images=2, height=32, width=16, workers=1)
    test_ids = llcm.read_test_ids(root)
    assert len(test_ids) == 3
    for direction in llcm.DIRECTIONS:
        _, qp, _ = llcm.query_set(root, direction)
        _, gp, _ = llcm.gallery_set(root, direction, 0)
        assert set(qp.tolist()) <= set(test_ids) and set(gp.tolist()) <= set(test_ids)
    paths, labels = llcm.read_train_list(root, "visible")
    nir, nir_labels = llcm.read_train_list(root, "infrared")
    assert set(labels.tolist()) == set(nir_labels.tolist()) == set(range(6))  # every train id in both modalities
    assert all("/train_vis/" in p for p in paths) and all("/train_nir/" in p for p in nir)
    vis_q = llcm.query_set(root, "vis2ir")[0]
    nir_q = llcm.query_set(root, "ir2vis")[0]
    vis_mean = np.mean([np.asarray(Image.open(p)).mean() for p in vis_q])
    nir_mean = np.mean([np.asarray(Image.open(p)).mean() for p in nir_q])
    assert vis_mean < 0.5 * nir_mean  # low light in the visible images
    again = synthetic.generate("llcm", tmp_path / "again", ids=9, images=2, height=32, width=16, workers=1)
    assert (again / "idx" / "train_vis.txt").read_text() == (root / "idx" / "train_vis.txt").read_text()
