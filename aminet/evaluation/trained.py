"""Evaluation separate from training: a saved checkpoint on the test protocols of every benchmark given.

``load_trained(checkpoint_dir)`` rebuilds the model a checkpoint holds (its own ``config.yaml``,
weights loaded with ``weights_only=True``); ``evaluate_benchmarks`` runs the full test protocols of each
benchmark whose root is given (``aminet.data.registry``): SYSU-MM01 all + indoor search over the gallery
trials, RegDB visible->thermal and thermal->visible over its trials, LLCM both directions over its gallery
trials, with the model's own image size.

RegDB's ten trials are ten random halvings of the same 412 identities, so a model trained on the
training ids of trial t has seen most test ids of every other trial. A model trained on RegDB is
therefore evaluated on the test split of its own trial only (one model per trial is the protocol; the
fixed-config runner trains the ten). A model trained on SYSU-MM01 shares no identity with RegDB and is
evaluated on all its trials (a cross-dataset figure, labelled as such).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from aminet.config import Config
from aminet.data import registry
from aminet.data.cache import ImageCache
from aminet.engine.checkpoint import CheckpointError, load_checkpoint
from aminet.evaluation.protocol import benchmark_frames
from aminet.model.aminet import AMINet, build_model

__all__ = ["load_trained", "model_from_weights", "evaluate_benchmarks"]


def load_trained(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> tuple[AMINet, Config]:
    """The model and config of an engine checkpoint folder (``state.pt`` + ``config.yaml``)."""
    folder = Path(checkpoint_dir)
    cfg_file = folder / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"checkpoint {folder}: config.yaml is missing")
    cfg = Config.load(cfg_file)
    model = model_from_weights(cfg, load_checkpoint(folder, map_location="cpu")["model"])
    return model.to(device).eval(), cfg


def model_from_weights(cfg: Config, weights: dict[str, torch.Tensor]) -> AMINet:
    """The trained ``AMINet`` of ``cfg`` (no pretrained download) with ``weights`` loaded; the number of
    classes is read from the classifier's weights."""
    model = build_model(cfg.replace({"model.weights": "none"}), int(weights["classifier.weight"].shape[0]))
    model.load_state_dict(weights)
    return model


def evaluate_benchmarks(
    model: AMINet,
    cfg: Config,
    roots: Mapping[str, str | Path | None],
    *,
    settings: Mapping[str, Sequence[str]] | None = None,
    trials: Mapping[str, Sequence[int]] | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = True,
) -> pd.DataFrame:
    """Per-trial test metrics (one row per benchmark, setting, feature and trial) with a ``scope`` column:
    ``in-domain`` (the benchmark the model was trained on) or ``cross-dataset``. ``roots`` maps benchmark
    names to their folders (None or absent: skipped); ``settings`` and ``trials`` per benchmark default to the
    whole protocol (every setting, the protocol's ten trials), except that a model trained on a benchmark
    with one model per trial (RegDB) is tested on its own trial only."""
    trained_on = cfg.data.dataset
    frames = []
    kw = dict(batch_size=cfg.eval.batch_size, device=device, flip=cfg.eval.flip, max_rank=cfg.eval.max_rank)
    for name, root in sorted(roots.items(), key=lambda item: item[0] != trained_on):  # in-domain first
        if root is None:
            continue
        bench = registry.get(name)
        in_domain = name == trained_on
        chosen = list((trials or {}).get(name, bench.test_trials))
        if in_domain and bench.model_per_trial:
            chosen = bench.config_trials(cfg)
        wanted = list((settings or {}).get(name, bench.settings))
        cache = ImageCache.open(root, cfg.data.height, cfg.data.width, cfg.data.cache_dir, progress=not quiet)
        df = benchmark_frames(model, bench, root, wanted, chosen, cache.load, cfg.data, **kw)
        frames.append(df.assign(scope="in-domain" if in_domain else "cross-dataset"))
    if not frames:
        raise ValueError("evaluate_benchmarks: no benchmark root given")
    return pd.concat(frames, ignore_index=True)
