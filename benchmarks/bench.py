"""Benchmarks that print figures for this machine: ``python benchmarks/bench.py [all|eval|data|...] [--repeats N]``.

Outside the installed package (as timm keeps its benchmark script): run it from a checkout.

``model``: forward+backward time of one training step (model + all losses) for each ablation preset,
at 288x144 with ResNet-50 (CPU: fp32, 8 + 8 images by default; GPU: bf16 autocast, channels-last,
64 + 64), and the share of the step spent in PESAM and in AMK-MMD.

``data``: the training input pipeline at 288x144 and 64 + 64 images per batch: the host side alone
(cross-modal sampling P x K visible + K infrared and the gather from the memory-mapped cache: all a
host does when the GPU augments), the usual per-sample torchvision pipeline alone (main process and
DataLoader workers), and batches/s of the whole pipeline (host side, host-to-device copy, device-side
augmentation of both halves with the upper-body views) on the CPU and, when there is one, the GPU.
The data is the synthetic SYSU-layout benchmark.

``eval``: ranking time of the SYSU-MM01 10-trial protocol (3,803 queries x 301 gallery images, both
modes use the same shapes) and of one RegDB direction (2,060 x 2,060), on random features of the real
sizes, with the distance matrix computed from 2048-d L2-normalised features as the protocol does.
Figures are medians over repeats; the first (warm-up) run is discarded.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``python benchmarks/bench.py``: the ``benchmarks`` package is the checkout's
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser  # noqa: E402
from aminet.evaluation.metrics import regdb_metrics, sysu_metrics  # noqa: E402


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _features(n: int, dim: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=gen).to(device), dim=1)


def _mmd_step(b: int, dim: int, multipliers: list[float], device: torch.device) -> Callable[[], None]:
    """One IDAL + IMDAL forward+backward on random (b, dim) visible and infrared features."""
    from aminet.losses import kernel_mmd_terms

    fv = torch.randn(b, dim, device=device, requires_grad=True)
    fi = torch.randn(b, dim, device=device, requires_grad=True)
    half = b // 2

    def step() -> None:
        loss = kernel_mmd_terms(fv, fi, multipliers).sum() + 0.5 * (
            kernel_mmd_terms(fv[:half], fv[half:], multipliers).sum()
            + kernel_mmd_terms(fi[:half], fi[half:], multipliers).sum()
        )
        loss.backward()

    return step


def bench_eval(repeats: int, device: torch.device, sizes: dict[str, int]) -> list[tuple[str, float, str]]:
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    nq, ng, n_ids, dim = sizes["sysu_query"], sizes["sysu_gallery"], sizes["sysu_ids"], sizes["dim"]
    q_pids = torch.as_tensor(rng.integers(0, n_ids, nq), device=device)
    q_cams = torch.as_tensor(rng.choice([3, 6], nq), device=device)
    g_sets = []
    for _ in range(10):
        g_pids = torch.as_tensor(np.sort(rng.integers(0, n_ids, ng)), device=device)
        g_cams = torch.as_tensor(rng.choice([1, 2, 4, 5], ng), device=device)
        g_sets.append((g_pids, g_cams))
    q = _features(nq, dim, device, gen)
    gs = [_features(ng, dim, device, gen) for _ in range(10)]
    dists = [-(q @ g.T) for g in gs]

    def sysu_rank() -> None:
        for d, (gp, gc) in zip(dists, g_sets):
            sysu_metrics(d, q_pids, gp, q_cams, gc)

    def sysu_full() -> None:
        for g, (gp, gc) in zip(gs, g_sets):
            sysu_metrics(-(q @ g.T), q_pids, gp, q_cams, gc)

    nr = sizes["regdb"]
    r_pids = torch.as_tensor(np.repeat(np.arange(nr // 10), 10), device=device)
    rv, rt = _features(nr, dim, device, gen), _features(nr, dim, device, gen)
    r_dist = -(rv @ rt.T)

    out = [
        (f"SYSU 10-trial ranking ({nq}x{ng}, distances given)", _median_time(sysu_rank, repeats), "s"),
        (f"SYSU 10-trial distances + ranking ({dim}-d)", _median_time(sysu_full, repeats), "s"),
        (
            f"RegDB one direction ranking ({nr}x{nr})",
            _median_time(lambda: regdb_metrics(r_dist, r_pids, r_pids), repeats),
            "s",
        ),
    ]
    return out


def bench_data(repeats: int, devices: list[torch.device], tiny: bool) -> list[tuple[str, float, str]]:
    import tempfile

    from aminet.data import synthetic
    from aminet.data.augment import DeviceAugment
    from aminet.data.cache import ImageCache
    from aminet.data.sampler import BatchLoader, CrossModalSampler
    from aminet.data.splits import sysu_train

    h, w, p, k, steps = (288, 144, 8, 8, 20) if not tiny else (32, 16, 2, 2, 3)
    with tempfile.TemporaryDirectory() as tmp:
        if tiny:
            root = synthetic.generate("sysu", f"{tmp}/sysu", ids=8, images=1, height=32, width=16, workers=1)
        else:
            root = synthetic.ensure_default("sysu", quiet=True)
        cache = ImageCache.open(root, h, w, cache_dir=f"{tmp}/cache" if tiny else None, progress=False)
        train = sysu_train(root, "final")
        rows_v, rows_i = cache.indices(train.visible.paths), cache.indices(train.infrared.paths)
        sampler = CrossModalSampler(train.labels_visible, train.labels_infrared, p, k, seed=0, iters_per_epoch=steps)
        aug = DeviceAugment()
        out = []
        # What the host does per batch when augmentation runs on a GPU: sampling and the gather from the
        # memory map (plus page-locking where there is a GPU). Measured on the CPU alone, it bounds the
        # images/s this pipeline can feed any device.
        host = BatchLoader(cache.images, rows_v, rows_i, sampler, devices[-1])

        def host_once() -> None:
            for _ in host.run(0, 0, 1):
                pass

        t = _median_time(host_once, repeats)
        out.append(
            (
                f"host side of a device-augmented batch (sample + gather{' + pin' if devices[-1].type == 'cuda' else ''}"
                f"), {h}x{w}, one thread",
                2 * p * k * steps / t,
                "img/s",
            )
        )
        # The usual code path's input pipeline alone: torchvision transforms per sample, in the main process
        # (per-core rate) and in DataLoader workers.
        from benchmarks.train_pipeline import baseline_loader, baseline_pad

        for workers in sorted({0, min(4, os.cpu_count() or 1)}):

            def baseline_once() -> None:
                for _ in baseline_loader(
                    cache.images, rows_v, rows_i, sampler, steps, pad=baseline_pad(h), workers=workers
                ):
                    pass

            t = _median_time(baseline_once, repeats)
            where = "main process" if workers == 0 else f"{workers} DataLoader workers"
            out.append((f"baseline per-sample CPU augmentation, {h}x{w}, {where}", 2 * p * k * steps / t, "img/s"))
        for device in devices:
            loader = BatchLoader(cache.images, rows_v, rows_i, sampler, device)
            gen = torch.Generator().manual_seed(0)

            def run_once() -> None:
                for batch in loader.run(0, 0, 1):
                    aug(batch.visible, True, gen)
                    aug(batch.infrared, False, gen)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            t = _median_time(run_once, repeats)
            out.append(
                (f"sampling+gather+augment, {h}x{w}, {p * k}+{p * k} per batch, {device.type}", steps / t, "batches/s")
            )
        return out


def bench_model(repeats: int, device: torch.device, tiny: bool, batch: int | None) -> list[tuple[str, float, str]]:
    from aminet.config import load_config
    from aminet.losses import AMINetCriterion
    from aminet.model.aminet import build_model
    from aminet.presets import preset_overrides

    if tiny:
        size, arch, b = ["data.height=64", "data.width=32"], "resnet18", batch or 4
    else:
        size, arch, b = [], "resnet50", batch or (64 if device.type == "cuda" else 8)
    base = load_config(None, ["model.weights=none", f"model.arch={arch}", f"data.instances={min(4, b)}", *size])
    h, w = base.data.height, base.data.width
    gen = torch.Generator().manual_seed(0)
    vis = torch.randn(b, 3, h, w, generator=gen).to(device)
    ir = torch.randn(b, 3, h, w, generator=gen).to(device)
    labels = (torch.arange(b) // min(4, b)).to(device)
    cams = (np.arange(b) % 4 + 1, np.arange(b) % 2 * 3 + 3)  # SYSU's visible cams 1..4 / infrared 3, 6 (host)
    use_amp = device.type == "cuda"
    if use_amp:
        vis, ir = vis.contiguous(memory_format=torch.channels_last), ir.contiguous(memory_format=torch.channels_last)
    out: list[tuple[str, float, str]] = []
    times: dict[str, float] = {}
    for name in ("M0", "M1", "M2", "M3", "M4", "M4+pesam_off"):
        cfg = base.replace(preset_overrides(name.split("+")))
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=max(2, b)).to(device).train()
        crit = AMINetCriterion(cfg, instances=min(4, b)).to(device)
        if use_amp:
            model = model.to(memory_format=torch.channels_last)

        def step() -> None:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, _ = crit(model(vis, ir), labels, cams)
            loss.backward()
            model.zero_grad(set_to_none=True)

        times[name] = _median_time(step, repeats)
        out.append(
            (
                f"{name} forward+backward, {arch} {h}x{w}, {b}+{b} images, {device.type}"
                + (" bf16" if use_amp else " fp32"),
                times[name],
                "s/step",
            )
        )
    out.append(
        (
            "PESAM share of the M4 step (M4 vs M4 without PESAM)",
            100 * (times["M4"] - times["M4+pesam_off"]) / times["M4"],
            "%",
        )
    )
    t_mmd = _median_time(_mmd_step(b, 512 if arch == "resnet18" else 2048, base.loss.mmd_multipliers, device), repeats)
    out.append(("AMK-MMD (IDAL + IMDAL, forward+backward) share of the M4 step", 100 * t_mmd / times["M4"], "%"))
    return out


def _cpu_bf16_units() -> str:
    """Which native bf16 instructions this CPU has (they decide whether CPU bf16 autocast pays)."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return " + ".join(found) if found else "none"


