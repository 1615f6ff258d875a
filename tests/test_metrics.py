import numpy as np
import pytest
import torch
from reference_metrics import reference_metrics

from aminet.evaluation import regdb_metrics, sysu_metrics


def _random_sysu(seed, n_ids=24, n_query=300, n_gallery=120, integer_dist=False):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, n_ids, n_query)
    g_pids = rng.integers(0, n_ids, n_gallery)
    q_cams = rng.choice([3, 6], n_query)
    g_cams = rng.choice([1, 2, 4, 5], n_gallery)
    if integer_dist:  # many exact ties: the order must then follow the gallery index
        dist = rng.integers(0, 6, (n_query, n_gallery)).astype(np.float64)
    else:
        dist = rng.normal(size=(n_query, n_gallery))
        dist -= 0.8 * (q_pids[:, None] == g_pids[None, :])  # make it better than chance
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_sysu_matches_reference(seed, ties):
    dist, qp, gp, qc, gc = _random_sysu(seed, integer_dist=ties)
    cmc, mAP, mINP = sysu_metrics(dist, qp, gp, qc, gc)
    ref_cmc, ref_map, ref_minp = reference_metrics(dist, qp, gp, qc, gc, sysu=True)
    assert cmc.shape == (20,) and cmc.dtype.kind == "f"
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert mAP == pytest.approx(ref_map, abs=1e-6)
    assert mINP == pytest.approx(ref_minp, abs=1e-6)
    assert 0 <= mINP <= mAP <= 1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_regdb_matches_reference(seed, ties):
    rng = np.random.default_rng(100 + seed)
    pids = np.repeat(np.arange(25), 4)
    g_pids = rng.permutation(pids)
    if ties:
        dist = rng.integers(0, 5, (len(pids), len(g_pids))).astype(np.float64)
    else:
        dist = rng.normal(size=(len(pids), len(g_pids))) - 0.7 * (pids[:, None] == g_pids[None, :])
    cmc, mAP, mINP = regdb_metrics(dist, pids, g_pids, max_rank=20)
    ref = reference_metrics(dist, pids, g_pids, sysu=False)
    np.testing.assert_allclose(cmc, ref[0], atol=1e-6)
    assert mAP == pytest.approx(ref[1], abs=1e-6)
    assert mINP == pytest.approx(ref[2], abs=1e-6)


def test_large_chunked_case_matches_reference(monkeypatch):
    # Force several query and pair chunks so the chunked path is exercised.
    import aminet.evaluation.metrics as m

    monkeypatch.setattr(m, "_CHUNK_ELEMENTS", 1000)
    dist, qp, gp, qc, gc = _random_sysu(7, n_ids=30, n_query=250, n_gallery=90)
    got = sysu_metrics(dist, qp, gp, qc, gc)
    ref = reference_metrics(dist, qp, gp, qc, gc, sysu=True)
    np.testing.assert_allclose(got[0], ref[0], atol=1e-6)
    assert got[1] == pytest.approx(ref[1], abs=1e-6)


def test_torch_and_numpy_inputs_agree():
    dist, qp, gp, qc, gc = _random_sysu(3)
    a = sysu_metrics(dist, qp, gp, qc, gc)
    b = sysu_metrics(torch.tensor(dist), torch.tensor(qp), torch.tensor(gp), torch.tensor(qc), torch.tensor(gc))
    np.testing.assert_allclose(a[0], b[0])
    assert a[1:] == pytest.approx(b[1:])


def test_cam3_query_whose_only_match_is_in_cam2_is_skipped():
    # Query 0: cam3, its only match sits in cam2 -> removed -> the query is skipped.
    # Query 1: cam6, identity 1, found at rank 1.
    g_pids = np.array([0, 1, 2])
    g_cams = np.array([2, 1, 4])
    q_pids = np.array([0, 1])
    q_cams = np.array([3, 6])
    dist = np.array([[0.1, 0.5, 0.9], [0.9, 0.1, 0.5]])
    cmc, mAP, mINP = sysu_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    np.testing.assert_allclose(cmc, [1, 1, 1])
    assert mAP == 1.0 and mINP == 1.0
    # The same query from cam6 keeps the cam2 entry and is counted.
    cmc, mAP, _ = sysu_metrics(dist, q_pids, g_pids, np.array([6, 6]), g_cams, max_rank=3)
    assert mAP == 1.0


def test_cam2_removal_applies_to_every_identity():
    # cam3 query of id 0; gallery ranked: id 1 (cam2, removed), id 2 (cam4), id 0 (cam1).
    dist = np.array([[0.1, 0.2, 0.3]])
    cmc, mAP, mINP = sysu_metrics(dist, [0], [1, 2, 0], [3], [2, 4, 1], max_rank=3)
    np.testing.assert_allclose(cmc, [0, 1, 1])  # the removed id-1 entry does not count
    assert mAP == pytest.approx(1 / 2) and mINP == pytest.approx(1 / 2)


