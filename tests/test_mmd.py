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
    vals = torch.stack([amk_mmd(torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g), MULT)
                        for _ in range(200)])
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
    torch.testing.assert_close(amk_mmd(x[torch.randperm(20, generator=g)], y[torch.randperm(24, generator=g)], MULT), ref)
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
