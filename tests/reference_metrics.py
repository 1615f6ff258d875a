"""A direct, per-query numpy formulation of the VI-ReID metrics, written from the definitions in
shared/reference/vireid-protocols.md. It sorts, filters and deduplicates explicitly with Python loops,
so it shares no code or trick with aminet.evaluation.metrics and serves as its oracle."""

from __future__ import annotations

import numpy as np


def reference_metrics(
    dist, q_pids, g_pids, q_cams=None, g_cams=None, *, sysu: bool, max_rank: int = 20, llcm: bool = False
):
    """``sysu``: SYSU-MM01's camera-3/camera-2 removal and deduplicated CMC; ``llcm``: LLCM's removal of the
    query identity's own-camera entries and deduplicated CMC; neither: RegDB."""
    dist = np.asarray(dist, dtype=np.float64)
    cmcs, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        ranked = [int(j) for j in order]
        if sysu and int(q_cams[i]) == 3:
            ranked = [j for j in ranked if int(g_cams[j]) != 2]
        if llcm:
            ranked = [j for j in ranked if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        good = [int(g_pids[j]) == int(q_pids[i]) for j in ranked]
        if not any(good):
            continue
        # AP / INP on the kept list.
        positions = [k + 1 for k, ok in enumerate(good) if ok]
        aps.append(np.mean([(n + 1) / p for n, p in enumerate(positions)]))
        inps.append(len(positions) / positions[-1])
        # CMC: identity-deduplicated (SYSU) or image-level (RegDB).
        if sysu or llcm:
            seen, labels = set(), []
            for j in ranked:
                pid = int(g_pids[j])
                if pid not in seen:
                    seen.add(pid)
                    labels.append(pid)
            first = labels.index(int(q_pids[i]))
        else:
            first = good.index(True)
        cmcs.append([1.0 if first <= k else 0.0 for k in range(max_rank)])
    if not cmcs:
        raise ValueError("no valid query")
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps))
