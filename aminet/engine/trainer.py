"""``train(config, reporter) -> TrainResult``: the one training loop of every trial and every final run.

Per step: the sampler's P x K visible + K infrared indices -> uint8 rows from the memory-mapped cache
(a background thread) -> device-side augmentation with the upper-body views -> AMINet -> ID + triplet +
IMDAL + IDAL -> SGD (or Adam). Per epoch: the lr of the schedule, a progress line, ``log_epoch``.
Every ``train.eval_every`` epochs and at the last one: evaluation on the validation identities
(``data.purpose=search``) or the test protocol (``final``), a checkpoint, and ``report``.

GPU: bf16 autocast (fp16 with a gradient scaler where bf16 is missing), channels-last, cuDNN autotuning,
fused optimiser, and no host-device synchronisation inside a step: the loss terms stay on the device and
are fetched in one copy every ``train.host_sync_every`` steps (default: ``CHECK_EVERY_CUDA`` on a GPU,
every step on a CPU, where it costs nothing).
A non-finite loss stops the run with ``NonFiniteLossError`` naming the epoch, step and loss terms.
Checkpoints hold model, optimiser, loss (kernel weights), scaler, augmentation RNG and the epoch; the
sampler is keyed by (seed, epoch, step), so a resumed run repeats exactly what it would have done.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aminet.config import Config, ConfigError
from aminet.data import splits
from aminet.data.augment import DeviceAugment
from aminet.data.builders import build_training_data, evaluation_set, resolve_root
from aminet.data.cache import ImageCache
from aminet.data.sampler import BatchLoader, CrossModalSampler
from aminet.engine.checkpoint import latest_checkpoint, save_checkpoint
from aminet.engine.drills import Drill
from aminet.engine.reporter import NullReporter, Reporter
from aminet.engine.schedule import lr_factor
from aminet.evaluation.protocol import evaluate_set, metrics_from_frame
from aminet.losses import AMINetCriterion
from aminet.model.aminet import AMINet, build_model

__all__ = [
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "resolve_device",
    "device_summary",
    "CHECK_EVERY_CUDA",
    "Run",
    "setup",
    "run_step",
    "LossMeter",
    "precision",
    "evaluates",
]

# Fault injection for tests (and the reliability suite): make the loss NaN at this global step.
# On a GPU (unless train.host_sync_every says otherwise), the loss values are copied to the host (one
# synchronisation) once per this many steps and at the end of every epoch; a non-finite loss is then
# reported with the step it happened at.
CHECK_EVERY_CUDA = 25


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (``epoch``: the 1-based epoch it happened in). Deterministic
    for a config and seed: retrying the run gives the same divergence."""

    def __init__(self, message: str, epoch: int = 0) -> None:
        super().__init__(message)
        self.epoch = int(epoch)


