"""How hard each loss term pulls on a trained AMINet, and how far apart its two modalities sit.

    python scripts/term_pull.py runs/smoke_M4/smoke-M4-seed0/checkpoints/epoch-0030 \
        runs/smoke_M1/smoke-M1-seed0/checkpoints/epoch-0030 [--batches 8]

A diagnostic for the ablation (docs/results.md), not a test: it explains *why* a row does or does not gain
from the MMD terms. For each checkpoint folder (``state.pt`` + ``config.yaml``, as the trainer writes them):

* **Gradient pull**: over ``--batches`` training batches of the checkpoint's own sampler (its last epoch), the
  norm of the gradient of each *weighted* loss term (w_id * ID, w_tri * triplet, w_intra * IMDAL,
  w_inter * IDAL) with respect to the backbone parameters, its share of the sum of the four norms, and the
  cosine between the IDAL gradient and the ID + triplet gradient. The MMD terms are computed with the
  weights of ``--intra`` / ``--inter`` (default: SYSU's 0.4 / 0.6) even for a row trained without them
  (M0, M1), so both rows are measured with the same yardstick.
* **Modality gap** on the test identities (the first probe's query and gallery images, no augmentation,
  BN-neck features, L2-normalised): mean cosine similarity of same-identity pairs across modalities and
  within a modality, of different-identity pairs across modalities, and the distance between the two
  modalities' mean features.

CPU is fine (a few seconds per batch at the smoke size). Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aminet.config import Config
from aminet.engine.checkpoint import load_checkpoint
from aminet.engine.trainer import setup
from aminet.evaluation.protocol import extract_features

TERMS = ("id", "triplet", "imdal", "idal")


def modality_gap(r) -> dict[str, float]:
    """Similarity statistics of the test features (first probe: query and gallery are the two modalities)."""
    probe = r.evalset.probes[0]
    feats, pids = {}, {}
    for images, modality in ((probe.query, probe.query_modality), (probe.gallery, probe.gallery_modality)):
        feats[modality] = extract_features(r.model, r.cache.load(images.paths), modality, device=r.device)["bn"]
        pids[modality] = torch.as_tensor(np.asarray(images.pids))
    v, i = feats["visible"], feats["infrared"]
    same_x = pids["visible"][:, None] == pids["infrared"][None, :]
    sim_x = v @ i.T

    def within(f: torch.Tensor, p: torch.Tensor) -> float:
        same = (p[:, None] == p[None, :]) & ~torch.eye(len(p), dtype=torch.bool)
        return float((f @ f.T)[same].mean())

    return {
        "cross_same": float(sim_x[same_x].mean()),
        "cross_diff": float(sim_x[~same_x].mean()),
        "within_same": 0.5 * (within(v, pids["visible"]) + within(i, pids["infrared"])),
        "centroid_gap": float((v.mean(0) - i.mean(0)).norm()),
    }


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def gradient_pull(r, batches: int) -> dict[str, float]:
    """Mean over ``batches`` steps of each weighted term's backbone-gradient norm (the weights are the
    criterion's, i.e. the measuring config's), and IDAL's cosine with ID + triplet. The model is in training
    mode (as in a step); nothing is updated."""
    crit = r.criterion
    weights = {"id": crit.w_id, "triplet": crit.w_tri, "imdal": crit.w_intra, "idal": crit.w_inter}
    params = [p for p in r.model.param_groups()["backbone"] if p.requires_grad]
    norms: dict[str, list[float]] = {t: [] for t in TERMS}
    values: dict[str, list[float]] = {t: [] for t in TERMS}
    cosines = []
    epoch = r.cfg.train.epochs - 1
    r.model.train()
    for n, batch in enumerate(r.loader.run(epoch, 0, epoch + 1)):
        if n == batches:
            break
        vis, vis_up = r.augment(batch.visible, True, r.gen)
        ir, ir_up = r.augment(batch.infrared, False, r.gen)
        out = r.model(vis, ir, vis_up, ir_up)
        _, terms = crit(out, batch.labels, batch.cams)
        grads = {}
        for t in TERMS:
            values[t].append(float(terms[t].detach()))
            if weights[t] == 0 or not terms[t].requires_grad:
                grads[t] = torch.zeros(sum(p.numel() for p in params))
            else:
                g = torch.autograd.grad(weights[t] * terms[t], params, retain_graph=True, allow_unused=True)
                grads[t] = _flat(g, params)
            norms[t].append(float(grads[t].norm()))
        reid = grads["id"] + grads["triplet"]
        cosines.append(float(F.cosine_similarity(grads["idal"], reid, dim=0)))
    total = sum(np.mean(norms[t]) for t in TERMS)
    out = {f"{t}_value": float(np.mean(values[t])) for t in TERMS}
    out |= {f"{t}_grad": float(np.mean(norms[t])) for t in TERMS}
    out |= {f"{t}_share": float(np.mean(norms[t]) / total) for t in TERMS}
    out["idal_cos_reid"] = float(np.mean(cosines))
    return out


def measure(folder: Path, batches: int, intra: float, inter: float) -> dict[str, float]:
    trained = Config.load(folder / "config.yaml")
    r = setup(trained.replace({"loss.mmd_intra_weight": intra, "loss.mmd_inter_weight": inter}), quiet=True)
    state = load_checkpoint(folder, map_location=r.device)
    r.model.load_state_dict(state["model"])
    if trained.loss.mmd_intra_weight > 0 or trained.loss.mmd_inter_weight > 0:
        r.criterion.load_state_dict(state["criterion"])  # the learnt kernel weights of the trained terms
    gap = modality_gap(r)  # before any training-mode forward touches the BN statistics
    return {**gap, **gradient_pull(r, batches)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/term_pull.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="epoch-NNNN checkpoint folders")
    ap.add_argument("--batches", type=int, default=8, help="training batches to average over (default 8)")
    ap.add_argument("--intra", type=float, default=0.4, help="IMDAL weight to measure with (default 0.4)")
    ap.add_argument("--inter", type=float, default=0.6, help="IDAL weight to measure with (default 0.6)")
    args = ap.parse_args(argv)
    for folder in args.checkpoints:
        if not (folder / "state.pt").is_file() or not (folder / "config.yaml").is_file():
            print(f"term_pull: {folder}: not a checkpoint folder (state.pt and config.yaml)", file=sys.stderr)
            return 2
    rows = {}
    for folder in args.checkpoints:
        rows[folder] = measure(folder, args.batches, args.intra, args.inter)
        print(f"{folder}:", file=sys.stderr, flush=True)
    keys = list(next(iter(rows.values())))
    print("checkpoint\t" + "\t".join(keys))
    for folder, row in rows.items():
        print(f"{folder}\t" + "\t".join(f"{row[k]:.4g}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
