"""The paper's model by default (issue 30): each default where the paper is explicit, and each departure kept as
a switch, checked by what a layer sees, which parameters get weight decay, which rows reach the neck's
statistics and where phase congruency reads its input."""

import pytest
import torch
import torch.nn.functional as F

from aminet.config import Config, load_config
from aminet.data.augment import DeviceAugment
from aminet.engine.trainer import _optimizer
from aminet.losses import AMINetCriterion, resolve_imdal
from aminet.model.aminet import NonLocal, build_model

SMALL = ["model.arch=resnet18", "model.weights=none", "data.height=64", "data.width=32", "data.instances=2"]


def _cfg(*extra):
    return load_config(None, [*SMALL, *extra])


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    vis, ir = torch.randn(b, 3, 64, 32, generator=g), torch.randn(b, 3, 64, 32, generator=g)
    return vis, ir, vis[:, :, :32].contiguous(), ir[:, :, :32].contiguous(), torch.arange(b) // 2


def test_the_defaults_are_the_papers_where_it_is_explicit():
    c = Config()
    assert c.data.channel_aug_p == 0.0  # the paper lists random cropping and random erasing
    assert c.model.fusion == "mlp"  # "nonlinear fusion"
    assert c.loss.branch_supervision  # Figure 1: each branch supervised by ID and triplet
    assert c.loss.imdal == "branch" and resolve_imdal(c) == "branch"
    assert resolve_imdal(c.replace({"data.dataset": "regdb"})) == "branch"  # one IMDAL on both benchmarks
    assert (c.model.phase_input, c.model.neck_stats, c.optim.decay_mixing_logits) == ("clean", "intra", False)
    assert c.model.non_local_width == "agw"


@pytest.mark.parametrize("width, inner", [("agw", 1), ("half", None)])
def test_non_local_width(width, inner):
    model = build_model(_cfg(f"model.non_local_width={width}"), 10)
    blocks = [m for m in model.backbone.modules() if isinstance(m, NonLocal)]
    assert len(blocks) == 4  # resnet18: after the last 2 blocks of layer2 and of layer3 (layer3 has 2)
    for blk in blocks:
        channels = blk.g.in_channels
        assert blk.inter == (channels // 2 if inner is None else inner)


def test_non_local_widths_differ_by_the_documented_parameter_count_on_resnet50():
    counts = {}
    for width in ("agw", "half"):
        cfg = load_config(None, ["model.weights=none", f"model.non_local_width={width}"])
        counts[width] = sum(p.numel() for p in build_model(cfg, 10).backbone.parameters())
    assert 7.0e6 < counts["half"] - counts["agw"] < 7.6e6  # "about 7.3 M more parameters per backbone"


def test_the_fusion_is_nonlinear_by_default():
    model = build_model(_cfg(), 10).train()
    assert isinstance(model.fusion[-1], torch.nn.ReLU)
    out = model(*_batch()[:4])
    assert (out.features >= 0).all()  # ReLU(BN(W [g; p]))
    residual = build_model(_cfg("model.fusion=residual"), 10).train()
    g_out = residual(*_batch()[:4])
    torch.testing.assert_close(g_out.intra_visible, g_out.global_features[:4])  # g + BN(.) with BN weight 0


def test_both_branches_are_supervised_and_the_part_backbone_learns_from_the_first_step():
    vis, ir, vu, iu, labels = _batch()
    cfg = _cfg("loss.mmd_intra_weight=0", "loss.mmd_inter_weight=0")
    model, crit = build_model(cfg, 10).train(), AMINetCriterion(cfg, 2)
    out = model(vis, ir, vu, iu)
    loss, terms = crit(out, labels)
    both = torch.cat([labels, labels])
    want = (
        F.cross_entropy(out.logits.float(), labels[out.pair_index])
        + F.cross_entropy(out.branch_logits[0].float(), both)
        + F.cross_entropy(out.branch_logits[1].float(), both)
    ) / 3
    torch.testing.assert_close(terms["id"], want)
    loss.backward()
    part_grad = sum(p.grad.abs().sum() for p in model.part_backbone.parameters() if p.grad is not None)
    assert part_grad > 0

    # the old defaults: the residual fusion starts at the global feature, so the part branch gets no gradient
    old = _cfg(
        "loss.mmd_intra_weight=0", "loss.mmd_inter_weight=0", "loss.branch_supervision=false", "model.fusion=residual"
    )
    model, crit = build_model(old, 10).train(), AMINetCriterion(old, 2)
    assert model.branch_necks is None
    loss, _ = crit(model(vis, ir, vu, iu), labels)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.part_backbone.parameters())


def test_pesam_mixing_logits_get_no_weight_decay_unless_asked():
    for decay in (False, True):
        cfg = _cfg(f"optim.decay_mixing_logits={str(decay).lower()}")
        model = build_model(cfg, 10)
        opt = _optimizer(cfg, model, AMINetCriterion(cfg, 2))
        wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        assert wd[id(model.pesam.logits)] == wd[id(model.part_pesam.logits)] == (cfg.optim.weight_decay if decay else 0)
        assert wd[id(model.classifier.weight)] == cfg.optim.weight_decay


@pytest.mark.parametrize("stats", ["intra", "all"])
def test_which_rows_reach_the_neck_statistics(stats):
    model = build_model(_cfg(f"model.neck_stats={stats}"), 10).train()
    bn = model.neck.bn
    out = model(*_batch()[:4])
    rows = out.features.detach()[:8] if stats == "intra" else out.features.detach()  # 2B intra rows, then cross
    m = bn.momentum
    torch.testing.assert_close(bn.running_mean, m * rows.mean(dim=0))
    torch.testing.assert_close(bn.running_var, (1 - m) * torch.ones_like(bn.running_var) + m * rows.var(dim=0))
    assert out.features.shape[0] == 16  # the cross-fused rows are trained on either way


def test_phase_congruency_reads_the_clean_images_when_given():
    model = build_model(_cfg(), 10).train()
    seen = []
    real = model._phase
    model._phase = lambda x: (seen.append(x), real(x))[1]
    vis, ir, vu, iu, _ = _batch()
    clean = tuple(t + 1.0 for t in (vis, ir, vu, iu))
    model(vis, ir, vu, iu, clean)
    torch.testing.assert_close(seen[0], torch.cat([clean[0], clean[1]]))
    torch.testing.assert_close(seen[1], torch.cat([clean[2], clean[3]]))
    seen.clear()
    model(vis, ir, vu, iu)
    torch.testing.assert_close(seen[0], torch.cat([vis, ir]))


def test_the_clean_views_have_no_erased_box_and_no_zero_border():
    augment = DeviceAugment(pad=4, flip_p=0.0, erase_p=1.0, channel_aug_p=0.0)
    images = torch.full((2, 16, 8, 3), 200, dtype=torch.uint8)
    d = augment.draw(2, 16, 8, True, torch.Generator().manual_seed(0))
    d["rows"], d["cols"] = d["rows"] - d["rows"][:, :1], d["cols"] - d["cols"][:, :1]  # crop at the top-left pad
    x, _, clean, _ = augment.apply(images, d, structure=True)
    assert torch.allclose(clean, clean[0, :, 0, 0][None, :, None, None].expand_as(clean))  # one flat colour
    assert (x != clean).any()  # the backbone's view has the zero border (and the erased box)