def bench_train(
    device: torch.device, tiny: bool, batch_ids: int | None, steps: int | None, compile_too: bool
) -> list[tuple[str, float, str]]:
    """Full training steps, this pipeline vs the per-sample DataLoader baseline (see benchmarks/train_pipeline.py)."""
    import tempfile

    from aminet.data import synthetic
    from benchmarks.train_pipeline import train_throughput

    cuda = device.type == "cuda"
    if tiny:  # 64x32: CPU bf16 needs stride-2 maps wider than 2 columns (see engine.trainer._check_cpu_bf16)
        h, w, arch, ids, k, n = 64, 32, "resnet18", 2, 2, 2
    else:
        h, w, arch, k = 288, 144, "resnet50", 4
        ids = batch_ids or (16 if cuda else 2)  # 64 + 64 on a GPU; 8 + 8 on a CPU (a 64 + 64 step takes minutes)
        n = steps or (20 if cuda else 3)
    out: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = (
            synthetic.generate("sysu", f"{tmp}/sysu", ids=8, images=2, height=64, width=32, workers=1) if tiny else None
        )
        kw = dict(
            device=device,
            steps=n,
            height=h,
            width=w,
            ids=ids,
            instances=k,
            arch=arch,
            root=root,
            cache_dir=f"{tmp}/cache" if tiny else None,
            warmup=1 if tiny else 2,
        )
        peaks: dict[str, float] = {}

        def measured(name: str, *args, **kwargs):
            """``train_throughput`` and, on a GPU, the run's peak allocated memory (MiB)."""
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            r = train_throughput(*args, **kwargs)
            if cuda:
                peaks[name] = torch.cuda.max_memory_allocated(device) / 2**20
            return r

        for preset in ("M0", "M4"):
            base = measured(f"{preset} baseline", preset, "baseline", **kw)
            fast = measured(f"{preset} aminet", preset, "aminet", **kw)
            label = f"{preset} {arch} {h}x{w}, {ids * k}+{ids * k}, {device.type}"
            out.append(
                (f"train {label}, baseline ({base.precision}, per-sample DataLoader)", base.images_per_s, "img/s")
            )
            out.append(
                (
                    f"train {label}, aminet ({fast.precision}{', channels-last' if cuda else ''})",
                    fast.images_per_s,
                    "img/s",
                )
            )
            out.append(
                (
                    f"  speed-up over baseline; data wait {100 * base.data_wait_share:.0f}% -> "
                    f"{100 * fast.data_wait_share:.0f}% of the time",
                    fast.images_per_s / base.images_per_s,
                    "x",
                )
            )
            runs = [("baseline", base), ("aminet", fast)]
            if not cuda:  # the CPU's bf16 path (train.precision=bf16): fast where the CPU has bf16 units
                half = train_throughput(preset, "aminet", cpu_bf16=True, **kw)
                out.append((f"train {label}, aminet (bf16, channels-last)", half.images_per_s, "img/s"))
                out.append(
                    (
                        f"  bf16 speed-up over baseline (train.precision=bf16; CPU bf16: {_cpu_bf16_units()})",
                        half.images_per_s / base.images_per_s,
                        "x",
                    )
                )
            if compile_too:
                comp = measured(f"{preset} aminet + compile", preset, "aminet", compile=True, **kw)
                out.append((f"train {label}, aminet + torch.compile", comp.images_per_s, "img/s"))
                out.append(("  torch.compile speed-up over baseline", comp.images_per_s / base.images_per_s, "x"))
                runs.append(("aminet + compile", comp))
            for name, r in runs:
                if f"{preset} {name}" in peaks:
                    out.append((f"  peak GPU memory allocated, {name}", peaks[f"{preset} {name}"], "MiB"))
                if r.gpu_util is not None:
                    out.append(
                        (f"  GPU utilisation, {name} (lowest 100 ms sample {r.gpu_util_min:.0f}%)", r.gpu_util, "%")
                    )
    return out


