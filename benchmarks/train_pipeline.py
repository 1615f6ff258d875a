"""Full training-step throughput: this project's pipeline against the field's usual code path.

Both pipelines train the same AMINet preset with the same losses, optimiser (SGD) and batch layout
(P identities x K visible + K infrared images), from the same uint8 training images at the same size:

* **aminet**: the cross-modal sampler gathers uint8 rows from the memory-mapped cache in one background
  thread, copies them to the device, and ``DeviceAugment`` augments the whole batch there (pad-crop,
  flip, channel augmentation, normalisation, random erasing, upper-body view); on a GPU: bf16 autocast,
  channels-last, optionally ``torch.compile``.
* **baseline**: what the public VI-ReID code (AGW / CAJ lineage) does: a ``torch.utils.data.Dataset``
  over the pre-resized uint8 arrays, torchvision transforms per sample on the CPU (ToPILImage, Pad,
  RandomCrop, RandomHorizontalFlip, ToTensor, Normalize, RandomErasing) in ``DataLoader`` workers,
  fp32, contiguous (NCHW) memory. The upper-body view is cut from the augmented batch on the device in
  both (the model needs it; it is not part of the usual code path's cost).

Images/s counts visible + infrared images per second of wall time, sampling to optimiser step, over
``steps`` steps after ``warmup`` steps, with one synchronisation at each end of the timed stretch (the
steps overlap as they do in training). The aminet pipeline *is* the trainer: ``aminet.engine.trainer.setup``
builds it from the config and every step is the trainer's own ``run_step`` (augmentation, forward, loss,
the ``LossMeter`` that fetches the loss terms once every ``CHECK_EVERY_CUDA`` steps on a GPU, the fused
optimiser of the config, SGD here), so the figure follows any change to the training loop. The baseline
loop does what the usual code does per step, including ``loss.item()`` (the usual per-step logging, one
host-device synchronisation per step).

Starvation evidence: ``data_wait_share`` is the share of the timed wall time the loop spent getting its
next batch (baseline: waiting for DataLoader workers and copying the batch; aminet: waiting for the
loader thread's gathered, device-resident uint8 batch, its augmentation being part of ``run_step``);
on a GPU, ``gpu_util`` is the mean (and ``gpu_util_min`` the lowest sample) of NVML's utilisation
("share of time a kernel was running") sampled every 100 ms through the timed steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TrainBench", "train_throughput", "GpuUtilisation", "baseline_loader", "baseline_pad"]


@dataclass
class TrainBench:
    pipeline: str
    preset: str
    device: str
    precision: str
    images_per_s: float
    step_s: float
    data_wait_share: float  # share of the timed wall time spent getting the next batch
    gpu_util: float | None = None  # mean NVML GPU utilisation over the timed steps, % (GPU only)
    gpu_util_min: float | None = None  # lowest sample, %


def _nvidia_smi_probe(device: torch.device) -> Callable[[], float] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    physical = visible[index].strip() if index < len(visible) and visible[index].strip() else str(index)

    def probe() -> float:
        out = subprocess.run(
            [exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", physical],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return float(out.stdout.strip().splitlines()[0])

    return probe


class GpuUtilisation:
    """Samples GPU utilisation in a thread while the ``with`` block runs: ``torch.cuda.utilization``
    (NVML through pynvml) where it works, else ``nvidia-smi``; ``mean``/``low`` are None where neither
    does (no GPU, no driver tools). ``probe`` replaces the source (tests)."""

    def __init__(self, device: torch.device, period: float = 0.1, probe: Callable[[], float] | None = None):
        self.period = period
        self.samples: list[float] = []
        self._probe = probe if probe is not None else self._find_probe(device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _find_probe(device: torch.device) -> Callable[[], float] | None:
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        try:
            torch.cuda.utilization(device)
            return lambda: float(torch.cuda.utilization(device))
        except Exception:  # pynvml missing or NVML unusable: the command-line tool reads the same counter
            pass
        probe = _nvidia_smi_probe(device)
        try:
            if probe is not None:
                probe()
                return probe
        except Exception:
            pass
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(float(self._probe()))
            except Exception:
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> GpuUtilisation:
        if self._probe is not None:
            self._thread = threading.Thread(target=self._run, name="aminet-gpu-util", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None

    @property
    def low(self) -> float | None:
        return float(np.min(self.samples)) if self.samples else None


class _PerSample(torch.utils.data.Dataset):
    """The usual code path: one (visible, infrared) pair per index, torchvision transforms per sample."""

    def __init__(self, images: np.ndarray, rows_v: np.ndarray, rows_i: np.ndarray, pad: int):
        import torchvision.transforms as T

        from aminet.data.images import IMAGENET_MEAN, IMAGENET_STD

        self.images, self.rows_v, self.rows_i = images, rows_v, rows_i
        h, w = images.shape[1:3]
        self.transform = T.Compose(
            [
                T.ToPILImage(),
                T.Pad(pad),
                T.RandomCrop((h, w)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
                T.RandomErasing(p=0.5),
            ]
        )

    def __len__(self) -> int:
        return len(self.rows_v)

    def __getitem__(self, pair):
        v, i = pair
        return (
            self.transform(np.asarray(self.images[self.rows_v[v]])),
            self.transform(np.asarray(self.images[self.rows_i[i]])),
        )


class _PairSampler(torch.utils.data.Sampler):
    """Yields (visible index, infrared index) pairs in the cross-modal sampler's order."""

    def __init__(self, sampler, steps: int):
        self.sampler, self.steps = sampler, steps

    def __iter__(self):
        for it in range(self.steps):
            vis, ir, _ = self.sampler.step(0, it)
            yield from zip(vis.tolist(), ir.tolist())

    def __len__(self) -> int:
        return self.steps * self.sampler.batch_size


