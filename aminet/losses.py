"""Losses of AMINet: identity (cross-entropy), triplet, and the adaptive multi-kernel MMD (AMK-MMD).

AMK-MMD (the paper's Eqs. 6-8): the unbiased estimate of the squared MMD between samples x (n_s) and
y (n_t) under the kernel K(a, b) = sum_m alpha_m exp(-|a - b|^2 / (2 sigma_m^2)),

    MMD^2_u = sum_{i != j} K(x_i, x_j) / (n_s (n_s - 1)) + sum_{i != j} K(y_i, y_j) / (n_t (n_t - 1))
              - 2 sum_{i, j} K(x_i, y_j) / (n_s n_t).

Bandwidths adapt to the batch: sigma_m^2 = multiplier_m * base, base = the mean pairwise squared
distance over Z = [x; y] (detached, floored). One distance matrix for Z (|a|^2 + |b|^2 - 2ab, float32,
clamped at 0, exact zero diagonal). The estimate is not clamped: it is ~0 for equal distributions and
negative about half the time then.

The kernel weights alpha are learnable, on the simplex (softmax of logits). Minimising the MMD over
alpha collapses the weights onto the narrowest or widest kernel, where the MMD vanishes whatever the
features; so ``AMKMMD`` updates them to *maximise* the discrepancy instead (the adversarial form of
optimal kernel selection, through a gradient reversal on alpha), with an entropy bonus that keeps
them off the simplex's corners. ``mode="fixed"`` keeps uniform weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["amk_mmd", "kernel_mmd_terms", "AMKMMD", "GradReverse", "weighted_triplet", "hard_triplet",
           "cross_entropy"]

BASE_FLOOR = 1e-6


def _sq_distances(z: torch.Tensor) -> torch.Tensor:
    sq = (z * z).sum(dim=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    d = d.clamp(min=0.0)
    return d.fill_diagonal_(0.0) if not d.requires_grad else d * (1.0 - torch.eye(len(z), device=z.device, dtype=d.dtype))


def kernel_mmd_terms(x: torch.Tensor, y: torch.Tensor, multipliers: Sequence[float]) -> torch.Tensor:
    """Unbiased MMD^2 under each Gaussian kernel separately: a (M,) tensor (float32)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"amk_mmd: x and y must be (n, d) with the same d, got {tuple(x.shape)} and {tuple(y.shape)}")
    ns, nt = x.shape[0], y.shape[0]
    if ns < 2 or nt < 2:
        raise ValueError(f"amk_mmd: need at least 2 samples on each side, got {ns} and {nt}")
    if len(multipliers) == 0:
        raise ValueError("amk_mmd: the bandwidth multiplier set is empty")
    mults = [float(m) for m in multipliers]  # checked on the host: no device round trip per step
    if any(not m > 0 for m in mults):
        raise ValueError(f"amk_mmd: bandwidth multipliers must be positive, got {mults}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = torch.cat([x, y]).float()
        d = _sq_distances(z)
        n = ns + nt
        base = (d.sum() / (n * (n - 1))).detach().clamp(min=BASE_FLOOR)
        scaled = d / (-2.0 * base)
        k = torch.stack([torch.exp(scaled / m) for m in mults])  # (M, n, n)
        kxx = k[:, :ns, :ns]
        kyy = k[:, ns:, ns:]
        kxy = k[:, :ns, ns:]
        # Diagonals hold exp(0) = 1 exactly: remove them from the within-set sums.
        sxx = (kxx.sum(dim=(1, 2)) - ns) / (ns * (ns - 1))
        syy = (kyy.sum(dim=(1, 2)) - nt) / (nt * (nt - 1))
        sxy = kxy.sum(dim=(1, 2)) / (ns * nt)
        return sxx + syy - 2.0 * sxy


def amk_mmd(x: torch.Tensor, y: torch.Tensor, multipliers: Sequence[float],
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased multi-kernel MMD^2 between x and y; ``weights`` on the simplex (uniform if None)."""
    terms = kernel_mmd_terms(x, y, multipliers)
    if weights is None:
        return terms.mean()
    weights = weights.to(terms)
    if weights.shape != terms.shape:
        raise ValueError(f"amk_mmd: {weights.numel()} weights for {terms.numel()} kernels")
    return (weights * terms).sum()


class GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return -grad


class AMKMMD(nn.Module):
    """AMK-MMD with learnable kernel weights.

    ``forward(x, y)`` returns the weighted MMD^2 to *minimise* (the model's gradient). With
    ``mode="adversarial"`` the weight logits receive the reversed gradient, so the same optimiser step
    moves them to *maximise* the discrepancy, and ``entropy`` * H(alpha) is added to their objective
    (the reported loss value includes only the MMD). ``mode="fixed"``: uniform weights, no parameters
    are trained.
    """

    def __init__(self, multipliers: Sequence[float], mode: str = "adversarial", entropy: float = 0.05):
        super().__init__()
        if mode not in ("adversarial", "fixed"):
            raise ValueError(f"AMKMMD mode {mode!r}: choose adversarial or fixed")
        if len(multipliers) == 0:
            raise ValueError("AMKMMD: the bandwidth multiplier set is empty")
        self.multipliers = [float(m) for m in multipliers]
        self.mode = mode
        self.entropy = float(entropy)
        self.logits = nn.Parameter(torch.zeros(len(self.multipliers)), requires_grad=(mode == "adversarial"))

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        terms = kernel_mmd_terms(x, y, self.multipliers)
        if self.mode == "fixed":
            return terms.mean()
        alpha = torch.softmax(self.logits.float(), dim=0)
        loss = (GradReverse.apply(alpha) * terms).sum()
        if self.entropy > 0:
            # Added with zero value but a gradient on the logits only: maximise H(alpha).
            h = -(alpha * torch.log(alpha.clamp(min=1e-12))).sum()
            loss = loss - self.entropy * (h - h.detach())
        return loss


# --------------------------------------------------------------------------------------------------
# Identity and metric losses
# --------------------------------------------------------------------------------------------------


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def _pairwise_euclidean(f: torch.Tensor) -> torch.Tensor:
    sq = (f * f).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * f @ f.T).clamp(min=1e-12)
    return d2.sqrt()


def weighted_triplet(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The weighted regularised triplet loss of AGW: positives weighted by softmax(distance), negatives by
    softmax(-distance), loss = softplus(d_pos - d_neg), no margin; over the whole batch."""
    f = features.float()
    d = _pairwise_euclidean(f)
    same = labels[:, None] == labels[None, :]
    pos = same.float()
    neg = (~same).float()
    d_pos = d * pos
    d_neg = d * neg
    w_pos = _masked_softmax(d_pos, pos)
    w_neg = _masked_softmax(-d_neg, neg)
    furthest_positive = (d_pos * w_pos).sum(dim=1)
    closest_negative = (d_neg * w_neg).sum(dim=1)
    return F.softplus(furthest_positive - closest_negative).mean()


def _masked_softmax(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    max_v = (dist * mask).amax(dim=1, keepdim=True)
    e = torch.exp(dist - max_v) * mask
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


def hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss with a margin."""
    d = _pairwise_euclidean(features.float())
    same = labels[:, None] == labels[None, :]
    hardest_pos = (d * same).amax(dim=1)
    hardest_neg = d.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


# --------------------------------------------------------------------------------------------------
# The total objective
# --------------------------------------------------------------------------------------------------


class AMINetCriterion(nn.Module):
    """total = w_id * ID + w_tri * triplet + w_intra * IMDAL + w_inter * IDAL.

    * ID: cross-entropy on the logits of every fused feature set (label smoothing optional).
    * triplet: weighted regularised (default) or batch-hard with margin, over all fused features of
      the batch together, so visible, infrared and cross-fused embeddings of an identity are positives.
    * IDAL (inter-modality): AMK-MMD between the visible and the infrared embeddings of the batch. Both
      halves hold the same identities (K images each), so what differs between them is the modality.
    * IMDAL (intra-modality): within each modality, AMK-MMD between the first and the second half of
      every identity's K images (same identities, other images: pose, view, illumination, camera,
      augmentation), averaged over the two modalities. It aligns the within-modality nuisance
      distributions, as the paper's text describes, without comparing different identities.
    Each MMD term has its own learnable kernel weights.
    """

    def __init__(self, cfg, instances: int):
        super().__init__()
        lo = cfg.loss
        self.w_id, self.w_tri = lo.id_weight, lo.triplet_weight
        self.w_intra, self.w_inter = lo.mmd_intra_weight, lo.mmd_inter_weight
        self.label_smoothing = lo.label_smoothing
        self.triplet, self.margin = lo.triplet, lo.triplet_margin
        self.instances = instances
        if self.w_intra > 0 and instances < 2:
            raise ValueError("loss.mmd_intra_weight > 0 needs data.instances >= 2 (IMDAL splits each identity's images)")
        self.mmd_intra = AMKMMD(lo.mmd_multipliers, lo.mmd_kernel_weights, lo.mmd_weight_entropy)
        self.mmd_inter = AMKMMD(lo.mmd_multipliers, lo.mmd_kernel_weights, lo.mmd_weight_entropy)

    def _halves(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of the first and the second half of every identity's K images (rows come in
        identity blocks of K). Index tensors made on the device, not boolean masks: selecting with a
        mask would make the host wait for the GPU to count the rows."""
        if n % self.instances:
            raise ValueError(f"IMDAL: {n} images per modality is not a whole number of identities x "
                             f"{self.instances} instances")
        rows = torch.arange(n, device=device).view(-1, self.instances)
        half = self.instances // 2
        return rows[:, :half].reshape(-1), rows[:, half:].reshape(-1)

    def forward(self, out, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``out`` is the model's ``ModelOutput``; ``labels`` (B,) the identities of the batch half."""
        all_labels = labels[out.pair_index]
        terms: dict[str, torch.Tensor] = {}
        terms["id"] = cross_entropy(out.logits, all_labels, self.label_smoothing)
        if self.triplet == "weighted":
            terms["triplet"] = weighted_triplet(out.features, all_labels)
        else:
            terms["triplet"] = hard_triplet(out.features, all_labels, self.margin)
        zero = out.features.new_zeros(())
        terms["imdal"] = zero
        terms["idal"] = zero
        if self.w_intra > 0:
            a, b = self._halves(out.intra_visible.shape[0], out.intra_visible.device)
            terms["imdal"] = 0.5 * (self.mmd_intra(out.intra_visible[a], out.intra_visible[b])
                                    + self.mmd_intra(out.intra_infrared[a], out.intra_infrared[b]))
        if self.w_inter > 0:
            terms["idal"] = self.mmd_inter(out.intra_visible, out.intra_infrared)
        total = (self.w_id * terms["id"] + self.w_tri * terms["triplet"] + self.w_intra * terms["imdal"]
                 + self.w_inter * terms["idal"])
        return total, terms
