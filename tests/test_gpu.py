"""GPU behaviour. The utilisation sampler's logic runs everywhere; the rest needs a CUDA device and is
skipped without one (these machines have none: run `pytest tests/test_gpu.py` on a GPU machine)."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks/ folder is not installed
from benchmarks.train_pipeline import GpuUtilisation  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_utilisation_sampler_collects_samples_while_the_block_runs():
    values = iter([90.0, 70.0, 100.0] + [95.0] * 1000)
    with GpuUtilisation(torch.device("cpu"), period=0.01, probe=lambda: next(values)) as util:
        time.sleep(0.2)
    n = len(util.samples)
    assert n >= 3 and util.low == 70.0 and util.mean == pytest.approx(sum(util.samples) / n)
    time.sleep(0.05)
    assert len(util.samples) == n  # stopped with the block


def test_utilisation_sampler_without_a_gpu_reports_nothing():
    with GpuUtilisation(torch.device("cpu"), period=0.01) as util:
        time.sleep(0.03)
    assert util.samples == [] and util.mean is None and util.low is None


def _tiny_step_parts(device):
    from aminet.config import load_config
    from aminet.data.augment import DeviceAugment
    from aminet.engine.trainer import _optimizer
    from aminet.losses import AMINetCriterion
    from aminet.model.aminet import build_model

    cfg = load_config(
        None,
        [
            "model.arch=resnet18",
            "model.weights=none",
            "data.height=64",
            "data.width=32",
            "data.pad=2",
            "data.instances=4",
            "data.ids_per_batch=2",
        ],
    )
    model = build_model(cfg, 4).to(device).to(memory_format=torch.channels_last).train()
    criterion = AMINetCriterion(cfg, 4).to(device)
    return cfg, model, criterion, _optimizer(cfg, model, criterion), DeviceAugment.from_config(cfg)


@cuda
def test_a_training_step_never_waits_for_the_gpu():
    """Augmentation, forward, every loss, backward and the fused update are queued without one
    host-device synchronisation (torch raises on any: .item(), boolean-mask indexing, blocking copies)."""
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cfg, model, criterion, opt, augment = _tiny_step_parts(device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 64, 32, 3), dtype=torch.uint8).pin_memory()
    labels = (torch.arange(8) // 4).pin_memory()
    cams = (np.array([1, 2, 4, 5] * 2), np.array([3, 6] * 4))  # on the host, as the loader hands them out

    def step():
        vis, vis_up = augment(images.to(device, non_blocking=True), True, gen)
        ir, ir_up = augment(images.to(device, non_blocking=True), False, gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, terms = criterion(model(vis, ir, vis_up, ir_up), labels.to(device, non_blocking=True), cams)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])

    step()  # warm-up: cuDNN autotuning, lazy initialisation, pinned-memory pools
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        values = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(values).cpu()).all()


@cuda
def test_augmentation_is_the_same_on_the_gpu_as_on_the_cpu():
    from aminet.data.augment import DeviceAugment

    aug = DeviceAugment(upper_body_ratio=0.5, pad=4)
    images = torch.randint(0, 256, (6, 64, 32, 3), dtype=torch.uint8)
    cpu = aug(images, True, torch.Generator().manual_seed(3))
    gpu = aug(images.cuda(), True, torch.Generator().manual_seed(3))
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=1e-5)


@cuda
def test_the_loader_copies_on_a_side_stream_and_the_step_sees_whole_batches():
    """Copies of step t+1 run on the loader's own stream while step t computes; the compute stream waits on
    an event, so every batch arrives whole (checked against the host rows) even when the compute stream
    is kept busy."""
    from aminet.data.sampler import BatchLoader, CrossModalSampler

    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(16), 4)
    cams = np.tile([1, 2, 4, 5], 16)
    sampler = CrossModalSampler(labels, labels, 4, 4, seed=0, iters_per_epoch=6)
    loader = BatchLoader(images, np.arange(64), np.arange(64), sampler, device, cams_visible=cams, cams_infrared=cams)
    busy = torch.randn(2048, 2048, device=device)
    for b in loader.run(0, 0, 2):
        for _ in range(5):
            busy = torch.tanh(busy @ busy)  # keeps the compute stream busy while the next copies are queued
        vis, _, lab = sampler.step(b.epoch, b.it)
        assert torch.equal(b.visible.cpu(), torch.from_numpy(images[vis]))
        assert torch.equal(b.labels.cpu(), torch.from_numpy(lab))
        assert b.cams[0].device.type == "cuda" and torch.equal(b.cams[0].cpu(), torch.from_numpy(cams[vis]))


def test_the_transfer_is_a_plain_copy_off_the_gpu():
    from aminet.data.sampler import Transfer

    t = Transfer(torch.device("cpu"))
    x = torch.arange(6)
    moved, ready = t.send([x])
    assert ready is None and t.receive(moved, ready)[0] is moved[0] and torch.equal(moved[0], x)