def test_sysu_cmc_is_identity_deduplicated_regdb_is_not():
    # Ranked gallery: id 5, id 5, id 5, id 0 (the match), id 0.
    g_pids = np.array([5, 5, 5, 0, 0])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    cmc, mAP, mINP = sysu_metrics(dist, [0], g_pids, [6], [1, 1, 1, 1, 1], max_rank=5)
    np.testing.assert_allclose(cmc, [0, 1, 1, 1, 1])  # second distinct identity
    assert mAP == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert mINP == pytest.approx(2 / 5)
    cmc, mAP2, _ = regdb_metrics(dist, [0], g_pids, max_rank=5)
    np.testing.assert_allclose(cmc, [0, 0, 0, 1, 1])  # fourth image
    assert mAP2 == pytest.approx(mAP)


def test_cmc_is_padded_when_gallery_is_short():
    cmc, _, _ = regdb_metrics(np.array([[0.2, 0.1]]), [1], [1, 2], max_rank=5)
    np.testing.assert_allclose(cmc, [0, 1, 1, 1, 1])


def test_perfect_and_worst_rankings():
    pids = np.arange(20)
    cmc, mAP, mINP = regdb_metrics(-np.eye(20), pids, pids)
    assert cmc[0] == 1.0 and mAP == 1.0 and mINP == 1.0
    cmc, mAP, mINP = regdb_metrics(np.eye(20), pids, pids)
    assert cmc[18] == 0.0 and cmc[19] == 1.0
    assert mAP == pytest.approx(1 / 20) and mINP == pytest.approx(1 / 20)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(distmat=np.zeros((3, 4)), q_pids=[0, 1], g_pids=[0, 1, 2, 3]), "q_pids: length 2"),
        (dict(distmat=np.zeros((2, 4)), q_pids=[0, 1], g_pids=[0, 1, 2]), "g_pids: length 3"),
        (dict(distmat=np.zeros((2, 0)), q_pids=[0, 1], g_pids=[]), "gallery is empty"),
        (dict(distmat=np.zeros((0, 3)), q_pids=[], g_pids=[0, 1, 2]), "query set is empty"),
        (dict(distmat=np.zeros(3), q_pids=[0], g_pids=[0, 1, 2]), "2-D"),
        (dict(distmat=np.full((1, 2), np.nan), q_pids=[0], g_pids=[0, 1]), "NaN"),
        (dict(distmat=np.zeros((1, 2)), q_pids=[7], g_pids=[0, 1]), "no query has a matching"),
        (dict(distmat=np.zeros((1, 2)), q_pids=["a"], g_pids=[0, 1]), "q_pids"),
    ],
)
def test_bad_input_names_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        regdb_metrics(**kwargs)


def test_sysu_requires_cameras_of_matching_length():
    with pytest.raises(ValueError, match="g_cams: length 1"):
        sysu_metrics(np.zeros((1, 2)), [0], [0, 1], [3], [1])


def _random_llcm(seed, n_ids=20, n_query=200, n_gallery=150, integer_dist=False):
    """Queries and gallery from the same nine camera numbers (LLCM's visible and near-infrared cameras)."""
    rng = np.random.default_rng(200 + seed)
    q_pids, g_pids = rng.integers(0, n_ids, n_query), rng.integers(0, n_ids, n_gallery)
    q_cams, g_cams = rng.choice([1, 2, 4, 5, 6, 7, 8, 9], n_query), rng.integers(1, 10, n_gallery)
    if integer_dist:
        dist = rng.integers(0, 6, (n_query, n_gallery)).astype(np.float64)
    else:
        dist = rng.normal(size=(n_query, n_gallery)) - 0.8 * (q_pids[:, None] == g_pids[None, :])
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_llcm_matches_reference(seed, ties):
    from aminet.evaluation import llcm_metrics

    dist, qp, gp, qc, gc = _random_llcm(seed, integer_dist=ties)
    cmc, mAP, mINP = llcm_metrics(dist, qp, gp, qc, gc)
    ref = reference_metrics(dist, qp, gp, qc, gc, sysu=False, llcm=True)
    np.testing.assert_allclose(cmc, ref[0], atol=1e-6)
    assert mAP == pytest.approx(ref[1], abs=1e-6) and mINP == pytest.approx(ref[2], abs=1e-6)


def test_llcm_by_hand():
    """One query (identity 7, camera 4) and five gallery images, ranked by distance:
    g0 id 7 cam 4 (removed: own identity, own camera), g1 id 3 cam 1, g2 id 7 cam 4 (removed), g3 id 3 cam 2,
    g4 id 7 cam 9. Kept list: id 3, id 3, id 7 -> the positive at kept position 3: AP = INP = 1/3;
    deduplicated CMC: [id 3, id 7] -> rank 2. SYSU's rule (camera-3 queries only) would keep g0 (rank 1)."""
    from aminet.evaluation import llcm_metrics

    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    q_pids, g_pids = np.array([7]), np.array([7, 3, 7, 3, 7])
    q_cams, g_cams = np.array([4]), np.array([4, 1, 4, 2, 9])
    cmc, mAP, mINP = llcm_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    np.testing.assert_allclose(cmc, [0.0, 1.0, 1.0])
    assert mAP == pytest.approx(1 / 3) and mINP == pytest.approx(1 / 3)
    cmc_s, map_s, _ = sysu_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    assert cmc_s[0] == 1.0 and map_s > mAP
