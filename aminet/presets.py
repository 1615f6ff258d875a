"""Named ablation presets, as dotted config overrides (``Config.replace(preset_overrides([...]))``).

M0-M4 are the rows of the paper's Table 1:

* M0, Base: the full-body branch only, "without any additional modules": no upper-body branch, no IFFS,
  no PESAM, no MMD term (ID + triplet on the GeM / BN-neck feature of the non-local ResNet).
* M1, + UBF: the upper-body branch with its fusion (IFFS) and PESAM, the parts of AMINet that Table 1
  does not list separately; no MMD term.
* M2, + IMDAL; M3, + IDAL; M4, both.

The MMD weights are *not* set by M2-M4: a row switches a term off (weight 0) or leaves the weight of the
config it is applied to, so ``regdb.yaml --preset M4`` trains with RegDB's 0.2 / 0.8 and ``sysu.yaml
--preset M4`` with SYSU's 0.4 / 0.6. ``pesam_on`` / ``pesam_off`` set PESAM on top of any row (e.g.
``M1 pesam_off`` separates PESAM from UBF).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["PRESETS", "preset_overrides"]

_NO_MMD = {"loss.mmd_intra_weight": 0.0, "loss.mmd_inter_weight": 0.0}
_UBF = {"model.upper_body": True, "model.iffs": True, "model.pesam": True}

PRESETS: dict[str, dict[str, Any]] = {
    "M0": {"model.upper_body": False, "model.iffs": False, "model.pesam": False, **_NO_MMD},
    "M1": {**_UBF, **_NO_MMD},
    "M2": {**_UBF, "loss.mmd_inter_weight": 0.0},
    "M3": {**_UBF, "loss.mmd_intra_weight": 0.0},
    "M4": {**_UBF},
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