@dataclass
class TrainResult:
    metrics: dict[str, float]  # the last evaluation
    history: list[dict[str, float]]  # every evaluation
    epochs: list[dict[str, float]]  # every epoch's training figures
    model: AMINet
    root: Path
    cache: ImageCache
    train_set: splits.TrainSet
    checkpoint: Path | None
    frame: pd.DataFrame | None = None  # per-trial metrics of the last evaluation (with CMC curves)
    evalset: splits.EvalSet | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU; ``cuda`` / ``cuda:N``: that GPU, or one line naming
    the likely cause (a CPU-only torch build, a driver older than torch's CUDA, hidden devices)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset"
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise RuntimeError(
                f"train.device={name}: no CUDA device on this machine (torch {torch.__version__}, {build}; {where}); "
                "likely a CPU-only torch wheel, an NVIDIA driver older than torch's CUDA, or hidden devices"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"train.device={name}: torch sees {torch.cuda.device_count()} CUDA device(s) ({where}); inside a "
                "Ray trial use train.device=cuda (the trial's own GPU)"
            )
    return dev


def device_summary(cfg: Config) -> str:
    """The device and precision ``cfg`` trains with on this machine, e.g. ``cuda:0 (NVIDIA H100) bf16`` or
    ``cpu fp32`` (logged with every run and trial, so a run that fell back to the CPU says so)."""
    dev = resolve_device(cfg.train.device)
    dtype = precision(cfg, dev)
    name = str(dev)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        name = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{name} {str(dtype).replace('torch.', '') if dtype else 'fp32'}"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _check_cpu_bf16(cfg: Config) -> None:
    """PyTorch's oneDNN bf16 kernels (measured with torch 2.15 on an AMX CPU) compute stride-2 3x3
    convolutions wrongly, NaN or errors of 1e37, when the input map is 1 or 2 columns wide (and 3 or more
    rows high); fp32 is right. The narrowest stride-2 input of the backbone is width / 8 (layer 3),
    width / 16 with model.last_stride=2 (layer 4): refuse bf16 on a CPU where that is <= 2."""
    narrowest = cfg.data.width // (16 if cfg.model.last_stride == 2 else 8)
    if narrowest <= 2:
        raise ConfigError(
            f"train.precision=bf16 on a CPU: data.width={cfg.data.width} gives a {narrowest}-column "
            "map at a stride-2 convolution, which oneDNN's bf16 kernels compute wrongly; use "
            f"train.precision=fp32 or data.width >= {24 if cfg.model.last_stride == 1 else 48}"
        )


def precision(cfg: Config, device: torch.device) -> torch.dtype | None:
    p = cfg.train.precision
    if device.type != "cuda":
        if p == "bf16" and device.type == "cpu":
            _check_cpu_bf16(cfg)
        return None if p in ("auto", "fp32") else (torch.bfloat16 if p == "bf16" else torch.float16)
    if p == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


def _optimizer(cfg: Config, model: AMINet, criterion: AMINetCriterion) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = model.param_groups()
    # PESAM's mixing logits: no weight decay unless asked (it would pull the softmax towards uniform)
    mixing = (
        set() if o.decay_mixing_logits else {id(m.logits) for m in (model.pesam, model.part_pesam) if m is not None}
    )
    head = [p for p in groups["head"] if id(p) not in mixing]
    params = [
        {"params": groups["backbone"], "lr_mult": o.backbone_lr_mult, "weight_decay": o.weight_decay},
        {"params": head, "lr_mult": 1.0, "weight_decay": o.weight_decay},
    ]
    if mixing:
        logits = [p for p in groups["head"] if id(p) in mixing]
        params.append({"params": logits, "lr_mult": 1.0, "weight_decay": 0.0})
    kernel = [p for p in criterion.parameters() if p.requires_grad]
    if kernel:  # the MMD kernel-weight logits: no weight decay (it would pull them to uniform)
        params.append({"params": kernel, "lr_mult": 1.0, "weight_decay": 0.0})
    for g in params:
        g["lr"] = o.lr * g["lr_mult"]
    # fused: one kernel per parameter group instead of a few per tensor (CPU and GPU alike)
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, fused=True)
    return torch.optim.Adam(params, lr=o.lr, fused=True)


def _evaluate(
    model: AMINet,
    evalset: splits.EvalSet,
    cache: ImageCache,
    cfg: Config,
    device: torch.device,
    dtype: torch.dtype | None,
) -> pd.DataFrame:
    with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return evaluate_set(
            model,
            evalset,
            cache.load,
            batch_size=cfg.eval.batch_size,
            device=device,
            flip=cfg.eval.flip,
            max_rank=cfg.eval.max_rank,
        )


@dataclass
class Run:
    """Everything a training step touches, built once by ``setup``."""

    cfg: Config
    device: torch.device
    dtype: torch.dtype | None
    root: Path
    train_set: splits.TrainSet
    evalset: splits.EvalSet
    cache: ImageCache
    sampler: CrossModalSampler
    loader: BatchLoader
    augment: DeviceAugment
    model: AMINet
    forward: Callable  # the model, or its torch.compile'd version
    criterion: AMINetCriterion
    loss: Callable  # the criterion, or its torch.compile'd version
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator  # the augmentation RNG (checkpointed)

    def describe(self) -> str:
        precision = str(self.dtype).replace("torch.", "") if self.dtype else "fp32"
        return (
            f"[aminet] {self.train_set.describe()}; {self.evalset.name}: {len(self.evalset.probes)} probes; "
            f"device {self.device} {precision}; {self.cfg.train.epochs} epochs x {self.sampler.iters_per_epoch} steps"
        )

    def set_lr(self, epoch: int) -> float:
        """The schedule's lr for ``epoch`` (0-based) on every parameter group; returns the base lr."""
        o = self.cfg.optim
        factor = lr_factor(epoch, o, self.cfg.train.epochs)
        for g in self.optimizer.param_groups:
            g["lr"] = o.lr * g["lr_mult"] * factor
        return o.lr * factor


