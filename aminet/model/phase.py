"""Phase congruency (Kovesi's ``phasecong3`` formulation), batched with ``torch.fft``.

``phase_congruency(images)`` returns the orientation-pooled map of the paper's Eq. 9,

    PC = sum_o W_o * max(E_o - T_o, 0) / (sum_o sum_s A_{o,s} + eps),

where, per orientation o, E_o is the local energy summed over scales, A_{o,s} the amplitude of the
quadrature (log-Gabor) response at scale s, T_o the noise threshold estimated from the median
amplitude of the smallest scale, and W_o the frequency-spread weight. This is the same quantity as
``sum_o PC_o * sumA_o / (sum_o sumA_o + eps)`` computed from ``phasepack.phasecong``'s per-orientation
outputs, and the tests hold it to phasepack within 1e-8 (float64) and 1e-4 (float32).

Filters live in the frequency domain (one-sided angular spread, so the inverse FFT gives even
responses in the real part and odd ones in the imaginary part) and are built once per
(H, W, device, dtype, parameters) and cached. Plain FFT: borders wrap around, as in phasepack.
Values lie in [0, 1]; a constant image gives 0 (every filter is zero at DC, so a brightness offset
changes nothing), and nothing is NaN.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = ["phase_congruency", "phase_congruency_rgb", "log_gabor_bank", "to_luminance"]


def _freq_axis(n: int, dtype: torch.dtype) -> torch.Tensor:
    if n % 2:
        return torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=dtype) / (n - 1)
    return torch.arange(-n / 2.0, n / 2.0, dtype=dtype) / n


@lru_cache(maxsize=32)
def _bank_cached(
    h: int,
    w: int,
    device: str,
    dtype: torch.dtype,
    nscale: int,
    norient: int,
    min_wavelength: float,
    mult: float,
    sigma_onf: float,
) -> torch.Tensor:
    # Build in float64 on the CPU (exactly as the reference does), then cast and move once.
    x = _freq_axis(w, torch.float64)[None, :]
    y = _freq_axis(h, torch.float64)[:, None]
    radius = torch.fft.ifftshift(torch.sqrt(x * x + y * y))
    theta = torch.fft.ifftshift(torch.atan2(-y.expand(h, w), x.expand(h, w)))
    radius = radius.clone()
    radius[0, 0] = 1.0
    sin_t, cos_t = torch.sin(theta), torch.cos(theta)
    lowpass = 1.0 / (1.0 + (radius / 0.45) ** (2 * 15))  # Butterworth, cut-off 0.45, order 15
    denom = 2.0 * math.log(sigma_onf) ** 2
    radial = []
    for s in range(nscale):
        f0 = 1.0 / (min_wavelength * mult**s)
        g = torch.exp(-(torch.log(radius / f0) ** 2) / denom) * lowpass
        g[0, 0] = 0.0
        radial.append(g)
    filters = torch.empty(norient, nscale, h, w, dtype=torch.float64)
    for o in range(norient):
        angle = o * math.pi / norient
        ds = sin_t * math.cos(angle) - cos_t * math.sin(angle)
        dc = cos_t * math.cos(angle) + sin_t * math.sin(angle)
        dtheta = torch.clamp(torch.abs(torch.atan2(ds, dc)) * norient / 2.0, 0.0, math.pi)
        spread = (torch.cos(dtheta) + 1.0) / 2.0
        for s in range(nscale):
            filters[o, s] = radial[s] * spread
    return filters.to(device=device, dtype=dtype)


def log_gabor_bank(
    h: int,
    w: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    nscale: int = 5,
    norient: int = 6,
    min_wavelength: float = 3.0,
    mult: float = 2.1,
    sigma_onf: float = 0.55,
) -> torch.Tensor:
    """(norient, nscale, H, W) real filters, DC at [0, 0]; cached per size, device, dtype and parameters."""
    return _bank_cached(
        int(h),
        int(w),
        str(torch.device(device)),
        dtype,
        int(nscale),
        int(norient),
        float(min_wavelength),
        float(mult),
        float(sigma_onf),
    )


def to_luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) or (B, 1, H, W) or (B, H, W) -> (B, H, W) by the channel mean (as phasepack does)."""
    if images.dim() == 4:
        return images.mean(dim=1)
    if images.dim() == 3:
        return images
    raise ValueError(f"images: expected (B, C, H, W) or (B, H, W), got shape {tuple(images.shape)}")


