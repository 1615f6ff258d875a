"""Named ablation presets, as dotted config overrides (``Config.replace(PRESETS[name])``).

M0-M4 are the rows of the paper's Table 1: Base (full body only), +UBF (the upper-body branch with its
fusion), +IMDAL, +IDAL, and all. The MMD weights of M2-M4 are the paper's SYSU-MM01 setting (0.4 / 0.6).
PESAM is orthogonal to the table: ``pesam_on`` / ``pesam_off`` set it on top of any row.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["PRESETS", "preset_overrides"]

_NO_MMD = {"loss.mmd_intra_weight": 0.0, "loss.mmd_inter_weight": 0.0}
_UBF = {"model.upper_body": True, "model.iffs": True}

PRESETS: dict[str, dict[str, Any]] = {
    "M0": {"model.upper_body": False, "model.iffs": False, **_NO_MMD},
    "M1": {**_UBF, **_NO_MMD},
    "M2": {**_UBF, "loss.mmd_intra_weight": 0.4, "loss.mmd_inter_weight": 0.0},
    "M3": {**_UBF, "loss.mmd_intra_weight": 0.0, "loss.mmd_inter_weight": 0.6},
    "M4": {**_UBF, "loss.mmd_intra_weight": 0.4, "loss.mmd_inter_weight": 0.6},
    "pesam_on": {"model.pesam": True},
    "pesam_off": {"model.pesam": False},
}


def preset_overrides(names: Iterable[str]) -> dict[str, Any]:
    """The merged overrides of several presets, applied left to right."""
    out: dict[str, Any] = {}
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        out.update(PRESETS[name])
    return out
