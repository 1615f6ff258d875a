import warnings

import numpy as np
import pytest
import torch

from aminet.model.phase import log_gabor_bank, phase_congruency

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # phasepack warns that pyfftw is missing
    from phasepack import phasecong


def _reference(img, **kw):
    """The pooled map of the paper's Eq. 9 from phasepack's per-orientation outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, _, _, pc, eo, _ = phasecong(img, **kw)
    nscale = len(eo[0])
    sum_a = [sum(np.abs(eo[o][s]) for s in range(nscale)) for o in range(len(eo))]
    # phasepack divides by sumA without an epsilon: 0/0 = NaN where an orientation sees nothing.
    # That term is multiplied by its zero amplitude in the pooled map, so it contributes 0.
    terms = []
    for o in range(len(eo)):
        undefined = np.isnan(pc[o])
        assert (sum_a[o][undefined] == 0).all()  # NaN only in the 0/0 case
        terms.append(np.where(undefined, 0.0, pc[o] * sum_a[o]))
    return sum(terms) / (sum(sum_a) + 1e-4)


def _natural(seed, h=72, w=48):
    """A natural-ish image: 1/f noise plus shapes with edges."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2
    f[0, 0] = 1
    noise = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(h, w))) / f**0.75))
    img = (noise - noise.min()) / (np.ptp(noise) + 1e-9)
    img[h // 4 : h // 2, w // 4 : 3 * w // 4] += 0.8
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 0.7 * h) ** 2 + (xx - 0.5 * w) ** 2 < (0.15 * w) ** 2] -= 0.5
    return img


def _synthetic(kind, h=64, w=40):
    img = np.zeros((h, w))
    if kind == "step":
        img[:, w // 2 :] = 1.0
    elif kind == "square":
        img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
        img += np.random.default_rng(0).normal(0, 0.05, img.shape)
    elif kind == "odd":  # odd sizes use the other frequency grid
        img = np.random.default_rng(1).random((h + 1, w + 1))
    return img


@pytest.mark.parametrize("case", ["nat0", "nat1", "step", "square", "odd"])
def test_matches_phasepack_float64_and_float32(case):
    img = _natural(int(case[-1])) if case.startswith("nat") else _synthetic(case)
    ref = _reference(img)
    got64 = phase_congruency(torch.tensor(img, dtype=torch.float64)[None])[0, 0].numpy()
    assert np.abs(got64 - ref).max() < 1e-8
    got32 = phase_congruency(torch.tensor(img, dtype=torch.float32)[None])[0, 0].numpy()
    assert np.abs(got32 - ref).max() < 1e-4


def test_other_parameters_match_too():
    img = _natural(3)
    kw = dict(nscale=4, norient=4, minWaveLength=4, mult=2.0, sigmaOnf=0.65, k=3.0, cutOff=0.4, g=8.0)
    ref = _reference(img, **kw)
    got = phase_congruency(
        torch.tensor(img)[None],
        nscale=4,
        norient=4,
        min_wavelength=4,
        mult=2.0,
        sigma_onf=0.65,
        k=3.0,
        cutoff=0.4,
        g=8.0,
    )[0, 0].numpy()
    assert np.abs(got - ref).max() < 1e-8


def test_properties():
    imgs = torch.tensor(np.stack([_natural(s) for s in range(3)]))
    pc = phase_congruency(imgs)
    assert pc.shape == (3, 1, 72, 48)
    assert torch.isfinite(pc).all() and pc.min() >= 0 and pc.max() <= 1
    # brightness invariance: exact up to rounding (every filter is zero at DC)
    torch.testing.assert_close(phase_congruency(imgs + 0.37), pc, atol=1e-10, rtol=0)
    # batch independence: one image alone gives the same map
    torch.testing.assert_close(phase_congruency(imgs[1:2]), pc[1:2], atol=1e-12, rtol=0)
    # constant image -> 0, no NaN
    flat = phase_congruency(torch.full((2, 40, 30), 0.5))
    assert torch.isfinite(flat).all() and flat.abs().max() == 0
    # three identical channels give the luminance map
    rgb = imgs[:, None].repeat(1, 3, 1, 1)
    torch.testing.assert_close(phase_congruency(rgb), pc)


def test_step_edge_response():
    img = torch.zeros(1, 64, 64, dtype=torch.float64)
    img[..., 32:] = 1.0
    pc = phase_congruency(img)[0, 0]
    assert pc[:, 31:33].mean() > 0.5  # strong on the edge
    assert pc[:, 12:20].max() < 0.05  # ~0 far from it


def test_filter_bank_is_cached_per_size_and_dtype():
    a = log_gabor_bank(32, 16, "cpu", torch.float32)
    assert a is log_gabor_bank(32, 16, "cpu", torch.float32)
    assert a is not log_gabor_bank(32, 16, "cpu", torch.float64)
    assert a.shape == (6, 5, 32, 16) and float(a[:, :, 0, 0].abs().max()) == 0.0
