"""The full test protocols (SYSU-MM01, RegDB, LLCM: any benchmark of ``aminet.data.registry``) around any
feature extractor.

An *extractor* is a callable ``f(images, modality) -> features`` where ``images`` is a float tensor
(B, 3, H, W) normalised with the ImageNet statistics, ``modality`` is ``"visible"`` or ``"infrared"``,
and ``features`` is either one (B, D) tensor or a mapping of named (B, D) tensors (the AMINet model
returns ``{"pool": ..., "bn": ...}``). A ``torch.nn.Module`` with an ``extract(images, modality)``
method is accepted as well; it is put in eval mode and run without gradients.

Features are L2-normalised (after averaging with the horizontally flipped image when ``flip`` is on)
and the distance is the negative inner product, as in the public code. Query features are extracted
once; SYSU gallery features once for the union of the trials' galleries.

Results are fractions in [0, 1] (``format_summary`` prints percentages), one row per
(benchmark, setting, feature, trial) in ``per_trial`` and mean / std over trials in ``summary``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from aminet.data import regdb as regdb_data
from aminet.data import registry, splits
from aminet.data.augment import normalize, to_device
from aminet.data.images import load_images
from aminet.data.splits import EvalSet
from aminet.evaluation.metrics import rank_metrics

if TYPE_CHECKING:
    from aminet.config import Config

__all__ = [
    "ProtocolResult",
    "extract_features",
    "evaluate_set",
    "sysu_protocol",
    "regdb_protocol",
    "run_protocol",
    "benchmark_frames",
    "format_summary",
    "METRIC_COLUMNS",
    "metrics_from_frame",
]

Extractor = Callable[[torch.Tensor, str], Any]
Loader = Callable[[Sequence[str]], np.ndarray]
METRIC_COLUMNS = ["R1", "R5", "R10", "R20", "mAP", "mINP"]
_KEYS = ["benchmark", "setting", "feature"]


@dataclass
class ProtocolResult:
    per_trial: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> pd.DataFrame:
        return summarise(self.per_trial)

    def headline(self, setting: str, feature: str = "bn") -> dict[str, float]:
        """Mean metrics over trials for one setting (``all``, ``indoor``, ``v2t``, ``t2v``)."""
        rows = self.per_trial[(self.per_trial.setting == setting) & (self.per_trial.feature == feature)]
        if rows.empty:
            raise KeyError(f"no result for setting={setting!r}, feature={feature!r}")
        return {k: float(rows[k].mean()) for k in METRIC_COLUMNS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "per_trial": self.per_trial.to_dict(orient="records"),
            "summary": self.summary.to_dict(orient="records"),
        }


def summarise(per_trial: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1; 0 for a single trial) over trials."""
    grouped = per_trial.groupby(_KEYS, sort=False)[METRIC_COLUMNS]
    mean = grouped.mean().add_suffix("_mean")
    std = grouped.std(ddof=1).fillna(0.0).add_suffix("_std")
    count = grouped.size().rename("trials")
    return pd.concat([mean, std, count], axis=1).reset_index()


def format_summary(result: ProtocolResult | pd.DataFrame) -> str:
    """Plain-text table in percent, mean +- std over trials."""
    summary = result.summary if isinstance(result, ProtocolResult) else summarise(result)
    header = ["benchmark", "setting", "feature", "trials"] + METRIC_COLUMNS
    rows = []
    for _, r in summary.iterrows():
        cells = [str(r.benchmark), str(r.setting), str(r.feature), str(int(r.trials))]
        cells += [f"{100 * r[f'{m}_mean']:.2f}+-{100 * r[f'{m}_std']:.2f}" for m in METRIC_COLUMNS]
        rows.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------------


def _as_callable(extractor: Any) -> tuple[Extractor, torch.nn.Module | None]:
    if isinstance(extractor, torch.nn.Module) and hasattr(extractor, "extract"):
        return extractor.extract, extractor
    if callable(extractor):
        return extractor, extractor if isinstance(extractor, torch.nn.Module) else None
    raise TypeError(
        f"extractor: expected a callable f(images, modality) or a model with .extract, got {type(extractor).__name__}"
    )


def _named(out: Any) -> dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return {"feat": out}
    if isinstance(out, Mapping):
        return dict(out)
    raise TypeError(f"extractor returned {type(out).__name__}; expected a tensor or a mapping of tensors")