def bench_extract(repeats: int, device: torch.device, tiny: bool) -> list[tuple[str, float, str]]:
    """Feature extraction (the other half of evaluation): images/s of the eval forward pass, and the
    extraction time of the SYSU-MM01 (3,803 queries + 10 x 301 gallery) and RegDB (2 x 2,060) test sets."""
    from aminet.config import load_config
    from aminet.evaluation.protocol import extract_features
    from aminet.model.aminet import build_model

    if tiny:
        size, arch, n = ["data.height=32", "data.width=16"], "resnet18", 8
    else:
        size, arch, n = [], "resnet50", (512 if device.type == "cuda" else 32)
    cfg = load_config(None, ["model.weights=none", f"model.arch={arch}", *size])
    model = build_model(cfg, num_classes=10).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    images = np.random.default_rng(0).integers(0, 256, (n, cfg.data.height, cfg.data.width, 3), dtype=np.uint8)
    use_amp = device.type == "cuda"

    def run() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            extract_features(model, images, "visible", batch_size=256, device=device)

    t = _median_time(run, repeats)
    rate = n / t
    sysu_images = 3803 + 10 * 301  # queries once; the gallery of every trial (each trial draws new images)
    regdb_images = 2 * 2060
    return [
        (
            f"feature extraction, {arch} {cfg.data.height}x{cfg.data.width}, {device.type}"
            + (" bf16" if use_amp else " fp32"),
            rate,
            "img/s",
        ),
        ("  SYSU-MM01 test set (3,803 + 10 x 301 images) at that rate", sysu_images / rate, "s"),
        ("  RegDB one trial (2 x 2,060 images) at that rate", regdb_images / rate, "s"),
    ]


