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

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "amk_mmd",
    "kernel_mmd_terms",
    "camera_mmd_terms",
    "AMKMMD",
    "GradReverse",
    "weighted_triplet",
    "hard_triplet",
    "cross_entropy",
    "resolve_imdal",
    "AMINetCriterion",
]

BASE_FLOOR = 1e-6


def _sq_distances(z: torch.Tensor) -> torch.Tensor:
    sq = (z * z).sum(dim=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    d = d.clamp(min=0.0)
    return (
        d.fill_diagonal_(0.0) if not d.requires_grad else d * (1.0 - torch.eye(len(z), device=z.device, dtype=d.dtype))
    )


def kernel_mmd_terms(
    x: torch.Tensor,
    y: torch.Tensor,
    multipliers: Sequence[float],
    labels_x: torch.Tensor | None = None,
    labels_y: torch.Tensor | None = None,
    paired: bool = False,
) -> torch.Tensor:
    """Unbiased MMD^2 under each Gaussian kernel separately: a (M,) tensor (float32).

    Without labels: the textbook unbiased estimate (within-set sums over i != j, all cross pairs).

    With identity labels (``labels_x``, ``labels_y``), the estimate is made unbiased with respect to
    identity composition. The textbook estimate mixes same-identity and different-identity pairs in
    different shares in its three sums (P=8, K=4 within a modality: 3/31 same-identity pairs; across
    modalities: 1/8), so with identity structure and no shift at all its expectation is
    2 (3/31 - 1/8) (k_same - k_diff) != 0. Here each sum is split by pair type t (same identity,
    different identity), each type gets its own unbiased MMD^2 (within-set means over the pairs of that
    type against the cross mean over the pairs of that type), and the two are weighted by their share of
    the cross block. With no shift between the sets every part has expectation 0, whatever the identity
    structure; a pair type missing from a block (one image per identity, say) is left out.

    ``paired=True`` says x_i and y_i are views of the same image (the global and upper-body features of
    one image): those pairs have no within-set counterpart and are left out of the cross sums.
    """
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
    if (labels_x is None) != (labels_y is None):
        raise ValueError("amk_mmd: give identity labels for both sets or for neither")
    if labels_x is not None and (labels_x.shape != (ns,) or labels_y.shape != (nt,)):
        raise ValueError(
            f"amk_mmd: labels must be ({ns},) and ({nt},), got {tuple(labels_x.shape)} and {tuple(labels_y.shape)}"
        )
    if paired and ns != nt:
        raise ValueError(f"amk_mmd: paired sets must have the same size, got {ns} and {nt}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        k = _kernel_stack(torch.cat([x, y]).float(), mults)
        n, dev = ns + nt, x.device
        a = (torch.arange(n, device=dev) < ns).to(k.dtype)  # membership of x; y is the rest
        usable = 1.0 - torch.eye(n, device=dev, dtype=k.dtype)
        if paired:  # x_i and y_i are one image seen twice: no within-set pair is like that
            i = torch.arange(ns, device=dev)
            usable[i, ns + i] = 0.0
            usable[ns + i, i] = 0.0
        if labels_x is not None:
            labels = torch.cat([labels_x.to(dev), labels_y.to(dev)])
        elif paired:  # every row its own identity: only the different-identity part exists
            labels = torch.arange(n, device=dev)
        else:
            labels = None
        return _masked_mmd(k, a, 1.0 - a, usable, labels)


def _kernel_stack(z: torch.Tensor, mults: list[float]) -> torch.Tensor:
    """The Gaussian kernels (M, n, n) between the rows of z (float32), each bandwidth a multiple of the mean
    pairwise squared distance over z (detached, floored)."""
    d = _sq_distances(z)
    n = z.shape[0]
    base = (d.sum() / (n * (n - 1))).detach().clamp(min=BASE_FLOOR)
    scaled = d / (-2.0 * base)
    return torch.stack([torch.exp(scaled / m) for m in mults])


def _block_mean(k: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The w-weighted mean of each kernel (M,) over the pairs w marks, and how many pairs that is."""
    c = w.sum()
    return torch.einsum("mij,ij->m", k, w) / c.clamp(min=1.0), c


def _masked_mmd(
    k: torch.Tensor, a: torch.Tensor, b: torch.Tensor, usable: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor:
    """MMD^2 per kernel (M,) between the rows marked by ``a`` and by ``b`` (disjoint 0/1 float masks over the n
    rows of the kernel stack k), over the pairs ``usable`` allows (the diagonal never). Without labels: the
    textbook unbiased estimate. With labels: the identity-composition-corrected estimate described in
    ``kernel_mmd_terms``. Masks, not index selections: fixed shapes, no host synchronisation, one compiled
    graph whatever the sets' sizes."""
    blocks = (a[:, None] * a[None, :], b[:, None] * b[None, :], a[:, None] * b[None, :])
    if labels is None:
        (mxx, _), (myy, _), (mxy, _) = (_block_mean(k, w * usable) for w in blocks)
        return mxx + myy - 2.0 * mxy
    same = (labels[:, None] == labels[None, :]).to(k.dtype)
    parts, shares = [], []
    for kind in (same, 1.0 - same):
        mask = kind * usable
        (mxx, cxx), (myy, cyy), (mxy, cxy) = (_block_mean(k, w * mask) for w in blocks)
        present = (cxx > 0) & (cyy > 0) & (cxy > 0)
        parts.append(mxx + myy - 2.0 * mxy)
        shares.append(cxy * present.to(k.dtype))  # this type's share of the cross block
    total = (shares[0] + shares[1]).clamp(min=1.0)
    return (shares[0] / total) * parts[0] + (shares[1] / total) * parts[1]


def camera_mmd_terms(
    feats: torch.Tensor,
    cams: torch.Tensor,
    cameras: Sequence[int],
    multipliers: Sequence[float],
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-vs-rest camera MMDs within one modality: for each camera of ``cameras``, ``kernel_mmd_terms`` between
    its rows of ``feats`` and the other rows (identity-corrected when ``labels`` are given). Returns the terms
    (C, M) and each camera's weight (C,): 0 where a side has fewer than 2 rows, 1/2 each when exactly two
    cameras are present (one split says it all), else 1. The union of the two sides is always the whole set,
    so one kernel stack over ``feats`` serves every camera (the bandwidths are those of the union)."""
    mults = [float(m) for m in multipliers]
    with torch.autocast(device_type=feats.device.type, enabled=False):
        k = _kernel_stack(feats.float(), mults)
        n = feats.shape[0]
        usable = 1.0 - torch.eye(n, device=feats.device, dtype=k.dtype)
        terms, counts = [], []
        for c in cameras:
            a = (cams == int(c)).to(k.dtype)
            terms.append(_masked_mmd(k, a, 1.0 - a, usable, labels))
            counts.append(a.sum())
        count = torch.stack(counts)
        valid = ((count >= 2) & (n - count >= 2)).to(k.dtype)
        two = ((count > 0).sum() == 2).to(k.dtype)
        return torch.stack(terms), valid * (1.0 - 0.5 * two)


def amk_mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    multipliers: Sequence[float],
    weights: torch.Tensor | None = None,
    labels_x: torch.Tensor | None = None,
    labels_y: torch.Tensor | None = None,
    paired: bool = False,
) -> torch.Tensor:
    """Unbiased multi-kernel MMD^2 between x and y; ``weights`` on the simplex (uniform if None); identity
    labels and ``paired`` as in ``kernel_mmd_terms``."""
    terms = kernel_mmd_terms(x, y, multipliers, labels_x, labels_y, paired)
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

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        labels_x: torch.Tensor | None = None,
        labels_y: torch.Tensor | None = None,
        paired: bool = False,
    ) -> torch.Tensor:
        return self.weigh(kernel_mmd_terms(x, y, self.multipliers, labels_x, labels_y, paired))

    def weigh(self, terms: torch.Tensor) -> torch.Tensor:
        """The loss from per-kernel MMD^2 terms (M,): their mean (fixed) or their alpha-weighted sum with the
        reversed gradient and the entropy bonus on alpha (adversarial)."""
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
    """Euclidean distances between the rows of ``f``, in fp32 even under autocast (a bf16 ``f @ f.T`` loses the
    small differences the hardest-pair weighting of the triplet loss ranks)."""
    with torch.autocast(device_type=f.device.type, enabled=False):
        f = f.float()
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


def resolve_imdal(cfg) -> str:
    """What IMDAL compares: ``loss.imdal``, with ``auto`` = camera on a benchmark with several cameras per
    modality (SYSU-MM01: four visible and two infrared; LLCM: nine and eight) and branch on RegDB (one camera
    per modality; halves without the upper body)."""
    from aminet.data import registry

    if cfg.loss.imdal != "auto":
        return cfg.loss.imdal
    if registry.get(cfg.data.dataset).cameras:
        return "camera"
    return "branch" if cfg.model.upper_body else "halves"


class AMINetCriterion(nn.Module):
    """total = w_id * ID + w_tri * triplet + w_intra * IMDAL + w_inter * IDAL.

    * ID: cross-entropy on the logits of every fused feature set (label smoothing optional).
    * triplet: weighted regularised (default) or batch-hard with margin, over all fused features of
      the batch together, so visible, infrared and cross-fused embeddings of an identity are positives.
    * ``loss.branch_supervision`` (Figure 1): ID and triplet also on the global and on the upper-body branch
      features (each branch with its own neck and classifier); each term is the mean over the three sets.
    * IDAL (inter-modality): AMK-MMD between the visible and the infrared embeddings of the batch.
    * IMDAL (intra-modality), ``loss.imdal``: within each modality, AMK-MMD between
      ``camera``: each camera's images and the other cameras' images of that modality (illumination,
      viewpoint and background differ per camera), averaged over cameras and modalities;
      ``branch``: the full-body and the upper-body branch features of the same images;
      ``halves``: the first and second half of every identity's K images. With the balanced estimator
      the two halves are exchangeable draws of one distribution, so this term's expected value and
      expected gradient are zero for any model: kept to reproduce older runs and for the ablation.
    * ``loss.mmd_estimator``: ``balanced`` (default) makes every MMD unbiased with respect to the identity
      composition of the compared sets (``kernel_mmd_terms`` with labels); ``plain`` is the textbook
      estimate, which with identity-structured batches is biased and rewards identity clustering.
    Each MMD term has its own learnable kernel weights.
    """

    def __init__(self, cfg, instances: int, cameras: tuple[Sequence[int], Sequence[int]] | None = None):
        super().__init__()
        # loss.imdal=camera: the visible and the infrared cameras of the training set (None: each batch's own)
        self.cameras = None if cameras is None else tuple(tuple(int(c) for c in cs) for cs in cameras)
        lo = cfg.loss
        self.w_id, self.w_tri = lo.id_weight, lo.triplet_weight
        self.w_intra, self.w_inter = lo.mmd_intra_weight, lo.mmd_inter_weight
        self.label_smoothing = lo.label_smoothing
        self.triplet, self.margin = lo.triplet, lo.triplet_margin
        self.instances = instances
        self.imdal, self.balanced = resolve_imdal(cfg), lo.mmd_estimator == "balanced"
        self.branch_supervision = lo.branch_supervision
        if self.w_intra > 0 and self.imdal == "halves" and instances < 2:
            raise ValueError("loss.imdal=halves needs data.instances >= 2 (it splits each identity's images)")
        self.mmd_intra = AMKMMD(lo.mmd_multipliers, lo.mmd_kernel_weights, lo.mmd_weight_entropy)
        self.mmd_inter = AMKMMD(lo.mmd_multipliers, lo.mmd_kernel_weights, lo.mmd_weight_entropy)

    def _halves(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of the first and the second half of every identity's K images (rows come in
        identity blocks of K). Index tensors made on the device, not boolean masks: selecting with a
        mask would make the host wait for the GPU to count the rows."""
        if n % self.instances:
            raise ValueError(
                f"IMDAL: {n} images per modality is not a whole number of identities x {self.instances} instances"
            )
        rows = torch.arange(n, device=device).view(-1, self.instances)
        half = self.instances // 2
        return rows[:, :half].reshape(-1), rows[:, half:].reshape(-1)

    def _mmd(
        self, mmd: AMKMMD, x: torch.Tensor, y: torch.Tensor, lx: torch.Tensor, ly: torch.Tensor, paired: bool = False
    ) -> torch.Tensor:
        if self.balanced:
            return mmd(x, y, lx, ly, paired)
        return mmd(x, y)

    def _camera_imdal(self, out, labels: torch.Tensor, cams) -> torch.Tensor:
        """One-vs-rest camera MMDs within each modality, averaged over the cameras of both modalities
        (``camera_mmd_terms``). ``cams``: each half's cameras, device tensors (the loader sends them with the
        labels) or host arrays; the camera lists are the training set's (given at construction) or, when
        not given, those of this batch. Fixed shapes and no host synchronisation: one compiled graph."""
        sums, weights = [], []
        for i, feats in enumerate((out.intra_visible, out.intra_infrared)):
            c = cams[i]
            if not isinstance(c, torch.Tensor):  # host cameras: a pinned, asynchronous copy on a GPU
                c = torch.from_numpy(np.asarray(c))
                c = c.pin_memory() if feats.is_cuda else c
            c = c.to(feats.device, non_blocking=True)
            known = self.cameras[i] if self.cameras is not None else np.unique(np.asarray(cams[i])).tolist()
            t, w = camera_mmd_terms(
                feats, c, known, self.mmd_intra.multipliers, labels.to(feats.device) if self.balanced else None
            )
            sums.append((w[:, None] * t).sum(dim=0))
            weights.append(w.sum())
        total = weights[0] + weights[1]
        mean = (sums[0] + sums[1]) / total.clamp(min=1e-12)
        return self.mmd_intra.weigh(mean) * (total > 0).to(mean.dtype)  # no camera split anywhere: nothing to align

    def _imdal(self, out, labels: torch.Tensor, cams) -> torch.Tensor:
        b = labels.shape[0]
        if self.imdal == "halves":
            a, h = self._halves(out.intra_visible.shape[0], out.intra_visible.device)
            return 0.5 * sum(
                self._mmd(self.mmd_intra, f[a], f[h], labels[a], labels[h])
                for f in (out.intra_visible, out.intra_infrared)
            )
        if self.imdal == "branch":
            if out.global_features is None:
                raise ValueError("loss.imdal=branch needs the upper-body branch (model.upper_body=true)")
            g, p = out.global_features, out.part_features
            return 0.5 * sum(
                self._mmd(self.mmd_intra, g[s], p[s], labels, labels, paired=True)
                for s in (slice(0, b), slice(b, 2 * b))
            )
        if cams is None:
            raise ValueError("loss.imdal=camera needs the camera of every image of the batch")
        return self._camera_imdal(out, labels, cams)

    def forward(self, out, labels: torch.Tensor, cams=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``out`` is the model's ``ModelOutput``; ``labels`` (B,) the identities of the batch half;
        ``cams`` (for ``loss.imdal=camera``) the cameras of the visible and of the infrared half, on the
        host (numpy arrays or CPU tensors)."""
        all_labels = labels[out.pair_index]
        terms: dict[str, torch.Tensor] = {}
        sets = [(out.features, out.logits, all_labels)]
        if self.branch_supervision and getattr(out, "branch_logits", None) is not None:
            both = torch.cat([labels, labels])  # branch rows: the visible half, then the infrared half
            sets += [(out.global_features, out.branch_logits[0], both), (out.part_features, out.branch_logits[1], both)]
        terms["id"] = sum(cross_entropy(lg, lb, self.label_smoothing) for _, lg, lb in sets) / len(sets)
        if self.triplet == "weighted":
            terms["triplet"] = sum(weighted_triplet(f, lb) for f, _, lb in sets) / len(sets)
        else:
            terms["triplet"] = sum(hard_triplet(f, lb, self.margin) for f, _, lb in sets) / len(sets)
        zero = out.features.new_zeros(())
        terms["imdal"] = self._imdal(out, labels, cams) if self.w_intra > 0 else zero
        terms["idal"] = zero
        if self.w_inter > 0:
            terms["idal"] = self._mmd(self.mmd_inter, out.intra_visible, out.intra_infrared, labels, labels)
        total = (
            self.w_id * terms["id"]
            + self.w_tri * terms["triplet"]
            + self.w_intra * terms["imdal"]
            + self.w_inter * terms["idal"]
        )
        return total, terms
