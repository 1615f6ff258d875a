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

Images/s counts visible + infrared images per second of wall time, sampling to optimiser step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TrainBench", "train_throughput"]


@dataclass
class TrainBench:
    pipeline: str
    preset: str
    device: str
    precision: str
    images_per_s: float
    step_s: float
    data_wait_share: float  # share of the step spent waiting for the next batch


class _PerSample(torch.utils.data.Dataset):
    """The usual code path: one (visible, infrared) pair per index, torchvision transforms per sample."""

    def __init__(self, images: np.ndarray, rows_v: np.ndarray, rows_i: np.ndarray, pad: int):
        import torchvision.transforms as T

        self.images, self.rows_v, self.rows_i = images, rows_v, rows_i
        h, w = images.shape[1:3]
        self.transform = T.Compose([
            T.ToPILImage(), T.Pad(pad), T.RandomCrop((h, w)), T.RandomHorizontalFlip(), T.ToTensor(),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]), T.RandomErasing(p=0.5)])

    def __len__(self) -> int:
        return len(self.rows_v)

    def __getitem__(self, pair):
        v, i = pair
        return (self.transform(np.asarray(self.images[self.rows_v[v]])),
                self.transform(np.asarray(self.images[self.rows_i[i]])))


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


def train_throughput(preset: str, pipeline: str, *, device: torch.device, steps: int, height: int = 288,
                     width: int = 144, ids: int = 16, instances: int = 4, arch: str = "resnet50",
                     compile: bool = False, workers: int | None = None, root=None, cache_dir=None,
                     warmup: int = 2) -> TrainBench:
    """Median-free wall-clock throughput over ``steps`` timed steps after ``warmup`` steps."""
    from aminet.config import load_config
    from aminet.data import synthetic
    from aminet.data.augment import DeviceAugment, upper_view
    from aminet.data.cache import ImageCache
    from aminet.data.sampler import BatchLoader, CrossModalSampler
    from aminet.data.splits import sysu_train
    from aminet.losses import AMINetCriterion
    from aminet.model.aminet import build_model
    from aminet.presets import preset_overrides

    fast = pipeline == "aminet"
    cuda = device.type == "cuda"
    cfg = load_config(None, ["model.weights=none", f"model.arch={arch}", f"data.height={height}",
                             f"data.width={width}", f"data.upper_height={height // 2}", f"data.ids_per_batch={ids}",
                             f"data.instances={instances}", f"data.pad={max(1, round(10 * height / 288))}"])
    cfg = cfg.replace(preset_overrides([preset]))
    root = root or synthetic.ensure_default("sysu", quiet=True)
    cache = ImageCache.open(root, height, width, cache_dir=cache_dir, progress=False)
    train = sysu_train(root, "final")
    rows_v, rows_i = cache.indices(train.visible.paths), cache.indices(train.infrared.paths)
    total = warmup + steps
    sampler = CrossModalSampler(train.labels_visible, train.labels_infrared, ids, instances, seed=0,
                                iters_per_epoch=total)
    torch.manual_seed(0)
    model = build_model(cfg, train.num_classes).to(device).train()
    criterion = AMINetCriterion(cfg, instances).to(device)
    dtype = torch.bfloat16 if (fast and cuda) else None
    if fast and cuda:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    opt = torch.optim.SGD(list(model.parameters()) + [p for p in criterion.parameters() if p.requires_grad],
                          lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    ratio, up_h = cfg.model.upper_body_ratio, cfg.data.upper_height

    if fast:
        aug = DeviceAugment.from_config(cfg)
        loader = BatchLoader(cache.images, rows_v, rows_i, sampler, device)

        def batches():
            for b in loader.run(0, 0, 1):
                vis, vis_up = aug(b.visible, True, gen)
                ir, ir_up = aug(b.infrared, False, gen)
                yield vis, ir, vis_up, ir_up, b.labels
    else:
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        data = _PerSample(cache.images, rows_v, rows_i, cfg.data.pad)
        dl = torch.utils.data.DataLoader(data, batch_size=sampler.batch_size, sampler=_PairSampler(sampler, total),
                                         num_workers=workers, pin_memory=cuda, drop_last=True,
                                         persistent_workers=False)
        labels_all = [torch.from_numpy(sampler.step(0, it)[2]) for it in range(total)]

        def batches():
            for it, (vis, ir) in enumerate(dl):
                vis, ir = vis.to(device, non_blocking=cuda), ir.to(device, non_blocking=cuda)
                yield vis, ir, upper_view(vis, ratio, up_h).contiguous(), upper_view(ir, ratio, up_h).contiguous(), \
                    labels_all[it].to(device)

    wait = 0.0
    t_start = None
    it_count = 0
    t_last = time.perf_counter()
    for i, (vis, ir, vis_up, ir_up, labels) in enumerate(batches()):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            t_start = time.perf_counter()
            wait = 0.0
        t_data = time.perf_counter()
        wait += t_data - t_last
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = forward(vis, ir, vis_up, ir_up)
            loss, _ = criterion(out, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        t_last = time.perf_counter()
        if i >= warmup:
            it_count += 1
    elapsed = time.perf_counter() - t_start
    per_step = elapsed / max(1, it_count)
    return TrainBench(pipeline, preset, device.type, "bf16" if dtype else "fp32",
                      2 * sampler.batch_size * it_count / elapsed, per_step, wait / elapsed)
