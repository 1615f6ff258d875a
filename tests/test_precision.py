"""Distances in fp32 whatever the autocast context (issue 28, defects 1 and 2): CPU bf16 autocast casts matrix
products as CUDA's does, so a bf16 leak into a ranking or a loss shows here without a GPU."""

import numpy as np
import torch
import torch.nn.functional as F

from aminet.evaluation import sysu_metrics
from aminet.evaluation.protocol import _distance
from aminet.losses import _pairwise_euclidean, weighted_triplet


def _close_features(n: int, dim: int = 256, cosine: float = 0.68, seed: int = 0) -> torch.Tensor:
    """L2-normalised features around one shared direction: mean pairwise cosine about ``cosine`` (close
    gallery images, where bf16 rounding reorders a ranking)."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(dim, generator=g)
    noise = torch.randn(n, dim, generator=g)
    a = float(np.sqrt(cosine))
    return F.normalize(a * F.normalize(common, dim=0) * np.sqrt(dim) + np.sqrt(1 - cosine) * noise, dim=1)


def test_evaluation_distances_and_rankings_are_fp32_under_bf16_autocast():
    q, g = _close_features(300, seed=1), _close_features(600, seed=2)
    q_pids = np.arange(300) % 60
    g_pids = np.arange(600) % 60
    cams_q, cams_g = np.full(300, 3), np.full(600, 1)
    exact = -(q.double() @ g.double().T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = _distance(q, g)
    assert d.dtype == torch.float32
    assert torch.allclose(d.double(), exact, atol=1e-6)
    fp32 = sysu_metrics(_distance(q, g).numpy(), q_pids, g_pids, cams_q, cams_g)
    mixed = sysu_metrics(d.numpy(), q_pids, g_pids, cams_q, cams_g)
    np.testing.assert_array_equal(fp32[0], mixed[0])
    assert fp32[1:] == mixed[1:]


def test_triplet_distances_and_loss_are_fp32_under_bf16_autocast():
    f = _close_features(64, dim=512, cosine=0.9, seed=3) * 8
    labels = torch.arange(64) // 4
    exact = torch.cdist(f.double(), f.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = _pairwise_euclidean(f)
        loss = weighted_triplet(f, labels)
    assert d.dtype == torch.float32 and loss.dtype == torch.float32
    off = ~torch.eye(64, dtype=torch.bool)
    assert torch.allclose(d[off].double(), exact[off], rtol=1e-4)
    assert torch.allclose(loss, weighted_triplet(f, labels), rtol=1e-6)


def test_a_cuda_device_that_torch_cannot_see_is_refused_with_its_likely_cause(monkeypatch):
    import pytest

    from aminet.config import load_config
    from aminet.engine.trainer import device_summary, resolve_device
    from trainables.aminet_trainable import trial_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as info:
        resolve_device("cuda")
    assert "no CUDA device" in str(info.value) and "CUDA_VISIBLE_DEVICES" in str(info.value)
    assert "\n" not in str(info.value)
    cfg = load_config(None, [])
    assert device_summary(cfg) == "cpu fp32"  # what every run and trial now logs (tag aminet.device)
    # a trial given a GPU trains on its own GPU, whatever device the base config names: no silent CPU run
    assert trial_device(cfg.replace({"train.device": "cuda:1"}), gpu_ids=[3]).train.device == "cuda"
    assert trial_device(cfg, gpu_ids=[0]).train.device == "cuda"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        device_summary(trial_device(cfg, gpu_ids=[0]))
    assert trial_device(cfg, gpu_ids=[]).train.device == cfg.train.device  # CPU trials keep their setting
    assert trial_device(cfg.replace({"train.device": "cpu"}), gpu_ids=[0]).train.device == "cpu"


def test_cuda_index_beyond_the_visible_devices_names_the_trial_setting(monkeypatch):
    import pytest

    from aminet.engine.trainer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="use train.device=cuda"):
        resolve_device("cuda:1")


def test_a_bf16_training_step_keeps_its_losses_and_the_evaluation_distances_in_fp32(tiny_config):
    """One training step of the engine under bf16 autocast on the CPU (as CUDA's): the features may be bf16, the
    loss and every term must not be; the evaluation's distance matrix neither."""
    from aminet.engine.trainer import LossMeter, run_step, setup

    cfg = tiny_config(
        "train.precision=bf16",
        "data.height=64",
        "data.width=32",
        "data.upper_height=32",
        "model.last_stride=1",
        "loss.imdal=camera",
    )
    r = setup(cfg, quiet=True)
    assert r.dtype == torch.bfloat16
    seen = {}

    def capture(epoch, step, loss):
        seen["loss"] = loss
        return loss

    original = r.criterion.forward

    def criterion(out, labels, cams=None):
        loss, terms = original(out, labels, cams)
        seen["terms"] = terms
        return loss, terms

    r.criterion.forward = criterion
    batch = next(iter(r.loader.run(0, 0, 1)))
    run_step(r, batch, LossMeter(1), lr=1e-3, on_loss=capture)
    assert seen["loss"].dtype == torch.float32
    assert {k: v.dtype for k, v in seen["terms"].items()} == {k: torch.float32 for k in seen["terms"]}
    q = F.normalize(torch.randn(20, 64), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the context the trainer evaluates in
        assert _distance(q, q).dtype == torch.float32


def test_gpu_fp32_policy_tf32_convolutions_ieee_matrix_products():
    """train.tf32: TF32 for the float32 convolutions only; matrix products stay IEEE float32 whatever was set
    before, because the products left in float32 are distances and MMD kernels."""
    import torch.backends.cuda as bcuda
    import torch.backends.cudnn as bcudnn

    from aminet.engine.trainer import fp32_products

    saved = bcudnn.conv.fp32_precision, bcuda.matmul.fp32_precision
    try:
        bcuda.matmul.fp32_precision = "tf32"
        fp32_products(True)
        assert (bcudnn.conv.fp32_precision, bcuda.matmul.fp32_precision) == ("tf32", "ieee")
        fp32_products(False)
        assert (bcudnn.conv.fp32_precision, bcuda.matmul.fp32_precision) == ("ieee", "ieee")
    finally:
        bcudnn.conv.fp32_precision, bcuda.matmul.fp32_precision = saved