def fp32_products(tf32: bool) -> None:
    """How a GPU runs the float32 products that autocast leaves in float32. Convolutions: TF32 when ``tf32``
    (train.tf32; the fp32-precision runs' backbone). Matrix products: always full float32, because every one
    that stays float32 here is a distance or an MMD kernel (ranking, triplet mining, bandwidths), and a TF32
    product keeps 10 mantissa bits, too few to order close distances (the bf16 defect of issue 28)."""
    torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"


def setup(cfg: Config, quiet: bool = False) -> Run:
    """Data (splits, cache, sampler, loader, augmentation), model, loss and optimiser for ``cfg``."""
    _seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    dtype = precision(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: autotune each convolution once
        fp32_products(cfg.train.tf32)
    root = resolve_root(cfg, quiet=quiet)
    train_set = build_training_data(cfg, root)
    evalset = evaluation_set(cfg, root)
    cache = ImageCache.open(root, cfg.data.height, cfg.data.width, cfg.data.cache_dir, progress=not quiet)
    sampler = CrossModalSampler(
        train_set.labels_visible,
        train_set.labels_infrared,
        cfg.data.ids_per_batch,
        cfg.data.instances,
        cfg.train.seed,
        cfg.data.iters_per_epoch,
    )
    loader = BatchLoader(
        cache.images,
        cache.indices(train_set.visible.paths),
        cache.indices(train_set.infrared.paths),
        sampler,
        device,
        cams_visible=train_set.visible.cams,
        cams_infrared=train_set.infrared.cams,
    )
    model = build_model(cfg, train_set.num_classes).to(device)
    cameras = (np.unique(train_set.visible.cams).tolist(), np.unique(train_set.infrared.cams).tolist())
    criterion = AMINetCriterion(cfg, cfg.data.instances, cameras).to(device)
    if cfg.train.channels_last and (device.type == "cuda" or dtype is not None):
        # GPU, or bf16 autocast on a CPU (oneDNN's fast bf16 kernels want NHWC); fp32 on a CPU stays NCHW
        model = model.to(memory_format=torch.channels_last)
    return Run(
        cfg,
        device,
        dtype,
        root,
        train_set,
        evalset,
        cache,
        sampler,
        loader,
        DeviceAugment.from_config(cfg),
        model,
        torch.compile(model) if cfg.train.compile else model,
        criterion,
        torch.compile(criterion) if cfg.train.compile else criterion,
        _optimizer(cfg, model, criterion),
        torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16)),
        torch.Generator().manual_seed(cfg.train.seed + 1),
    )