@torch.no_grad()
def extract_features(
    extractor: Any,
    images: np.ndarray,
    modality: str,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    flip: bool = False,
) -> dict[str, torch.Tensor]:
    """L2-normalised features of uint8 images (N, H, W, 3), each name a (N, D) float32 tensor."""
    if modality not in ("visible", "infrared"):
        raise ValueError(f"modality {modality!r}: choose visible or infrared")
    fn, module = _as_callable(extractor)
    if device is None:
        device = (
            next(module.parameters()).device
            if module is not None and any(True for _ in module.parameters())
            else torch.device("cpu")
        )
    device = torch.device(device)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for start in range(0, len(images), batch_size):
            # on a GPU the copy is page-locked and asynchronous: reading the next batch overlaps this forward
            x = normalize(to_device(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])), device))
            feats = {k: F.normalize(v.float(), dim=1) for k, v in _named(fn(x, modality)).items()}
            if flip:
                flipped = _named(fn(torch.flip(x, dims=[3]), modality))
                feats = {k: F.normalize(v + F.normalize(flipped[k].float(), dim=1), dim=1) for k, v in feats.items()}
            for k, v in feats.items():
                if v.dim() != 2 or v.shape[0] != x.shape[0]:
                    raise ValueError(f"extractor feature {k!r}: expected shape ({x.shape[0]}, D), got {tuple(v.shape)}")
                chunks.setdefault(k, []).append(v)
    finally:
        if module is not None and was_training:
            module.train()
    if not chunks:
        raise ValueError(f"no {modality} images to extract features from")
    return {k: torch.cat(v) for k, v in chunks.items()}