def phase_congruency(
    images: torch.Tensor,
    nscale: int = 5,
    norient: int = 6,
    min_wavelength: float = 3,
    mult: float = 2.1,
    sigma_onf: float = 0.55,
    k: float = 2.0,
    cutoff: float = 0.5,
    g: float = 10.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Phase congruency pooled over orientations, (B, 1, H, W), in the dtype of ``images``
    (float32 or float64; other dtypes are computed in float32)."""
    img = to_luminance(images)
    if not img.is_floating_point() or img.dtype in (torch.float16, torch.bfloat16):
        img = img.float()
    if nscale < 2:
        raise ValueError(f"nscale {nscale}: need at least 2 scales (the frequency spread divides by nscale - 1)")
    b, h, w = img.shape
    dtype = img.dtype
    bank = log_gabor_bank(h, w, img.device, dtype, nscale, norient, min_wavelength, mult, sigma_onf)
    spectrum = torch.fft.fft2(img)  # (B, H, W) complex
    noise_scale = (1.0 - (1.0 / mult) ** nscale) / (1.0 - 1.0 / mult)
    noise_factor = math.sqrt(math.pi / 2.0) + k * math.sqrt((4.0 - math.pi) / 2.0)
    energy_total = torch.zeros(b, h, w, dtype=dtype, device=img.device)
    amp_total = torch.zeros_like(energy_total)
    for o in range(norient):  # one orientation at a time keeps memory at (B, nscale, H, W)
        eo = torch.fft.ifft2(spectrum[:, None] * bank[o][None])  # (B, S, H, W) complex
        even, odd = eo.real, eo.imag
        amp = eo.abs()
        sum_a = amp.sum(dim=1)
        max_a = amp.amax(dim=1)
        sum_e = even.sum(dim=1)
        sum_o = odd.sum(dim=1)
        norm = torch.sqrt(sum_e * sum_e + sum_o * sum_o) + eps
        mean_e = (sum_e / norm)[:, None]
        mean_o = (sum_o / norm)[:, None]
        energy = (even * mean_e + odd * mean_o - torch.abs(even * mean_o - odd * mean_e)).sum(dim=1)
        # Noise: Rayleigh parameter from the median amplitude of the smallest scale, per image.
        # np.median semantics (mean of the two middle values), not torch.median (the lower one).
        tau = torch.quantile(amp[:, 0].reshape(b, -1), 0.5, dim=1) / math.sqrt(math.log(4.0))
        threshold = torch.clamp(tau * noise_scale * noise_factor, min=eps)[:, None, None]
        energy = torch.clamp(energy - threshold, min=0.0)
        width = (sum_a / (max_a + eps) - 1.0) / (nscale - 1)
        weight = 1.0 / (1.0 + torch.exp(g * (cutoff - width)))
        energy_total += weight * energy
        amp_total += sum_a
    return (energy_total / (amp_total + eps))[:, None]


# ------------------------------------------------------------------------------------------------
# As one opaque op for torch.compile
# ------------------------------------------------------------------------------------------------


# The schema is written out: torch 2.4 (the lowest torch pyproject.toml allows) cannot infer it from this
# module's postponed (string) annotations, and failed at import (found installing the lowest set, issue 39).
@torch.library.custom_op(
    "aminet::phase_congruency_rgb",
    mutates_args=(),
    schema="(Tensor x, Tensor mean, Tensor std, float eps) -> Tensor",
)
def phase_congruency_rgb(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float) -> torch.Tensor:
    """Phase congruency (float32, (B, 1, H, W)) of ImageNet-normalised images ``x`` (B, 3, H, W), computed in
    float32 outside any autocast. A custom op: ``torch.compile`` sees one opaque node with a known output
    shape and runs this eager kernel inside the compiled graph, so the model's forward is one graph (inductor
    generates no code for the complex tensors of the FFTs, and tracing through the cached filter bank would
    rebuild it on every call; a ``torch.compiler.disable`` here broke the forward into several frames that
    recompiled for each image height)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        rgb = x.float() * std + mean  # back to [0, 1]
        return phase_congruency(rgb, eps=eps).contiguous()


@phase_congruency_rgb.register_fake
def _(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float) -> torch.Tensor:
    return x.new_empty((x.shape[0], 1, x.shape[2], x.shape[3]), dtype=torch.float32)