def baseline_pad(height: int) -> int:
    """The usual code's 10-pixel pad at 288 rows, scaled with the image height."""
    return max(1, round(10 * height / 288))


def baseline_loader(
    images: np.ndarray,
    rows_v: np.ndarray,
    rows_i: np.ndarray,
    sampler,
    steps: int,
    *,
    pad: int,
    workers: int,
    pin: bool = False,
) -> torch.utils.data.DataLoader:
    """The usual code path's input pipeline: (visible, infrared) batches in the cross-modal sampler's
    order for ``steps`` steps, torchvision transforms per sample in ``workers`` DataLoader workers."""
    return torch.utils.data.DataLoader(
        _PerSample(images, rows_v, rows_i, pad),
        batch_size=sampler.batch_size,
        sampler=_PairSampler(sampler, steps),
        num_workers=workers,
        pin_memory=pin,
        drop_last=True,
        persistent_workers=False,
    )


def train_throughput(
    preset: str,
    pipeline: str,
    *,
    device: torch.device,
    steps: int,
    height: int = 288,
    width: int = 144,
    ids: int = 16,
    instances: int = 4,
    arch: str = "resnet50",
    compile: bool = False,
    workers: int | None = None,
    root=None,
    cache_dir=None,
    warmup: int = 2,
    cpu_bf16: bool = False,
) -> TrainBench:
    """Wall-clock throughput over ``steps`` timed steps after ``warmup`` steps (see the module docstring).
    The aminet pipeline runs bf16 autocast with a channels-last model on a GPU, and on a CPU when
    ``cpu_bf16`` (``train.precision=bf16``; fast where the CPU has bf16 units, e.g. AMX); else fp32."""
    from aminet.config import load_config
    from aminet.data import synthetic
    from aminet.data.augment import upper_view
    from aminet.data.cache import ImageCache
    from aminet.data.sampler import CrossModalSampler
    from aminet.data.splits import sysu_train
    from aminet.engine.trainer import CHECK_EVERY_CUDA, LossMeter, precision, run_step, setup
    from aminet.losses import AMINetCriterion
    from aminet.model.aminet import build_model
    from aminet.presets import preset_overrides

    fast = pipeline == "aminet"
    cuda = device.type == "cuda"
    cfg = load_config(
        None,
        [
            "model.weights=none",
            f"model.arch={arch}",
            f"data.height={height}",
            f"data.width={width}",
            f"data.ids_per_batch={ids}",
            f"data.instances={instances}",
            f"data.pad={baseline_pad(height)}",
            "optim.optimizer=sgd",
        ],
    )
    # the trainer's precision rule (and its refusals): bf16 for aminet on a GPU or when asked on a CPU
    cfg = cfg.replace(
        {**preset_overrides([preset]), "train.precision": "bf16" if fast and (cuda or cpu_bf16) else "fp32"}
    )
    root = root or synthetic.ensure_default("sysu", quiet=True)
    total = warmup + steps

    def check(values: torch.Tensor) -> None:
        if not torch.isfinite(values.float()).all():  # a benchmark of garbage must not print a figure
            raise RuntimeError(f"train bench {pipeline} {preset}: non-finite loss {values.tolist()}")

    if fast:
        # the trainer itself: one epoch of ``total`` steps on the final split, from the same cache
        r = setup(
            cfg.replace(
                {
                    "data.root": str(root),
                    "data.cache_dir": None if cache_dir is None else str(cache_dir),
                    "data.purpose": "final",
                    "data.iters_per_epoch": total,
                    "train.device": str(device),
                    "train.compile": compile,
                    "train.seed": 0,
                }
            ),
            quiet=True,
        )
        dtype, batch_size = r.dtype, r.sampler.batch_size
        meter = LossMeter(CHECK_EVERY_CUDA if cuda else 1)
        lr = r.set_lr(r.cfg.optim.warmup_epochs(r.cfg.train.epochs))  # the peak lr, after warm-up
        r.model.train()
        source = r.loader.run(0, 0, 1)

        def step(batch) -> None:
            run_step(r, batch, meter, lr)

        def finish() -> None:
            meter.drain(lr)  # raises NonFiniteLossError on a non-finite loss: no figure for garbage
    else:
        dtype = precision(cfg, device)
        cache = ImageCache.open(root, height, width, cache_dir=cache_dir, progress=False)
        train = sysu_train(root, "final")
        rows_v, rows_i = cache.indices(train.visible.paths), cache.indices(train.infrared.paths)
        sampler = CrossModalSampler(
            train.labels_visible, train.labels_infrared, ids, instances, seed=0, iters_per_epoch=total
        )
        batch_size = sampler.batch_size
        torch.manual_seed(0)
        model = build_model(cfg, train.num_classes).to(device).train()
        criterion = AMINetCriterion(cfg, instances).to(device)
        forward = torch.compile(model) if compile else model
        opt = torch.optim.SGD(
            list(model.parameters()) + [p for p in criterion.parameters() if p.requires_grad],
            lr=0.01,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        )
        ratio, up_h = cfg.model.upper_body_ratio, cfg.data.upper_height
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        dl = baseline_loader(cache.images, rows_v, rows_i, sampler, total, pad=cfg.data.pad, workers=workers, pin=cuda)
        steps_all = [sampler.step(0, it) for it in range(total)]
        labels_all = [torch.from_numpy(st[2]) for st in steps_all]
        cams_all = [(train.visible.cams[st[0]], train.infrared.cams[st[1]]) for st in steps_all]

        def batches():
            for it, (vis, ir) in enumerate(dl):
                vis, ir = vis.to(device, non_blocking=cuda), ir.to(device, non_blocking=cuda)
                yield (
                    vis,
                    ir,
                    upper_view(vis, ratio, up_h).contiguous(),
                    upper_view(ir, ratio, up_h).contiguous(),
                    labels_all[it].to(device),
                    cams_all[it],
                )

        source = batches()

        def step(batch) -> None:
            vis, ir, vis_up, ir_up, labels, cams = batch
            out = forward(vis, ir, vis_up, ir_up)
            loss, _ = criterion(out, labels, cams)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            check(torch.tensor([loss.item()]))  # the usual per-step logging

        def finish() -> None:
            pass

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step(next(source))
    sync()
    wait = 0.0
    with GpuUtilisation(device) as util:
        t_start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(source)
            wait += time.perf_counter() - t0
            step(batch)
        finish()
        sync()
        elapsed = time.perf_counter() - t_start
    source.close()
    return TrainBench(
        pipeline,
        preset,
        device.type,
        "bf16" if dtype else "fp32",
        2 * batch_size * steps / elapsed,
        elapsed / steps,
        wait / elapsed,
        util.mean,
        util.low,
    )