def _distance(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity of L2-normalised features, in fp32 whatever autocast context the evaluation
    runs in (bf16 products round similarities to ~3 digits and reorder close gallery images)."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        return -(q.float() @ g.float().T)


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------


def _row(
    benchmark: str, setting: str, feature: str, trial: int, cmc: np.ndarray, mAP: float, mINP: float
) -> dict[str, Any]:
    def at(k: int) -> float:
        return float(cmc[k - 1]) if k <= len(cmc) else float("nan")

    return {
        "benchmark": benchmark,
        "setting": setting,
        "feature": feature,
        "trial": trial,
        "R1": at(1),
        "R5": at(5),
        "R10": at(10),
        "R20": at(20),
        "mAP": mAP,
        "mINP": mINP,
        "cmc": [float(v) for v in cmc],
    }


def evaluate_set(
    extractor: Any,
    evalset: EvalSet,
    load: Loader,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    flip: bool = False,
    max_rank: int = 20,
) -> pd.DataFrame:
    """Metrics of every probe of ``evalset``; each distinct (image, modality) is embedded once."""
    wanted: dict[str, dict[str, int]] = {"visible": {}, "infrared": {}}
    for probe in evalset.probes:
        for images, modality in ((probe.query, probe.query_modality), (probe.gallery, probe.gallery_modality)):
            table = wanted[modality]
            for path in images.paths:
                table.setdefault(path, len(table))
    feats = {}
    for modality, table in wanted.items():
        if table:
            feats[modality] = extract_features(
                extractor, load(list(table)), modality, batch_size=batch_size, device=device, flip=flip
            )
    rules = registry.get(evalset.benchmark).rank_rules  # the benchmark's ranking rules (camera removal, dedup)
    rows = []
    for probe in evalset.probes:
        q_feats, g_feats = feats[probe.query_modality], feats[probe.gallery_modality]
        dev = next(iter(q_feats.values())).device
        qi = torch.as_tensor([wanted[probe.query_modality][p] for p in probe.query.paths], device=dev)
        gi = torch.as_tensor([wanted[probe.gallery_modality][p] for p in probe.gallery.paths], device=dev)
        for name in q_feats:
            dist = _distance(q_feats[name][qi], g_feats[name][gi])
            cams = (probe.query.cams, probe.gallery.cams) if rules else (None, None)
            cmc, mAP, mINP = rank_metrics(dist, probe.query.pids, probe.gallery.pids, *cams, max_rank=max_rank, **rules)
            rows.append(_row(evalset.benchmark, probe.setting, name, probe.trial, cmc, mAP, mINP))
    return pd.DataFrame(rows)


def sysu_protocol(
    extractor: Any,
    root: str | Path,
    modes: Iterable[str] = ("all", "indoor"),
    trials: int | Iterable[int] = 10,
    *,
    height: int = 288,
    width: int = 144,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    flip: bool = False,
    shots: int = 1,
    max_rank: int = 20,
    loader: Loader | None = None,
) -> ProtocolResult:
    """SYSU-MM01 single-shot (or 10-shot) test protocol: infrared queries against visible galleries,
    trials ``0..trials-1`` (or the given trial numbers), for each mode."""
    evalset = splits.sysu_eval(root, "final", modes, trials, shots=shots)
    load = loader or (lambda paths: load_images(paths, height, width))
    df = evaluate_set(extractor, evalset, load, batch_size=batch_size, device=device, flip=flip, max_rank=max_rank)
    probes = evalset.probes
    meta = {
        "benchmark": "sysu",
        "root": str(root),
        "modes": sorted({p.setting for p in probes}),
        "trials": sorted({p.trial for p in probes}),
        "shots": shots,
        "flip": flip,
        "num_query": len(probes[0].query),
        "num_gallery": {f"{p.setting}/{p.trial}": len(p.gallery) for p in probes},
    }
    return ProtocolResult(df, meta)


def regdb_protocol(
    extractor: Any | Mapping[int, Any],
    root: str | Path,
    trials: Iterable[int] = (1,),
    directions: Iterable[str] = ("v2t", "t2v"),
    *,
    height: int = 288,
    width: int = 144,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    flip: bool = False,
    max_rank: int = 20,
    loader: Loader | None = None,
) -> ProtocolResult:
    """RegDB test protocol for each trial (its own test files) and direction.

    ``extractor`` is either one extractor or a mapping ``{trial: extractor}``: the protocol trains one
    model per trial, so a mapping is the normal case for a trained model."""
    trial_ids = list(trials)
    directions = list(directions)
    if not trial_ids:
        raise ValueError("trials: at least one trial is needed")
    for d in directions:
        if d not in regdb_data.DIRECTIONS:
            raise ValueError(f"RegDB direction {d!r}: choose one of {', '.join(regdb_data.DIRECTIONS)}")
    if isinstance(extractor, Mapping):
        missing = [t for t in trial_ids if t not in extractor]
        if missing:
            raise ValueError(f"no extractor given for RegDB trial(s) {missing}")
    load = loader or (lambda paths: load_images(paths, height, width))
    frames, sizes = [], {}
    for trial in trial_ids:
        evalset = splits.regdb_eval(root, trial, "final", directions)
        ext = extractor[trial] if isinstance(extractor, Mapping) else extractor
        frames.append(
            evaluate_set(ext, evalset, load, batch_size=batch_size, device=device, flip=flip, max_rank=max_rank)
        )
        sizes[trial] = {p.setting: (len(p.query), len(p.gallery)) for p in evalset.probes}
    meta = {
        "benchmark": "regdb",
        "root": str(root),
        "trials": trial_ids,
        "directions": directions,
        "flip": flip,
        "sizes": sizes,
    }
    return ProtocolResult(pd.concat(frames, ignore_index=True), meta)


def run_protocol(
    extractor: Any,
    root: str | Path,
    benchmark: str,
    settings: Iterable[str] | None = None,
    trials: Any = None,
    **kwargs: Any,
) -> ProtocolResult:
    """The test protocol of any registered benchmark: ``settings`` (default: all of the benchmark's), ``trials``
    (a count or the trial numbers; default the protocol's ten). ``benchmark="sysu"`` and ``"regdb"`` are
    ``sysu_protocol`` and ``regdb_protocol``; another benchmark embeds each image once over all its trials, or
    (one model per trial) takes a ``{trial: extractor}`` mapping as RegDB does."""
    bench = registry.get(benchmark)
    if benchmark == "sysu":
        return sysu_protocol(extractor, root, settings or bench.settings, 10 if trials is None else trials, **kwargs)
    if benchmark == "regdb":
        return regdb_protocol(
            extractor, root, bench.test_trials if trials is None else trials, settings or bench.settings, **kwargs
        )
    from aminet.config import DataConfig

    settings = list(settings or bench.settings)
    trial_ids = list(bench.test_trials if trials is None else range(trials) if isinstance(trials, int) else trials)
    height, width = kwargs.pop("height", 288), kwargs.pop("width", 144)
    load = kwargs.pop("loader", None) or (lambda paths: load_images(paths, height, width))
    df = benchmark_frames(extractor, bench, root, settings, trial_ids, load, DataConfig(), **kwargs)
    meta = {"benchmark": benchmark, "root": str(root), "settings": settings, "trials": trial_ids}
    return ProtocolResult(df, meta)


def benchmark_frames(
    extractor: Any | Mapping[int, Any],
    bench: registry.Benchmark,
    root: str | Path,
    settings: Sequence[str],
    trials: Sequence[int],
    load: Loader,
    data: Any,
    **kwargs: Any,
) -> pd.DataFrame:
    """Per-trial test metrics of one benchmark: one evaluation set over all ``trials`` (each image embedded
    once), or, where the protocol trains one model per trial (RegDB), one set per trial, evaluated by
    ``extractor[trial]`` when ``extractor`` is a mapping. ``data``: the ``DataConfig`` the entry's sets read."""
    groups = [[t] for t in trials] if bench.model_per_trial else [list(trials)]
    frames = []
    for group in groups:
        evalset = bench.eval_set(Path(root), "final", settings, group, data)
        ext = extractor[group[0]] if isinstance(extractor, Mapping) else extractor
        frames.append(evaluate_set(ext, evalset, load, **kwargs))
    return pd.concat(frames, ignore_index=True)


def metrics_from_frame(df: pd.DataFrame, cfg: Config) -> dict[str, float]:
    """Means over trials of the headline feature: the primary setting unprefixed (R1, mAP, mINP,
    score = (R1 + mAP) / 2), every setting as ``<setting>/<metric>``."""
    rows = df[df.feature == cfg.eval.feature]
    primary = registry.get(cfg.data.dataset).settings_of(cfg)[0]
    out: dict[str, float] = {}
    for setting, group in rows.groupby("setting", sort=False):
        for m in ("R1", "R5", "R10", "R20", "mAP", "mINP"):
            out[f"{setting}/{m}"] = float(group[m].mean())
    for m in ("R1", "mAP", "mINP"):
        out[m] = out[f"{primary}/{m}"]
    out["score"] = (out["R1"] + out["mAP"]) / 2.0
    return out
