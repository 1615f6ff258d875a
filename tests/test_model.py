import os
from pathlib import Path

import numpy as np
import pytest
import torch

from aminet.config import load_config
from aminet.losses import AMINetCriterion
from aminet.model.aminet import AMINet, GeM, NonLocal, WeightsUnavailable, build_model, imagenet_weights_path
from aminet.presets import PRESETS, preset_overrides

SMALL = [
    "model.arch=resnet18",
    "model.weights=none",
    "data.height=64",
    "data.width=32",
    "data.ids_per_batch=2",
    "data.instances=2",
]
CAMS = (np.array([1, 2, 1, 2]), np.array([3, 6, 6, 3]))  # cameras of the visible / infrared half of _batch


def _cfg(*presets, extra=()):
    cfg = load_config(None, SMALL + list(extra))
    return cfg.replace(preset_overrides(presets)) if presets else cfg


def _batch(b=4, h=64, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g), torch.randn(b, 3, h, w, generator=g), torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize("rows", [["M0"], ["M1"], ["M2"], ["M3"], ["M4"], ["M4", "pesam_off"], ["M0", "pesam_on"]])
def test_every_preset_trains_a_step_on_cpu(rows):
    cfg = _cfg(*rows)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3)
    crit = AMINetCriterion(cfg, instances=2)
    v, i, labels = _batch()
    out = model(v, i)
    n_sets = 2 if not cfg.model.upper_body else (4 if cfg.model.iffs else 2)
    assert out.features.shape == (n_sets * 4, model.dim) and out.logits.shape == (n_sets * 4, 3)
    total, terms = crit(out, labels, CAMS)
    assert set(terms) == {"id", "triplet", "imdal", "idal"}
    assert (terms["imdal"] != 0) == (cfg.loss.mmd_intra_weight > 0)
    assert (terms["idal"] != 0) == (cfg.loss.mmd_inter_weight > 0)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert (model.pesam is not None) == cfg.model.pesam
    assert cfg.model.pesam == (rows[0] != "M0" and rows[-1] != "pesam_off" or rows[-1] == "pesam_on")
    if cfg.model.pesam:
        assert model.pesam.logits.grad is not None
    model.eval()
    emb = model.extract(v, "visible")
    assert set(emb) == {"pool", "bn"} and emb["bn"].shape == (4, model.dim)


def test_embedding_is_per_image():
    torch.manual_seed(0)
    model = build_model(_cfg("M4"), 3).eval()
    v, _, _ = _batch()
    alone = model.extract(v[:1], "infrared")["bn"]
    batched = model.extract(v, "infrared")["bn"][:1]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-4)
    # The stems start as copies (as two copies of one pretrained stem would); once they differ,
    # the modality chosen for extraction matters.
    torch.testing.assert_close(model.extract(v, "visible")["bn"], model.extract(v, "infrared")["bn"])
    with torch.no_grad():
        model.backbone.stems["infrared"][0].weight.mul_(1.5)
    assert not torch.allclose(model.extract(v, "visible")["bn"], model.extract(v, "infrared")["bn"])


def test_resnet50_shapes_and_last_stride():
    torch.manual_seed(0)
    model = AMINet(4, arch="resnet50", upper_height=32, pesam=False)
    x = torch.randn(2, 3, 64, 32)
    f = model.backbone.body(model.backbone.stem(x, "visible"))
    assert f.shape == (2, 2048, 4, 2)  # stride 16 with last stride 1 (288x144 -> 18x9)
    n_nl = sum(isinstance(m, NonLocal) for m in model.backbone.body.modules())
    assert n_nl == 5  # last 2 blocks of layer2, last 3 of layer3
    assert model.extract(x, "visible")["pool"].shape == (2, 2048)


def test_non_local_blocks_start_as_identity():
    nl = NonLocal(16)
    x = torch.randn(2, 16, 5, 4)
    torch.testing.assert_close(nl(x), x)


def test_gem_pooling():
    x = torch.rand(2, 3, 4, 4) + 0.1
    torch.testing.assert_close(GeM(1.0)(x), x.mean(dim=(2, 3)))
    assert (GeM(3.0)(x) >= x.mean(dim=(2, 3)) - 1e-6).all()  # power mean >= arithmetic mean
    assert not GeM(3.0).p.requires_grad and GeM(3.0, learnable=True).p.requires_grad


def test_branch_sharing_and_param_groups():
    shared = build_model(_cfg("M4", extra=["model.share_branches=true"]), 3)
    separate = build_model(_cfg("M4"), 3)  # the default: the paper's phi_global != phi_part
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert separate.part_backbone is not None and shared.part_backbone is None
    assert n(separate) > 1.8 * n(shared) - 2 * n(shared.fusion)
    groups = shared.param_groups()
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in shared.backbone.parameters() if p.requires_grad}
    head_ids = {id(p) for p in groups["head"]}
    assert id(shared.classifier.weight) in head_ids and id(shared.pesam.logits) in head_ids
    assert not shared.neck.bn.bias.requires_grad  # frozen BN-neck bias