def bench_phase(repeats: int, device: torch.device, tiny: bool) -> list[tuple[str, float, str]]:
    """Phase congruency (PESAM's structure map) per training batch half, and AMK-MMD per step."""
    from aminet.model.phase import phase_congruency

    b, h, w = (4, 32, 16) if tiny else ((64, 288, 144) if device.type == "cuda" else (8, 288, 144))
    x = torch.rand(b, 1, h, w, device=device)
    t_pc = _median_time(lambda: phase_congruency(x), repeats)
    dim = 16 if tiny else 2048
    t_mmd = _median_time(_mmd_step(b, dim, [0.25, 0.5, 1.0, 2.0, 4.0], device), repeats)
    return [
        (f"phase congruency, {b} images {h}x{w}, {device.type}", 1000 * t_pc, "ms/batch"),
        (f"AMK-MMD IDAL + IMDAL forward+backward, {b}+{b} x {dim}-d, {device.type}", 1000 * t_mmd, "ms/step"),
    ]


def bench_search(tiny: bool) -> list[tuple[str, float, str]]:
    """Search overhead per trial and memory per concurrent trial: run in a subprocess (``benchmarks/search_stack.py``)
    because ``aminet`` itself never imports Ray."""
    import json
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent / "search_stack.py"
    if not script.is_file():
        return [("search overhead: benchmarks/search_stack.py not found", float("nan"), "")]
    cmd = [sys.executable, str(script), "--json"] + (["--tiny"] if tiny else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"benchmarks/search_stack.py failed: {res.stderr.strip().splitlines()[-1:]}")
    return [tuple(row) for row in json.loads(res.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python benchmarks/bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "eval", "extract", "data", "model", "train", "phase", "search"],
        help="which benchmark to run (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median is printed)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (for tests): figures are not meaningful")
    parser.add_argument(
        "--batch", type=int, default=None, help="model bench: images per modality (default 8 on CPU, 64 on GPU)"
    )
    parser.add_argument(
        "--train-ids",
        type=int,
        default=None,
        help="train bench: identities per batch (x 4 visible + 4 infrared; default 16 on GPU, 2 on CPU)",
    )
    parser.add_argument(
        "--train-steps", type=int, default=None, help="train bench: timed steps (default 20 GPU, 3 CPU)"
    )
    parser.add_argument("--compile", action="store_true", help="train bench: also time torch.compile")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON (name, value, unit)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.batch is not None and args.batch < 4:
        parser.error(f"--batch must be >= 4 (IMDAL splits each identity's images in two), got {args.batch}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device on this machine")
    device = torch.device(args.device)
    sizes = {"sysu_query": 3803, "sysu_gallery": 301, "sysu_ids": 96, "dim": 2048, "regdb": 2060}
    if args.tiny:
        sizes = {"sysu_query": 60, "sysu_gallery": 24, "sysu_ids": 12, "dim": 16, "regdb": 40}
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"torch {torch.__version__}"
    )
    figures = []
    if args.what in ("all", "eval"):
        figures += bench_eval(args.repeats, device, sizes)
    if args.what in ("all", "data"):
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        figures += bench_data(args.repeats, devices, args.tiny)
    if args.what in ("all", "extract"):
        figures += bench_extract(args.repeats, device, args.tiny)
    if args.what in ("all", "phase"):
        figures += bench_phase(args.repeats, device, args.tiny)
    if args.what in ("all", "model"):
        figures += bench_model(args.repeats, device, args.tiny, args.batch)
    if args.what in ("all", "train"):
        figures += bench_train(device, args.tiny, args.train_ids, args.train_steps, args.compile)
    if args.what in ("all", "search"):
        figures += bench_search(args.tiny)
    for name, value, unit in figures:
        print(f"{name:<78s} {value:10.4f} {unit}")
    if args.json:  # for scripts (scripts/gpu_check.py): the figures without parsing the printed table
        import json

        Path(args.json).write_text(json.dumps([{"name": n, "value": v, "unit": u} for n, v, u in figures], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
