"""A compiled step that stays compiled (issue 28): the model's forward is one graph (phase congruency is one
opaque custom op, not a graph break), and a second step or a second run in the same process with the same
shapes compiles nothing again. Read from dynamo's counters on the CPU (the eager backend: dynamo's capture
is what is tested, not inductor's code)."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from aminet.config import load_config
from aminet.model.aminet import build_model
from aminet.model.phase import phase_congruency, phase_congruency_rgb
from aminet.presets import preset_overrides


def _cfg(preset: str):
    extra = [f"{k}={v}" for k, v in preset_overrides([preset]).items()]
    return load_config(None, ["model.arch=resnet18", "model.weights=none", "data.height=64", "data.width=32", *extra])


@pytest.mark.parametrize("preset", ["M0", "M4"])
def test_the_model_forward_is_one_graph(preset):
    model = build_model(_cfg(preset), 10).train()
    x, up = torch.randn(4, 3, 64, 32), torch.randn(4, 3, 32, 32)
    explained = torch._dynamo.explain(model)(x, x, up, up)
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_no_recompilation_across_steps_and_runs_of_one_process():
    torch._dynamo.reset()
    counters.clear()
    x, up = torch.randn(4, 3, 64, 32), torch.randn(4, 3, 32, 32)
    for _run in range(2):  # two runs (new models) in one process, as RegDB's ten trials or a sweep are
        step = torch.compile(build_model(_cfg("M4"), 10).train(), backend="eager")
        for _ in range(2):
            step(x, x, up, up)
    assert counters["frames"]["total"] == 1 and counters["stats"]["unique_graphs"] == 1, dict(counters["frames"])


def test_the_phase_op_computes_what_phase_congruency_does():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = torch.rand(2, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    x = (rgb - mean) / std
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in fp32 whatever the context
        got = phase_congruency_rgb(x, mean, std, 1e-4)
    assert got.dtype == torch.float32 and got.shape == (2, 1, 32, 16)
    assert torch.allclose(got, phase_congruency(x * std + mean, eps=1e-4), atol=1e-6)


def test_the_criterion_compiles_to_one_graph_whatever_the_cameras_of_a_batch():
    """The loss is compiled too (train.compile): every term, the camera IMDAL included, is one graph, and
    batches whose cameras split differently (sizes of the one-vs-rest sets, a camera missing) reuse it."""
    from fakes import intra_output

    from aminet.losses import AMINetCriterion

    cfg = _cfg("M4").replace({"loss.imdal": "camera"})
    crit = AMINetCriterion(cfg, 4, cameras=([1, 2, 4, 5], [3, 6]))
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)

    def batch(cams_v, cams_i):
        v, i = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
        return intra_output(v, i, 4, g), (torch.tensor(cams_v), torch.tensor(cams_i))

    batches = [
        batch([1, 2, 4, 5] * 4, [3, 6] * 8),
        batch([1] * 10 + [2] * 6, [3] * 15 + [6]),  # camera 6 with one image: no IR split
        batch([4] * 16, [6] * 16),  # one camera per modality: nothing to align
    ]
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(crit, backend="eager")
    for out, cams in batches:
        got, got_terms = compiled(out, labels, cams)
        want, want_terms = crit(out, labels, cams)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_terms["imdal"], want_terms["imdal"])
    assert got_terms["imdal"].item() == 0.0
    assert counters["frames"]["total"] == 1 and counters["stats"]["unique_graphs"] == 1, dict(counters["frames"])
    assert not counters["graph_break"], dict(counters["graph_break"])
