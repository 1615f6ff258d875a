import threading

import numpy as np
import pytest
import torch

from aminet.data.sampler import BatchLoader, CrossModalSampler


def _labels(seed=0, n_ids=12):
    rng = np.random.default_rng(seed)
    vis = np.sort(rng.integers(0, n_ids, 150))
    ir = np.sort(rng.integers(0, n_ids, 90))
    return vis, ir


def test_batch_structure():
    vis, ir = _labels()
    s = CrossModalSampler(vis, ir, ids_per_batch=6, instances=4, seed=0)
    assert s.iters_per_epoch == len(vis) // 24 and s.batch_size == 24
    for it in range(20):
        v, i, lab = s.step(0, it)
        assert v.shape == i.shape == lab.shape == (24,)
        ids = lab[::4]
        assert len(set(ids.tolist())) == 6  # P identities, without replacement
        assert (lab == np.repeat(ids, 4)).all()  # identity-major, K each
        assert (vis[v] == lab).all() and (ir[i] == lab).all()  # images of the right identity and modality


def test_deterministic_random_access_and_seed_dependence():
    vis, ir = _labels()
    a = CrossModalSampler(vis, ir, 4, 2, seed=7)
    b = CrossModalSampler(vis, ir, 4, 2, seed=7)
    c = CrossModalSampler(vis, ir, 4, 2, seed=8)
    ea = list(a.epoch(3))
    assert len(ea) == a.iters_per_epoch
    for k, (v, i, lab) in enumerate(b.epoch(3)):
        assert (v == ea[k][0]).all() and (i == ea[k][1]).all() and (lab == ea[k][2]).all()
    assert any((x[0] != y[0]).any() for x, y in zip(ea, c.epoch(3)))
    assert any((x[0] != y[0]).any() for x, y in zip(ea, a.epoch(4)))  # epochs differ
    resumed = list(a.epoch(3, start=5))
    assert all((x[0] == y[0]).all() for x, y in zip(resumed, ea[5:]))


def test_images_drawn_with_replacement_identities_balanced():
    vis = np.repeat(np.arange(10), [1, 1, 1, 1, 1, 50, 50, 50, 50, 50])
    ir = np.repeat(np.arange(10), 5)
    s = CrossModalSampler(vis, ir, 4, 4, seed=0, iters_per_epoch=400)
    counts = np.zeros(10)
    for v, i, lab in s.epoch(0):
        counts += np.bincount(lab, minlength=10) / 4
    # identities are drawn uniformly, whatever their image counts
    assert counts.min() > 0.7 * counts.mean()
    v, _, lab = s.step(0, 0)
    assert len(v) == 16  # ids with a single visible image still give K samples


def test_too_few_identities():
    with pytest.raises(ValueError, match="ids_per_batch=8, but only 3 identities"):
        CrossModalSampler(np.array([0, 1, 2]), np.array([0, 1, 2, 5]), 8, 4, seed=0)


def test_loader_is_one_thread_for_the_whole_run_and_resumes():
    vis, ir = _labels(1)
    images = np.arange(300 * 4 * 2 * 3, dtype=np.int64).reshape(300, 4, 2, 3).astype(np.uint8)
    rows_v = np.arange(len(vis))
    rows_i = np.arange(len(vis), len(vis) + len(ir))
    s = CrossModalSampler(vis, ir, 4, 2, seed=0, iters_per_epoch=5)
    loader = BatchLoader(images, rows_v, rows_i, s)
    seen, threads = [], set()
    for b in loader.run(0, 0, 3):
        threads.update(t.ident for t in threading.enumerate() if t.name == "aminet-batch-loader")
        v, i, lab = s.step(b.epoch, b.it)
        assert torch.equal(b.visible, torch.from_numpy(images[rows_v[v]]))
        assert torch.equal(b.infrared, torch.from_numpy(images[rows_i[i]]))
        assert torch.equal(b.labels, torch.from_numpy(lab))
        seen.append((b.epoch, b.it))
    assert seen == [(e, k) for e in range(3) for k in range(5)]
    assert len(threads) == 1  # no respawn between epochs
    resumed = [(b.epoch, b.it) for b in loader.run(1, 3, 3)]
    assert resumed == seen[8:]


def test_loader_stops_cleanly_and_propagates_errors():
    vis, ir = _labels(2)
    images = np.zeros((300, 2, 2, 3), np.uint8)
    s = CrossModalSampler(vis, ir, 4, 2, seed=0, iters_per_epoch=100)
    loader = BatchLoader(images, np.arange(len(vis)), np.arange(len(ir)), s, prefetch=2)
    gen = loader.run(0, 0, 10)
    next(gen)
    gen.close()  # consumer stops early: the worker must exit
    assert not any(t.name == "aminet-batch-loader" for t in threading.enumerate())
    broken = BatchLoader(images, np.arange(len(vis)), np.full(len(ir), 10**6), s)
    with pytest.raises(IndexError):
        for _ in broken.run(0, 0, 1):
            pass