def test_missing_imagenet_weights_give_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailable, match="not on this machine.*model.weights=none"):
        AMINet(3, arch="resnet18", weights="imagenet")
    with pytest.raises(WeightsUnavailable, match="file not found"):
        AMINet(3, arch="resnet18", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="cannot read"):
        AMINet(3, arch="resnet18", weights=str(tmp_path / "bad.pth"))


def test_local_weights_file_is_loaded(tmp_path, monkeypatch):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = AMINet(3, arch="resnet18", weights=str(path), pesam=False, upper_height=32)
    torch.testing.assert_close(model.backbone.stems["visible"][0].weight, ref.conv1.weight)
    torch.testing.assert_close(model.backbone.stems["infrared"][0].weight, ref.conv1.weight)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = imagenet_weights_path("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), cached)
    AMINet(3, arch="resnet18", weights="imagenet", pesam=False, upper_height=32)


def test_presets_are_valid_configs():
    for name in PRESETS:
        load_config(None, SMALL).replace(PRESETS[name])
    with pytest.raises(ValueError, match="unknown preset 'M9'"):
        preset_overrides(["M9"])


def test_torch_compile_traces_the_model_with_phase_congruency_as_one_opaque_op():
    """``train.compile``: dynamo traces the whole M4 forward in one graph; phase congruency is a custom op in it
    (complex FFTs, which inductor cannot generate, stay in its eager kernel; the filter bank is not rebuilt)."""
    cfg = load_config(
        None, ["model.arch=resnet18", "model.weights=none", "data.height=64", "data.width=32", "data.instances=4"]
    ).replace(preset_overrides(["M4"]))
    model = build_model(cfg, 4).train()
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 64, 32), torch.randn(4, 3, 64, 32)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x, y)
    torch._dynamo.reset()
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    code = "\n".join(g.code for g in explained.graphs)
    assert "fft" not in code and "conv2d" in code and "phase_congruency_rgb" in code


def _bn_calls(model, modules):
    """Forward hooks recording the batch size of every call of each BatchNorm in ``modules``."""
    calls = {}
    handles = []
    for prefix, module in modules.items():
        for name, m in module.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                key = f"{prefix}.{name}"
                calls[key] = []
                handles.append(
                    m.register_forward_hook(lambda mod, inp, out, key=key: calls[key].append(inp[0].shape[0]))
                )
    return calls, handles


@pytest.mark.parametrize("share", [True, False])
def test_shared_batchnorms_see_both_modalities_once_per_branch(share):
    """Issue 13.1: every shared BN (backbone body, fusion, PESAM) runs once per branch per step on the
    concatenated visible+infrared batch, as at test time, not once per modality."""
    cfg = _cfg("M4", extra=[f"model.share_branches={str(share).lower()}"])
    torch.manual_seed(0)
    model = build_model(cfg, 3).train()
    v, i, _ = _batch()
    b = v.shape[0]
    mods = {"body": model.backbone.body, "fusion": model.fusion, "pesam": model.pesam.phase_stem}
    if not share:
        mods.update({"part_body": model.part_backbone.body, "part_pesam": model.part_pesam.phase_stem})
    calls, handles = _bn_calls(model, mods)
    model(v, i)
    for h in handles:
        h.remove()
    per_branch = 2 if share else 1  # the shared backbone serves the full-body and the upper-body branch
    for key, sizes in calls.items():
        if key.startswith("fusion"):
            assert sizes == [4 * b], (key, sizes)  # intra and cross pairs of both modalities, one call
        else:
            assert sizes == [2 * b] * per_branch, (key, sizes)
    assert len(calls) > 10


def test_mixed_batch_is_the_two_modality_stems_concatenated():
    cfg = _cfg("M0")  # full-body branch only, no PESAM: the body's input is exactly the stems' outputs
    torch.manual_seed(0)
    model = build_model(cfg, 3).train()
    with torch.no_grad():
        model.backbone.stems["infrared"][0].weight.mul_(-2.0)  # make the modalities' stems differ
    seen = {}
    hooks = [
        model.backbone.stems[m].register_forward_hook(lambda mod, inp, out, m=m: seen.__setitem__(m, out))
        for m in ("visible", "infrared")
    ]
    hooks.append(model.backbone.body.register_forward_pre_hook(lambda mod, inp: seen.__setitem__("body", inp[0])))
    v, i, _ = _batch()
    model(v, i)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen["body"], torch.cat([seen["visible"], seen["infrared"]]))


