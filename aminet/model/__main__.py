"""Model summary: ``python -m aminet.model [--preset M4 ...] [--set key=value ...]``.

Prints, per preset, the parameter count (trainable and total), the FLOPs of one evaluation embedding
(one image through every branch, at the configured size, 288x144 by default) and of one training step
forward pass per image pair. FLOPs are counted by ``torch.utils.flop_counter`` (multiply-add = 2 FLOPs);
the FFTs of phase congruency are not counted by it and are estimated separately (5 N log2 N per
transform)."""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from aminet.cli import ArgumentParser
from aminet.config import ConfigError, load_config
from aminet.imaging import upper_rows
from aminet.model.aminet import WeightsUnavailable, build_model
from aminet.presets import PRESETS, preset_overrides


def _fft_flops(model, h: int, w: int, uh: int) -> float:
    if model.pesam is None:
        return 0.0
    per = lambda hh, ww: 5 * hh * ww * math.log2(hh * ww)
    views = [(h, w)] + ([(uh, w)] if model.upper_body else [])
    # one forward FFT + norient * nscale inverse FFTs per view
    return sum(per(hh, ww) * (1 + 6 * 5) for hh, ww in views)


def summarise(cfg, num_classes: int = 395) -> dict[str, float]:
    model = build_model(cfg, num_classes).eval()
    h, w = cfg.data.height, cfg.data.width
    uh = cfg.data.upper_height or upper_rows(h, cfg.model.upper_body_ratio)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, h, w)
    with FlopCounterMode(display=False) as counter:
        model.extract(x, "visible")
    embed = counter.get_total_flops() + _fft_flops(model, h, w, uh)
    model.train()
    pair = torch.randn(2, 3, h, w)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pair, pair.clone())
    train_fwd = counter.get_total_flops() / 2 + 2 * _fft_flops(model, h, w, uh)
    return {
        "params_total": total,
        "params_trainable": trainable,
        "gflops_embed": embed / 1e9,
        "gflops_train_forward_per_pair": train_fwd / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m aminet.model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        action="append",
        default=None,
        help=f"ablation preset(s), repeatable: {', '.join(PRESETS)} (default: M0..M4)",
    )
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, repeatable (e.g. model.arch=resnet18)",
    )
    parser.add_argument("--classes", type=int, default=395, help="classifier size (default: SYSU-MM01's 395)")
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config, ["model.weights=none", *args.overrides])
        rows = (
            [[p] for p in (args.preset or ["M0", "M1", "M2", "M3", "M4"])]
            if not args.preset or all(p.startswith("M") for p in args.preset)
            else [args.preset]
        )
        up = base.data.upper_height or upper_rows(base.data.height, base.model.upper_body_ratio)
        print(
            f"input {base.data.height}x{base.data.width} (upper view {up}x{base.data.width}), "
            f"{base.model.arch}, {args.classes} classes"
        )
        print(
            f"{'preset':<22s} {'params':>10s} {'trainable':>10s} {'GFLOPs/embedding':>17s} {'GFLOPs/train pair fwd':>22s}"
        )
        for names in rows:
            cfg = base.replace(preset_overrides(names))
            s = summarise(cfg, args.classes)
            label = "+".join(names) + ("" if cfg.model.pesam else " (no PESAM)")
            print(
                f"{label:<22s} {s['params_total'] / 1e6:9.2f}M {s['params_trainable'] / 1e6:9.2f}M "
                f"{s['gflops_embed']:17.2f} {s['gflops_train_forward_per_pair']:22.2f}"
            )
    except (ConfigError, ValueError, WeightsUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
