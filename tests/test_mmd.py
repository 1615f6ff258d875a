import numpy as np
import pytest
import torch

from aminet.losses import AMKMMD, amk_mmd, kernel_mmd_terms

MULT = [0.25, 0.5, 1.0, 2.0, 4.0]


def _loop_mmd(x, y, multipliers, weights):
    """Double-loop numpy MMD^2_u, written from the definition."""
    z = np.concatenate([x, y])
    n = len(z)
    d = np.array([[np.sum((a - b) ** 2) for b in z] for a in z])
    base = d.sum() / (n * (n - 1))

    def k(a, b):
        return sum(w * np.exp(-np.sum((a - b) ** 2) / (2 * m * base)) for m, w in zip(multipliers, weights))

    ns, nt = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(ns) for j in range(ns) if i != j) / (ns * (ns - 1))
    syy = sum(k(y[i], y[j]) for i in range(nt) for j in range(nt) if i != j) / (nt * (nt - 1))
    sxy = sum(k(x[i], y[j]) for i in range(ns) for j in range(nt)) / (ns * nt)
    return sxx + syy - 2 * sxy


@pytest.mark.parametrize("seed", range(4))
def test_matches_double_loop(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6 + seed, 7))
    y = rng.normal(size=(9, 7)) * 1.3 + 0.4
    w = rng.dirichlet(np.ones(len(MULT)))
    got = amk_mmd(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), MULT, torch.tensor(w))
    assert got.item() == pytest.approx(_loop_mmd(x, y, MULT, w), abs=1e-5)
    uniform = amk_mmd(torch.tensor(x), torch.tensor(y), MULT)
    assert uniform.item() == pytest.approx(_loop_mmd(x, y, MULT, np.full(5, 0.2)), abs=1e-5)


def test_near_zero_for_one_distribution():
    g = torch.Generator().manual_seed(0)
    vals = torch.stack(
        [amk_mmd(torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g), MULT) for _ in range(200)]
    )
    se = vals.std() / len(vals) ** 0.5
    assert abs(vals.mean()) < 3 * se
    assert (vals < 0).any()  # unbiased: not clamped


def test_grows_monotonically_with_mean_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    y0 = torch.randn(64, 8, generator=g)
    vals = [amk_mmd(x, y0 + s, MULT).item() for s in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(vals, vals[1:])), vals


def test_invariances():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(20, 5, generator=g), torch.randn(24, 5, generator=g) + 0.5
    ref = amk_mmd(x, y, MULT)
    torch.testing.assert_close(
        amk_mmd(x[torch.randperm(20, generator=g)], y[torch.randperm(24, generator=g)], MULT), ref
    )
    torch.testing.assert_close(amk_mmd(y, x, MULT), ref)
    torch.testing.assert_close(amk_mmd(3 * x + 1, 3 * y + 1, MULT), ref, atol=1e-5, rtol=1e-4)  # adaptive bandwidth


def test_finite_gradients_in_degenerate_cases():
    base = torch.randn(8, 6)
    cases = {
        "duplicated rows": (torch.cat([base[:4], base[:4]]), torch.randn(8, 6)),
        "identical sets": (base.clone(), base.clone()),
        "all equal": (torch.ones(8, 6), torch.ones(8, 6)),
    }
    for name, (x, y) in cases.items():
        x = x.clone().requires_grad_(True)
        y = y.clone().requires_grad_(True)
        crit = AMKMMD(MULT)
        loss = crit(x, y)
        loss.backward()
        assert torch.isfinite(loss), name
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all(), name
        assert torch.isfinite(crit.logits.grad).all(), name


def test_bad_input():
    with pytest.raises(ValueError, match="multiplier set is empty"):
        amk_mmd(torch.randn(4, 3), torch.randn(4, 3), [])
    with pytest.raises(ValueError, match="at least 2 samples"):
        amk_mmd(torch.randn(1, 3), torch.randn(4, 3), MULT)
    with pytest.raises(ValueError, match="same d"):
        amk_mmd(torch.randn(4, 3), torch.randn(4, 2), MULT)
    with pytest.raises(ValueError, match="mode 'learned'"):
        AMKMMD(MULT, mode="learned")