def test_per_modality_switch_keeps_the_old_behaviour():
    # one shared backbone: its body runs once per modality and branch
    cfg = _cfg("M4", extra=["model.mixed_bn=false", "model.share_branches=true"])
    model = build_model(cfg, 3).train()
    v, i, _ = _batch()
    calls, handles = _bn_calls(model, {"body": model.backbone.body, "fusion": model.fusion})
    model(v, i)
    for h in handles:
        h.remove()
    assert calls["body.0.0.bn1"] == [4] * 4 and calls["fusion.1"] == [4] * 4


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_upper_body_view_follows_the_share_without_distortion(ratio):
    """Issue 13.5: the upper view is the top round(ratio * H) rows at their own resolution."""
    cfg = _cfg("M4", extra=[f"model.upper_body_ratio={ratio}"])
    model = build_model(cfg, 3).train()
    seen = []
    for backbone in {id(b): b for b in (model.backbone, model.part_backbone or model.backbone)}.values():
        backbone.stems["visible"].register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].shape[-2:]))
    v, i, _ = _batch()
    model(v, i)
    assert seen == [torch.Size([64, 32]), torch.Size([round(ratio * 64), 32])]


def test_presets_take_the_mmd_weights_of_the_config_they_are_applied_to():
    """Issue 13.3: M2-M4 switch terms off but keep the config's weights (RegDB 0.2 / 0.8, SYSU 0.4 / 0.6)."""
    from pathlib import Path

    from experiments import run

    root = Path(__file__).resolve().parents[1] / "experiments"
    want = {
        "regdb": {"M0": (0, 0), "M1": (0, 0), "M2": (0.2, 0), "M3": (0, 0.8), "M4": (0.2, 0.8)},
        "sysu": {"M0": (0, 0), "M1": (0, 0), "M2": (0.4, 0), "M3": (0, 0.6), "M4": (0.4, 0.6)},
    }
    for dataset, rows in want.items():
        for row, weights in rows.items():
            [(_, cfg)] = run.load_experiment(root / f"{dataset}.yaml", [], [row])
            assert (cfg.loss.mmd_intra_weight, cfg.loss.mmd_inter_weight) == weights, (dataset, row)
            assert cfg.model.pesam == (row != "M0") and cfg.model.upper_body == (row != "M0")
            [(_, shipped)] = run.load_experiment(root / "ablation" / f"{dataset}_{row}.yaml", [], [])
            assert shipped == cfg, (dataset, row)


def _fake_imagenet_file(tmp_path, corrupt=False):
    """A resnet18 state dict saved under torchvision's naming (``resnet18-<sha256 prefix>.pth``), served to
    torch's own downloader from a ``file://`` URL (no network); ``corrupt``: the bytes do not match the name."""
    import hashlib
    import io

    import torchvision

    buf = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buf)
    data = buf.getvalue()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    served = tmp_path / "served" / name
    served.parent.mkdir(parents=True, exist_ok=True)
    served.write_bytes(data[:-100] + b"x" * 100 if corrupt else data)
    return served


def test_missing_imagenet_weights_are_downloaded_with_torchs_hash_check(tmp_path, monkeypatch):
    """Issue 39: ``model.weights=imagenet`` with the file missing downloads it through torch's hub downloader
    into torchvision's cache (hash checked); a corrupted download is refused in one line and leaves nothing."""
    from aminet.model import weights as w

    monkeypatch.delenv("AMINET_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    served = _fake_imagenet_file(tmp_path)
    monkeypatch.setattr(w, "_imagenet_url", lambda arch: served.as_uri())
    path = w.check_weights("resnet18", "imagenet")
    assert path == tmp_path / "hub" / "checkpoints" / served.name and path.read_bytes() == served.read_bytes()
    model = AMINet(3, arch="resnet18", weights="imagenet")  # and the model loads it
    assert model is not None

    bad = _fake_imagenet_file(tmp_path / "bad", corrupt=True)
    monkeypatch.setattr(w, "_imagenet_url", lambda arch: bad.as_uri())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub2"))
    with pytest.raises(WeightsUnavailable) as err:
        w.check_weights("resnet18", "imagenet")
    assert "\n" not in str(err.value) and "hash" in str(err.value).lower() and bad.name in str(err.value)
    assert not list((tmp_path / "hub2" / "checkpoints").glob("*"))  # no half-written file


def test_offline_refuses_missing_weights_naming_the_file_and_the_fetch_command(tmp_path, monkeypatch):
    import subprocess
    import sys

    from aminet.model import weights as w

    monkeypatch.setenv("AMINET_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(w, "_imagenet_url", lambda arch: "file:///nowhere/resnet18-00000000.pth")
    with pytest.raises(WeightsUnavailable) as err:
        w.check_weights("resnet18", "imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "resnet18-00000000.pth" in msg and "python -m aminet.model.weights resnet18" in msg
    assert "downloads are off" in msg
    # the runners' --offline sets the switch for everything they start
    env = {k: v for k, v in os.environ.items() if k != "AMINET_OFFLINE"}
    env["TORCH_HOME"] = str(tmp_path / "torch-home")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "experiments" / "run.py"), "experiments/smoke.yaml",
         "--offline", "--set", "model.weights=imagenet", "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert out.returncode == 2 and "downloads are off" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "m.db").exists()