class LossMeter:
    """The loss terms of each step, kept on the device and fetched in one copy every ``every`` steps and at
    the end of an epoch (no host sync inside a step on a GPU); the first non-finite loss raises
    ``NonFiniteLossError`` with its epoch and step. ``means(iters)`` gives the epoch's averages."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (epoch, step, [loss, *terms])
        self.names: list[str] = []
        self.sums: dict[str, float] = {}

    def add(self, epoch: int, it: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        self.names = ["loss", *terms]
        values = [loss.detach().float(), *(v.detach().float() for v in terms.values())]
        self.pending.append((epoch, it, torch.stack(values)))

    def due(self, last_of_epoch: bool) -> bool:
        return len(self.pending) >= self.every or last_of_epoch

    def drain(self, lr: float) -> None:
        if not self.pending:
            return
        values = torch.stack([v for _, _, v in self.pending]).cpu().numpy()
        for (epoch, it, _), row in zip(self.pending, values):
            if not np.isfinite(row[0]):
                detail = ", ".join(f"{k} {v:.4g}" for k, v in zip(self.names[1:], row[1:]))
                raise NonFiniteLossError(
                    f"non-finite loss {row[0]} at epoch {epoch + 1}, step {it + 1} ({detail}); lr {lr:.3g}",
                    epoch=epoch + 1,
                )
            for k, v in zip(self.names, row):
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.pending.clear()

    def means(self, iters: int) -> dict[str, float]:
        out = {k: v / iters for k, v in self.sums.items()}
        self.sums = {}
        return out


def run_step(r: Run, batch, meter: LossMeter, lr: float, on_loss: Callable | None = None) -> None:
    """One optimiser step: augment both halves on the device, forward, the loss terms, update. The loss values
    are checked (host copy) when the meter is due, before the update: a non-finite loss never reaches the
    weights on a CPU. ``on_loss(epoch, step, loss) -> loss`` is a test hook (fault injection)."""
    clean = r.cfg.model.pesam and r.cfg.model.phase_input == "clean"  # PESAM reads the images before erasing
    vis, vis_up, *vis_s = r.augment(batch.visible, True, r.gen, clean)
    ir, ir_up, *ir_s = r.augment(batch.infrared, False, r.gen, clean)
    phase_from = (vis_s[0], ir_s[0], vis_s[1], ir_s[1]) if clean else None
    with torch.autocast(device_type=r.device.type, dtype=r.dtype or torch.float32, enabled=r.dtype is not None):
        out = r.forward(vis, ir, vis_up, ir_up, phase_from)
        loss, terms = r.loss(out, batch.labels, batch.cams)
    if on_loss is not None:
        loss = on_loss(batch.epoch, batch.it, loss)
    meter.add(batch.epoch, batch.it, loss, terms)
    if meter.due(batch.it + 1 == r.sampler.iters_per_epoch):
        meter.drain(lr)
    r.optimizer.zero_grad(set_to_none=True)
    r.scaler.scale(loss).backward()
    r.scaler.step(r.optimizer)
    r.scaler.update()


def train(
    cfg: Config,
    reporter: Reporter | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = True,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_loss: Callable | None = None,
    drill: Drill | None = None,
) -> TrainResult:
    """Train ``cfg``; checkpoints go to ``run_dir/checkpoints`` (resumed from when ``resume``). ``on_step(epoch,
    step)`` and ``on_loss(epoch, step, loss) -> loss`` are hooks for tests; ``drill`` (``aminet.engine.drills``)
    gives them for a fault drill."""
    reporter = reporter or NullReporter()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say = (lambda msg: None) if quiet else log
    r = setup(cfg, quiet)
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
    start_epoch, history, epoch_log, last_ckpt = restore(r, ckpt_dir, say) if resume else (0, [], [], None)
    epochs, iters = cfg.train.epochs, r.sampler.iters_per_epoch
    if drill is not None:
        on_loss, on_step = on_loss or drill.on_loss(iters), on_step or drill.on_step()
    say(r.describe())
    check_every = cfg.train.host_sync_every or (CHECK_EVERY_CUDA if r.device.type == "cuda" else 1)
    metrics: dict[str, float] = history[-1] if history else {}
    frame: pd.DataFrame | None = None

    r.model.train()
    batches = r.loader.run(start_epoch, 0, epochs)  # one stream over all epochs: prefetching never stops
    for epoch, steps in itertools.groupby(batches, key=lambda b: b.epoch):
        lr, meter, t0 = r.set_lr(epoch), LossMeter(check_every), time.perf_counter()
        for batch in steps:
            if on_step is not None:
                on_step(epoch, batch.it)
            run_step(r, batch, meter, lr, on_loss)
        figures = {**meter.means(iters), "lr": lr}
        done = epoch + 1
        evaluation = end_of_epoch(r, done, figures, time.perf_counter() - t0, epoch_log, reporter, say)
        if evaluation is not None:
            frame, metrics = evaluation
            history.append(metrics)
        last_ckpt = checkpoint(r, ckpt_dir, done, history, epoch_log, evaluation is not None) or last_ckpt
        if evaluation is not None:
            reporter.report(done, dict(metrics), last_ckpt)

    return finish(r, metrics, history, epoch_log, last_ckpt, frame)


def finish(r: Run, metrics: dict, history: list, epoch_log: list, last_ckpt: Path | None, frame) -> TrainResult:
    """The run's result; a run resumed after its last epoch evaluates the restored model once."""
    if frame is None and history:
        frame = _evaluate(r.model, r.evalset, r.cache, r.cfg, r.device, r.dtype)
    extra = {"device": str(r.device), "dtype": str(r.dtype) if r.dtype else "fp32"}
    return TrainResult(
        metrics, history, epoch_log, r.model, r.root, r.cache, r.train_set, last_ckpt, frame, r.evalset, extra
    )


