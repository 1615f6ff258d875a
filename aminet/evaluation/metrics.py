"""Rank-k (CMC), mAP and mINP for VI-ReID, vectorised over queries.

The rules are those of the evaluation code most VI-ReID papers report with (AGW / DDAG / CAJ):

SYSU-MM01 (``sysu_metrics``)
    * per query, the gallery is ranked by ascending distance (stable sort: ties keep gallery order);
    * a query from camera 3 drops every gallery entry from camera 2, whatever its identity (the two
      cameras share a room); nothing is dropped for other query cameras;
    * CMC is computed on the kept list after keeping only the first occurrence of each identity;
    * AP and INP are computed on the kept, non-deduplicated list;
    * queries with no positive in the kept list are skipped.

RegDB (``regdb_metrics``)
    * no removal; CMC is image-level (rank of the first positive); AP and INP as above.

LLCM (``llcm_metrics``; the benchmark's public code, ZYK100/LLCM ``eval_llcm``)
    * a query drops the gallery entries of its own identity from its own camera number (LLCM's visible
      and near-infrared images come from the same nine cameras, ``test_vis/camN`` and ``test_nir/camN``);
    * CMC identity-deduplicated, AP and INP on the kept list, as for SYSU-MM01.

Definitions, for one query with positives at 1-based kept positions p_1 < ... < p_n:
    AP  = mean_i (i / p_i)
    INP = n / p_n
    CMC[k] = 1 if the first positive (identity-level for SYSU) is within the top k + 1.

Everything runs in torch on the device the distance matrix lives on; numpy inputs are converted.
If the (deduplicated) ranked list is shorter than ``max_rank``, CMC is padded with its last value:
a cumulative match curve stays constant past the end of the list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["sysu_metrics", "regdb_metrics", "llcm_metrics", "rank_metrics"]

# Queries are processed in chunks so that (Q, G) int64 work tensors stay small on huge galleries.
_CHUNK_ELEMENTS = 1 << 24


def sysu_metrics(
    distmat: Any, q_pids: Any, g_pids: Any, q_cams: Any, g_cams: Any, max_rank: int = 20
) -> tuple[np.ndarray, float, float]:
    """CMC (length ``max_rank``), mAP and mINP under the SYSU-MM01 rules. Fractions in [0, 1]."""
    return rank_metrics(
        distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank, remove_cam2_for_cam3=True, dedup_cmc=True
    )


def regdb_metrics(distmat: Any, q_pids: Any, g_pids: Any, max_rank: int = 20) -> tuple[np.ndarray, float, float]:
    """CMC (length ``max_rank``), mAP and mINP under the RegDB rules. Fractions in [0, 1]."""
    return rank_metrics(
        distmat, q_pids, g_pids, None, None, max_rank=max_rank, remove_cam2_for_cam3=False, dedup_cmc=False
    )


def llcm_metrics(
    distmat: Any, q_pids: Any, g_pids: Any, q_cams: Any, g_cams: Any, max_rank: int = 20
) -> tuple[np.ndarray, float, float]:
    """CMC (length ``max_rank``), mAP and mINP under the LLCM rules. Fractions in [0, 1]."""
    return rank_metrics(
        distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank, remove_same_camera=True, dedup_cmc=True
    )


def rank_metrics(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_cams: Any = None,
    g_cams: Any = None,
    *,
    max_rank: int = 20,
    remove_cam2_for_cam3: bool = False,
    remove_same_camera: bool = False,
    dedup_cmc: bool = False,
) -> tuple[np.ndarray, float, float]:
    dist = _as_tensor(distmat, "distmat", None)
    if dist.dim() != 2:
        raise ValueError(f"distmat: expected a 2-D (queries x gallery) matrix, got shape {tuple(dist.shape)}")
    num_q, num_g = dist.shape
    if num_q == 0:
        raise ValueError("distmat: the query set is empty (0 rows)")
    if num_g == 0:
        raise ValueError("distmat: the gallery is empty (0 columns)")
    if not isinstance(max_rank, int) or isinstance(max_rank, bool) or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    if not dist.is_floating_point():
        dist = dist.double()
    if torch.isnan(dist).any():
        raise ValueError("distmat: contains NaN distances")
    device = dist.device
    qp = _as_vector(q_pids, "q_pids", num_q, device)
    gp = _as_vector(g_pids, "g_pids", num_g, device)
    if remove_cam2_for_cam3 and remove_same_camera:
        raise ValueError("one camera rule at a time: remove_cam2_for_cam3 (SYSU) or remove_same_camera (LLCM)")
    if remove_cam2_for_cam3 or remove_same_camera:
        qc = _as_vector(q_cams, "q_cams", num_q, device)
        gc = _as_vector(g_cams, "g_cams", num_g, device)
    else:
        qc = gc = None

    # Gallery identities as 0..U-1 (one-hot, for counting distinct identities per query).
    g_uniq, g_code = torch.unique(gp, return_inverse=True)
    onehot = F.one_hot(g_code, int(g_uniq.numel())).to(dist.dtype) if dedup_cmc else None
    g_index = torch.arange(num_g, device=device)

    rank_hits = torch.zeros(max_rank, dtype=torch.float64, device=device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=device)
    inp_sum = torch.zeros((), dtype=torch.float64, device=device)
    num_valid = torch.zeros((), dtype=torch.int64, device=device)
    ks = torch.arange(max_rank, device=device)

    # No sort is needed: the kept position of a gallery entry is one plus the number of kept entries
    # ranked before it (smaller distance, or equal distance and smaller gallery index, which is what a
    # stable sort gives). Only the positives' positions are needed, a few per query.
    rows = max(1, _CHUNK_ELEMENTS // num_g)
    for start in range(0, num_q, rows):
        stop = min(num_q, start + rows)
        d = dist[start:stop]
        n = stop - start
        matches = gp[None, :] == qp[start:stop, None]
        keep = _keep(matches, None if qc is None else qc[start:stop], gc, remove_cam2_for_cam3, remove_same_camera)
        hits = matches & keep if keep is not None else matches
        qi, gj = hits.nonzero(as_tuple=True)  # positive (query, gallery) pairs, query-major
        n_pos = torch.bincount(qi, minlength=n)
        valid = n_pos > 0
        if not bool(valid.any()):
            continue

        ranks = torch.empty_like(qi)
        for p0 in range(0, qi.numel(), rows):
            p1 = min(qi.numel(), p0 + rows)
            ranks[p0:p1] = _kept_before(d, keep, qi[p0:p1], gj[p0:p1], g_index) + 1

        # Order each query's positives by rank; the i-th (1-based) positive contributes i / rank.
        key = qi * (num_g + 1) + ranks
        perm = torch.argsort(key)
        qs, rs = qi[perm], ranks[perm]
        group_start = torch.cumsum(n_pos, 0) - n_pos
        nth = torch.arange(qs.numel(), device=device) - group_start[qs] + 1
        ap = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, qs, nth.double() / rs.double())
        ap = ap / n_pos.clamp(min=1).double()
        last = torch.zeros(n, dtype=torch.int64, device=device).scatter_reduce_(0, qs, rs, reduce="amax")
        inp = n_pos.double() / last.clamp(min=1).double()

        # First positive of each query (rank and gallery index); CMC from its 0-based rank.
        big = torch.iinfo(torch.int64).max
        first = torch.full((n,), big, dtype=torch.int64, device=device).scatter_reduce_(0, qi, ranks, "amin")
        if dedup_cmc:
            is_first = ranks == first[qi]
            best_j = torch.zeros(n, dtype=torch.int64, device=device)
            best_j[qi[is_first]] = gj[is_first]
            rows_v = torch.nonzero(valid).squeeze(1)
            before = _before_mask(d[rows_v], rows_v, best_j[rows_v], g_index, None if keep is None else keep[rows_v])
            # Identities (other than the query's own, which cannot precede its first hit) seen first.
            first_rank = torch.zeros(n, dtype=torch.int64, device=device)
            first_rank[rows_v] = ((before.to(onehot.dtype) @ onehot) > 0).sum(dim=1)
        else:
            first_rank = first - 1
        cmc_rows = (first_rank[:, None] <= ks[None, :]) & valid[:, None]

        rank_hits += cmc_rows.double().sum(dim=0)
        ap_sum += (ap * valid).sum()
        inp_sum += (inp * valid).sum()
        num_valid += valid.sum()

    total = int(num_valid.item())
    if total == 0:
        raise ValueError("no query has a matching identity in the gallery (after camera removal)")
    cmc = (rank_hits / total).cpu().numpy()
    return cmc, float(ap_sum.item() / total), float(inp_sum.item() / total)


def _keep(
    matches: torch.Tensor, qc: torch.Tensor | None, gc: torch.Tensor | None, sysu_rule: bool, same_camera: bool
) -> torch.Tensor | None:
    """The gallery entries each query keeps (None: all). SYSU-MM01: a camera-3 query drops camera 2; LLCM: a
    query drops its own identity seen by its own camera number."""
    if sysu_rule:
        return ~((qc[:, None] == 3) & (gc[None, :] == 2))
    if same_camera:
        return ~(matches & (qc[:, None] == gc[None, :]))
    return None


def _before_mask(
    d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, g_index: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
    """(len(rows), G) mask of kept gallery entries ranked strictly before entry ``cols`` of each row
    of ``d`` (``d`` rows already selected)."""
    pivot = d[torch.arange(d.shape[0], device=d.device), cols][:, None]
    before = (d < pivot) | ((d == pivot) & (g_index[None, :] < cols[:, None]))
    if keep is not None:
        before &= keep
    return before


def _kept_before(
    d: torch.Tensor, keep: torch.Tensor | None, qi: torch.Tensor, gj: torch.Tensor, g_index: torch.Tensor
) -> torch.Tensor:
    """For each (query row, gallery column) pair, the number of kept entries ranked before it."""
    return _before_mask(d[qi], qi, gj, g_index, None if keep is None else keep[qi]).sum(dim=1)


def _as_tensor(value: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if value is None:
        raise ValueError(f"{name}: missing")
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot be read as an array ({exc})") from None
    if device is not None:
        t = t.to(device)
    return t


def _as_vector(value: Any, name: str, length: int, device: torch.device) -> torch.Tensor:
    t = _as_tensor(value, name, device)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(t.shape)}")
    if t.numel() != length:
        raise ValueError(f"{name}: length {t.numel()} does not match the distance matrix ({length})")
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        if t.is_floating_point() and torch.all(t == torch.round(t)):
            return t.long()
        raise ValueError(f"{name}: expected integer ids, got dtype {t.dtype}")
    return t.long()
