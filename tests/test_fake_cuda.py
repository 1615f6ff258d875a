"""CUDA-shaped checks without a GPU (issue 28): torch's ``FakeTensorMode`` makes ``cuda`` tensors on this machine
and raises on any op that mixes devices, so a tensor left on the host inside a forward pass, a loss or the
device augmentation fails here as it would on the first day with a GPU. Forward passes only (a backward
pass needs a CUDA context). Pinned copies have no fake kernel: pinning is replaced by the identity (it
changes no value, only how the copy is made)."""

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from aminet.config import load_config
from aminet.data.augment import DeviceAugment
from aminet.losses import AMINetCriterion
from aminet.model.aminet import build_model
from aminet.presets import preset_overrides


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    previous = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        try:  # older torch (measured: 2.9.0) initialises the real CUDA runtime for a fake module move
            probe = torch.nn.Linear(1, 1)  # made outside the mode, as the models of the tests are
            with mode:
                probe.to("cuda")
        except RuntimeError as exc:  # torch.AcceleratorError is a RuntimeError
            pytest.skip(f"torch {torch.__version__}: FakeTensorMode touches the real CUDA runtime here ({exc})"[:200])
        yield mode
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(previous)


def _cfg(*extra):
    return load_config(None, ["model.weights=none", "model.arch=resnet18", "data.height=64", "data.width=32", *extra])


@pytest.mark.parametrize("preset", ["M0", "M1", "M2", "M3", "M4"])
def test_every_preset_runs_forward_and_its_loss_on_cuda_with_nothing_left_on_the_host(fake_cuda, preset):
    cfg = _cfg(*[f"{k}={v}" for k, v in preset_overrides([preset]).items()], "loss.imdal=camera")
    model, criterion = build_model(cfg, 10), AMINetCriterion(cfg, cfg.data.instances)
    b = 8
    host_cams = (np.arange(b) % 2, np.arange(b) % 2 + 2)  # cameras live on the host (the sampler's)
    with fake_cuda:
        model, criterion = model.to("cuda"), criterion.to("cuda")
        vis, ir = torch.randn(b, 3, 64, 32, device="cuda"), torch.randn(b, 3, 64, 32, device="cuda")
        up = torch.randn(b, 3, 32, 32, device="cuda")
        out = model(vis, ir, up, up)
        loss, terms = criterion(out, torch.arange(b, device="cuda") // 2, host_cams)
        assert loss.device.type == "cuda" and loss.dtype == torch.float32
        assert all(t.device.type == "cuda" for t in terms.values())


def test_the_device_augmentation_runs_on_cuda(fake_cuda):
    cfg = _cfg().replace({"data.channel_aug_p": 0.5})  # the channel augmentation too (off by default)
    augment = DeviceAugment.from_config(cfg)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (8, 64, 32, 3), dtype=np.uint8))
    # the random choices are drawn on the host (as every step does), the augmentation itself on the device
    drawn = [augment.draw(8, 64, 32, visible, torch.Generator().manual_seed(0)) for visible in (True, False)]
    assert drawn[0]["chosen"].numel() and drawn[0]["erase"]  # both data-dependent branches are exercised
    with fake_cuda:
        x = images.to("cuda")
        for d in drawn:
            full, upper, clean, clean_upper = augment.apply(x, d, structure=True)
            assert full.device.type == "cuda" and upper.device.type == "cuda"
            assert clean.device.type == "cuda" and clean_upper.shape == upper.shape
            assert full.shape == (8, 3, 64, 32) and full.dtype == torch.float32