def restore(r: Run, ckpt_dir: Path | None, say: Callable[[str], None]) -> tuple[int, list, list, Path | None]:
    """Continue from the latest checkpoint in ``ckpt_dir``: (epochs done, evaluations, epoch figures, path)."""
    found = latest_checkpoint(ckpt_dir, map_location=r.device) if ckpt_dir is not None else None
    if found is None:
        return 0, [], [], None
    path, state = found
    r.model.load_state_dict(state["model"])
    r.criterion.load_state_dict(state["criterion"])
    r.optimizer.load_state_dict(state["optimizer"])
    r.scaler.load_state_dict(state["scaler"])
    r.gen.set_state(state["aug_rng"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    say(f"[aminet] resuming from {path} (epoch {int(state['epoch'])} done)")
    return int(state["epoch"]), list(state["history"]), list(state["epochs"]), path


def end_of_epoch(
    r: Run,
    done: int,
    figures: dict[str, float],
    seconds: float,
    epoch_log: list,
    reporter: Reporter,
    say: Callable[[str], None],
) -> tuple[pd.DataFrame, dict[str, float]] | None:
    """The epoch's figures (logged, printed, told to the reporter) and, on an evaluation epoch, the evaluation:
    (per-trial frame, metrics), else None."""
    cfg, iters = r.cfg, r.sampler.iters_per_epoch
    batch_images = 2 * r.sampler.batch_size
    ep = dict(figures)
    ep.update(
        images_per_s=batch_images * iters / max(seconds, 1e-9), epoch_seconds=seconds, step=done * iters
    )  # step: optimizer steps so far
    epoch_log.append({"epoch": done, **ep})
    say(
        f"epoch {done:3d}/{cfg.train.epochs} | loss {ep['loss']:.3f} (id {ep['id']:.3f} tri {ep['triplet']:.3f} "
        f"imdal {ep['imdal']:.4f} idal {ep['idal']:.4f}) | lr {ep['lr']:.2e} | {ep['images_per_s']:.0f} img/s | "
        f"{seconds:.1f} s"
    )
    reporter.log_epoch(done, ep)
    if not evaluates(cfg, done):
        return None
    frame = _evaluate(r.model, r.evalset, r.cache, cfg, r.device, r.dtype)
    metrics = {"epoch": done, **metrics_from_frame(frame, cfg)}
    say(
        f"  eval {r.evalset.name} ({cfg.eval.feature}): R1 {100 * metrics['R1']:.2f}  mAP {100 * metrics['mAP']:.2f}  "
        f"mINP {100 * metrics['mINP']:.2f}  score {100 * metrics['score']:.2f}"
    )
    r.model.train()
    return frame, metrics


def evaluates(cfg: Config, done: int) -> bool:
    """Whether the run evaluates after epoch ``done`` (1-based): every ``train.eval_every`` and the last."""
    return done % cfg.train.eval_every == 0 or done == cfg.train.epochs


def checkpoint(
    r: Run, ckpt_dir: Path | None, done: int, history: list, epoch_log: list, evaluated: bool
) -> Path | None:
    """Save a checkpoint after an evaluation or every ``train.checkpoint_every`` epochs; its path, else None."""
    if ckpt_dir is None or not (evaluated or done % r.cfg.train.checkpoint_every == 0):
        return None
    state = {
        "model": r.model.state_dict(),
        "criterion": r.criterion.state_dict(),
        "optimizer": r.optimizer.state_dict(),
        "scaler": r.scaler.state_dict(),
        "aug_rng": r.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": done,
        "history": history,
        "epochs": epoch_log,
    }
    return save_checkpoint(ckpt_dir, done, state, r.cfg.to_yaml())