def _train_weights(minimise_directly: bool, steps=300):
    torch.manual_seed(0)
    crit = AMKMMD([0.125, 0.25, 0.5, 1.0, 2.0], "adversarial", entropy=0.05)
    opt = torch.optim.SGD(crit.parameters(), lr=5.0)
    for _ in range(steps):
        x, y = torch.randn(32, 16), torch.randn(32, 16) + 0.3
        if minimise_directly:  # the naive rule: weights minimise the MMD like every other parameter
            loss = (torch.softmax(crit.logits, 0) * kernel_mmd_terms(x, y, crit.multipliers)).sum()
        else:
            loss = crit(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        w = crit.weights.detach()
        assert torch.isclose(w.sum(), torch.tensor(1.0)) and (w >= 0).all()  # on the simplex
    return crit.weights.detach()


def test_naive_minimisation_collapses_adversarial_does_not():
    naive = _train_weights(True)
    assert naive.max() > 0.9  # the failure the design avoids: all weight on one kernel
    adv = _train_weights(False)
    assert adv.max() < 0.5 and adv.min() > 0.05
    # the adversarial rule prefers the kernels that see the difference, not the extremes
    assert adv.argmax() not in (0, len(adv) - 1)


def test_fixed_mode_trains_nothing():
    crit = AMKMMD(MULT, "fixed")
    assert not crit.logits.requires_grad
    x, y = torch.randn(6, 3), torch.randn(6, 3)
    torch.testing.assert_close(crit(x, y), amk_mmd(x, y, MULT))


# ------------------------------------------------------------------------------------------------
# Identity composition (issue 13.2)
# ------------------------------------------------------------------------------------------------


def _loop_balanced(x, y, lx, ly, multipliers, paired=False):
    """The composition-balanced estimate, written from its definition with loops over pairs."""
    z = np.concatenate([x, y])
    n = len(z)
    base = sum(np.sum((a - b) ** 2) for a in z for b in z) / (n * (n - 1))

    def k(a, b):
        return np.mean([np.exp(-np.sum((a - b) ** 2) / (2 * m * base)) for m in multipliers])

    parts, shares = [], []
    for same in (True, False):

        def mean(pairs):
            vals = [k(a, b) for a, b in pairs]
            return (np.mean(vals), len(vals)) if vals else (0.0, 0)

        xx = mean([(x[i], x[j]) for i in range(len(x)) for j in range(len(x)) if i != j and (lx[i] == lx[j]) == same])
        yy = mean([(y[i], y[j]) for i in range(len(y)) for j in range(len(y)) if i != j and (ly[i] == ly[j]) == same])
        xy = mean(
            [
                (x[i], y[j])
                for i in range(len(x))
                for j in range(len(y))
                if (lx[i] == ly[j]) == same and not (paired and i == j)
            ]
        )
        parts.append(xx[0] + yy[0] - 2 * xy[0])
        shares.append(xy[1] if xx[1] and yy[1] and xy[1] else 0)
    return sum(p * s for p, s in zip(parts, shares)) / sum(shares)


@pytest.mark.parametrize("paired", [False, True])
def test_balanced_estimate_matches_pair_loops(paired):
    rng = np.random.default_rng(3)
    lx = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    ly = lx.copy() if paired else np.array([0, 1, 1, 1, 2, 2, 3])
    x = rng.normal(size=(len(lx), 5))
    y = rng.normal(size=(len(ly), 5)) + 0.3
    got = amk_mmd(
        torch.tensor(x), torch.tensor(y), MULT, labels_x=torch.tensor(lx), labels_y=torch.tensor(ly), paired=paired
    )
    assert got.item() == pytest.approx(_loop_balanced(x, y, lx, ly, MULT, paired), abs=1e-6)


def test_without_identity_pairs_balanced_equals_textbook():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(9, 4, generator=g), torch.randn(7, 4, generator=g) + 0.2
    distinct = amk_mmd(x, y, MULT, labels_x=torch.arange(9), labels_y=torch.arange(9, 16))
    torch.testing.assert_close(distinct, amk_mmd(x, y, MULT))


def _identity_batch(g, p=8, k=4, dim=16, spread=1.5):
    """P identities x K images: an identity centre plus image noise (the structure a P x K batch has)."""
    centres = torch.randn(p, dim, generator=g) * spread
    labels = torch.arange(p).repeat_interleave(k)
    return centres, labels


def _draws(fn, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    vals = torch.stack([fn(g) for _ in range(n)])
    return vals.mean().item(), (vals.std() / len(vals) ** 0.5).item()


def test_inter_modality_estimate_is_zero_under_identity_structure_and_positive_under_shift():
    """IDAL's two sets hold the same P identities x K images. The textbook estimate is biased
    (3/31 vs 1/8 same-identity pairs) and negative with no shift; the balanced one is 0 within error."""

    def sample(g, shift=0.0, balanced=True):
        centres, labels = _identity_batch(g)
        x = centres[labels] + torch.randn(len(labels), 16, generator=g)
        y = centres[labels] + torch.randn(len(labels), 16, generator=g) + shift
        return amk_mmd(x, y, MULT, labels_x=labels, labels_y=labels) if balanced else amk_mmd(x, y, MULT)

    mean, se = _draws(sample)
    assert abs(mean) < 3 * se, (mean, se)
    plain, plain_se = _draws(lambda g: sample(g, balanced=False))
    assert plain < -5 * plain_se  # the bias the balanced estimate removes
    shifted, shifted_se = _draws(lambda g: sample(g, shift=0.4), n=100)
    assert shifted > 10 * shifted_se and shifted > 10 * abs(mean)


def test_camera_split_estimate_is_zero_without_camera_shift():
    """IMDAL by camera: the images of one camera against the rest, with identities spread unevenly over
    the cameras. Zero within error without a camera effect, clearly positive with one."""

    def sample(g, cam_shift=0.0):
        centres, labels = _identity_batch(g)
        cams = torch.randint(0, 4, (len(labels),), generator=g)
        cams[:2], cams[2:4] = 0, 1  # both sides non-empty
        f = centres[labels] + torch.randn(len(labels), 16, generator=g) + cam_shift * (cams == 0)[:, None]
        a, b = torch.nonzero(cams == 0).squeeze(1), torch.nonzero(cams != 0).squeeze(1)
        return amk_mmd(f[a], f[b], MULT, labels_x=labels[a], labels_y=labels[b])

    mean, se = _draws(sample, n=400)
    assert abs(mean) < 3 * se, (mean, se)
    shifted, shifted_se = _draws(lambda g: sample(g, cam_shift=1.0), n=100)
    assert shifted > 8 * shifted_se


def test_branch_estimate_is_zero_for_exchangeable_views():
    """IMDAL by branch: x_i and y_i are two views of image i; leaving those pairs out of the cross sum
    makes the estimate zero for exchangeable views (the textbook estimate is pulled negative by them)."""

    def sample(g, balanced=True):
        centres, labels = _identity_batch(g)
        image = centres[labels] + torch.randn(len(labels), 16, generator=g)
        x = image + 0.5 * torch.randn(len(labels), 16, generator=g)
        y = image + 0.5 * torch.randn(len(labels), 16, generator=g)
        if balanced:
            return amk_mmd(x, y, MULT, labels_x=labels, labels_y=labels, paired=True)
        return amk_mmd(x, y, MULT)

    mean, se = _draws(sample)
    assert abs(mean) < 3 * se, (mean, se)
    plain, plain_se = _draws(lambda g: sample(g, balanced=False))
    assert plain < -5 * plain_se


def test_criterion_camera_imdal_uses_host_cameras():
    from fakes import intra_output

    from aminet.config import load_config
    from aminet.losses import AMINetCriterion

    cfg = load_config(None, ["data.instances=4", "loss.mmd_kernel_weights=fixed", "loss.imdal=camera"])
    crit = AMINetCriterion(cfg, 4)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    v, i = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    out = intra_output(v, i, 4, g)
    cams_v = np.array([1, 2, 4, 5] * 4)
    cams_i = np.array([3, 6] * 8)
    _, terms = crit(out, labels, (cams_v, cams_i))
    want = [
        amk_mmd(v[cams_v == c], v[cams_v != c], MULT, labels_x=labels[cams_v == c], labels_y=labels[cams_v != c])
        for c in (1, 2, 4, 5)
    ]
    want.append(
        amk_mmd(i[cams_i == 3], i[cams_i == 6], MULT, labels_x=labels[cams_i == 3], labels_y=labels[cams_i == 6])
    )
    torch.testing.assert_close(terms["imdal"], torch.stack(want).mean())
    _, one_camera = crit(out, labels, (np.ones(16, int), np.full(16, 3)))
    assert one_camera["imdal"].item() == 0.0  # nothing to align
    with pytest.raises(ValueError, match="camera of every image"):
        crit(out, labels)
