"""A rehearsal at the real dataset sizes, on the CPU (issue 28, item 5): prints one line per stage.

    python benchmarks/rehearsal.py --work /tmp/rehearsal [--stages generate,cache,preflight,protocol,trial]

The synthetic benchmark at SYSU-MM01's and RegDB's real counts and the paper's input size:
* SYSU-MM01: 491 identities (296 train / 99 val / 96 test, the official split sizes), 19 images per camera
  (+-1) in the cameras each identity appears in (about 3 visible and 1.6 infrared of each identity's six):
  about 56 visible and 30 infrared images per identity, as the real training set (22,258 / 11,909 over 395
  identities), rendered at 288x144;
* RegDB: 412 identities x (10 visible + 10 thermal), 288x144.

Stages, each in its own process (its peak resident memory is read from ``wait4``; the page cache of the
memory-mapped image array is not resident memory of the process):
* ``generate``: rendering both layouts (time, files, bytes on disk);
* ``cache``: the decoded image cache of each at 288x144 (build time, size; then the time to open it);
* ``preflight``: the search's preflight (``search.plan.preflight``: layout, splits, weights, cache,
  fingerprint) on the built cache, and the driver process's memory after it;
* ``protocol``: the full SYSU-MM01 test protocol (all and indoor search, single- and multi-shot galleries,
  10 trials) and RegDB's (both directions, the 10 trials' test halves): image loading, distances, ranking
  and metrics, with a cheap stand-in extractor (a fixed random projection of pooled pixels to 2,048
  dimensions, so the figure is the protocol's own cost); plus the AMINet forward's throughput (ResNet-50,
  non-local, upper-body branch, eval mode, batch 64, 288x144) on 256 images, from which the model's share
  of a full evaluation is computed;
* ``trial``: one training step of the paper's configuration (ResNet-50 M4 preset, 8 identities x 4
  instances per modality, 288x144, fp32 on the CPU) through the trainer's own setup: its time and the
  trial process's peak memory.

Results go to ``WORK/rehearsal.json`` (one entry per stage, rewritten as stages finish).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSU = {"ids": 491, "images": 19}
REGDB = {"ids": 412, "images": 10}
SIZE = [288, 144]
ROUNDS = 4  # batches of 64 timed for the model's throughput
ARCH = "resnet50"


def use_toy_sizes() -> None:
    """``--toy``: every stage at a few seconds' size (tests/test_rehearsal.py runs it, so the script cannot rot)."""
    SYSU.update(ids=12, images=2)
    REGDB.update(ids=6, images=2)
    SIZE[:] = [64, 32]
    global ROUNDS, ARCH
    ROUNDS, ARCH = 1, "resnet18"


STAGES = ("generate", "cache", "preflight", "protocol", "trial")


def _roots(work: Path) -> dict[str, Path]:
    return {"sysu": work / "sysu-real", "regdb": work / "regdb-real"}


def _du(path: Path) -> tuple[int, int]:
    files, size = 0, 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, n))
    return files, size


def stage_generate(work: Path) -> dict:
    from aminet.data.synthetic import generate

    out = {}
    for layout, spec in (("sysu", SYSU), ("regdb", REGDB)):
        root = _roots(work)[layout]
        if root.is_dir():
            out[layout] = {"skipped": "exists"}
            continue
        t0 = time.perf_counter()
        generate(layout, root, ids=spec["ids"], images=spec["images"], height=SIZE[0], width=SIZE[1], workers=2)
        files, size = _du(root)
        out[layout] = {"seconds": round(time.perf_counter() - t0, 1), "files": files, "bytes": size}
    return out


def _counts(layout: str, root: Path) -> dict:
    """Training images per modality, queries and gallery sizes, as the benchmark's readers see them."""
    from aminet.config import load_config
    from aminet.data.builders import build_training_data, evaluation_set

    cfg = load_config(None, [f"data.dataset={layout}", f"data.root={root}", "data.purpose=final", "eval.trials=10"])
    train = build_training_data(cfg, root)
    ev = evaluation_set(cfg, root)
    probes = {}
    for p in ev.probes:
        probes.setdefault(p.setting, (len(p.query.paths), len(p.gallery.paths)))
    return {
        "train_ids": int(train.num_classes),
        "train_visible": len(train.visible.paths),
        "train_infrared": len(train.infrared.paths),
        "probes": len(ev.probes),
        "query_gallery_by_setting": probes,
    }


def stage_cache(work: Path) -> dict:
    from aminet.data.cache import ImageCache

    out = {}
    for layout, root in _roots(work).items():
        t0 = time.perf_counter()
        cache = ImageCache.open(root, SIZE[0], SIZE[1], work / "cache", progress=False)
        built = time.perf_counter() - t0
        t1 = time.perf_counter()
        ImageCache.open(root, SIZE[0], SIZE[1], work / "cache", progress=False)
        reopened = time.perf_counter() - t1
        _, size = _du(Path(cache.images.filename).parent)
        out[layout] = {
            "build_seconds": round(built, 1),
            "open_seconds": round(reopened, 3),
            "images": int(cache.images.shape[0]),
            "bytes": size,
            **_counts(layout, root),
        }
    return out


def stage_preflight(work: Path) -> dict:
    import resource

    from search.plan import parse_args, plan_search, preflight

    root = _roots(work)["sysu"]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    args = parse_args(
        [
            "--space",
            "sysu",
            "--budget",
            "full",
            "--data-root",
            str(root),
            "--storage",
            str(work / "ray"),
            "--mlflow-uri",
            f"sqlite:///{work / 'mlflow.db'}",
            *("--set", f"data.cache_dir={work / 'cache'}", "--set", f"data.height={SIZE[0]}"),
            *("--set", f"data.width={SIZE[1]}", "--set", "model.weights=none"),
        ]
    )
    t0 = time.perf_counter()
    plan = plan_search(args)
    planned = time.perf_counter() - t0
    t1 = time.perf_counter()
    plan = preflight(plan)
    return {
        "plan_seconds": round(planned, 2),
        "preflight_seconds": round(time.perf_counter() - t1, 2),
        "driver_rss_mib_before": round(before / 1024, 1),
        "driver_rss_mib_after": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def stage_protocol(work: Path) -> dict:
    import torch

    from aminet.config import load_config
    from aminet.data import splits
    from aminet.data.builders import evaluation_set
    from aminet.data.cache import ImageCache
    from aminet.evaluation.protocol import evaluate_set, metrics_from_frame
    from aminet.model.aminet import build_model
    from aminet.presets import preset_overrides

    torch.manual_seed(0)
    proj = torch.randn(3 * 8 * 4, 2048) / 10.0

    class StandIn(torch.nn.Module):
        """Pooled pixels through a fixed random projection: the protocol's cost without a network's."""

        def forward(self, x, modality=None):
            return {"bn": torch.nn.functional.adaptive_avg_pool2d(x.float(), (8, 4)).flatten(1) @ proj}

    out = {}
    for layout, modes in (("sysu", ("all", "indoor")), ("regdb", ("v2t", "t2v"))):
        root = _roots(work)[layout]
        over = [f"data.dataset={layout}", f"data.root={root}", "data.purpose=final", "eval.trials=10"]
        over += [f"data.height={SIZE[0]}", f"data.width={SIZE[1]}", "data.cache_dir=" + str(work / "cache")]
        cfg = load_config(None, over)
        cache = ImageCache.open(root, SIZE[0], SIZE[1], work / "cache", progress=False)
        if layout == "sysu":  # single-shot galleries (the config's protocol) and the 10-shot ones
            evalsets = [evaluation_set(cfg.replace({"eval.sysu_modes": list(modes)}), root)]
            evalsets.append(splits.sysu_eval(root, "final", modes, 10, shots=10))
        else:
            evalsets = [evaluation_set(cfg.replace({"data.regdb_trial": t}), root) for t in range(1, 11)]
        t0 = time.perf_counter()
        images = 0
        first = len({p for pr in evalsets[0].probes for p in (*pr.query.paths, *pr.gallery.paths)})
        for ev in evalsets:
            frame = evaluate_set(StandIn(), ev, cache.load, batch_size=256, device="cpu")
            if ev is evalsets[0]:
                summary = metrics_from_frame(frame, cfg)
            images += len({p for pr in ev.probes for p in (*pr.query.paths, *pr.gallery.paths)})
        out[layout] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "probes": sum(len(ev.probes) for ev in evalsets),
            "query_gallery": sorted({(len(p.query.paths), len(p.gallery.paths)) for ev in evalsets for p in ev.probes}),
            "images_embedded": images,
            "distinct_images_first_set": first,
            "stand_in_R1": round(summary.get("R1", float("nan")), 4),
        }
    cfg = load_config(
        None, [f"model.arch={ARCH}", "model.weights=none", f"data.height={SIZE[0]}", f"data.width={SIZE[1]}"]
    ).replace(preset_overrides(["M4"]))
    model = build_model(cfg, 296).eval()
    x = torch.randn(64 if ROUNDS > 1 else 8, 3, SIZE[0], SIZE[1])
    with torch.inference_mode():
        model.extract(x[:8], "infrared")
        t0 = time.perf_counter()
        n = 0
        for _ in range(ROUNDS):
            model.extract(x, "infrared")
            n += len(x)
        per_s = n / (time.perf_counter() - t0)
    sysu_images = out["sysu"]["distinct_images_first_set"]  # each test image once (the single-shot protocol)
    out["model"] = {
        "name": f"AMINet M4, {ARCH} with non-local blocks and the upper-body branch, eval forward, fp32, batch 64",
        "images_per_s": round(per_s, 2),
        "torch_threads": torch.get_num_threads(),
        "sysu_full_evaluation_model_seconds": round(sysu_images / per_s, 1),
    }
    return out


def stage_trial(work: Path) -> dict:
    import resource

    from aminet.config import load_config
    from aminet.engine.trainer import LossMeter, run_step, setup
    from aminet.presets import preset_overrides

    over = [
        f"data.root={_roots(work)['sysu']}",
        f"data.cache_dir={work / 'cache'}",
        f"data.height={SIZE[0]}",
        f"data.width={SIZE[1]}",
        f"model.arch={ARCH}",
        "model.weights=none",
        "train.device=cpu",
        "train.precision=fp32",
    ]
    cfg = load_config(None, over).replace(preset_overrides(["M4"]))
    t0 = time.perf_counter()
    r = setup(cfg, quiet=True)
    built = time.perf_counter() - t0
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    meter = LossMeter(1)
    times = []
    for batch in itertools.islice(r.loader.run(0, 0, cfg.train.epochs), 2):
        t1 = time.perf_counter()
        run_step(r, batch, meter, cfg.optim.lr)
        times.append(time.perf_counter() - t1)
    return {
        "setup_seconds": round(built, 1),
        "step_seconds": [round(t, 1) for t in times],
        "rss_mib_after_setup": round(rss_setup / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "batch": f"{cfg.data.ids_per_batch} ids x {cfg.data.instances} instances per modality",
        "steps_per_epoch": r.sampler.iters_per_epoch,
    }


class AnonPeak:
    """The peak of the process's anonymous resident memory (``RssAnon``: heap, tensors; not the file-backed
    pages of the memory-mapped image cache, which the OS can drop), sampled every 50 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])  # KiB
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def _child(stage: str, work: Path) -> int:
    import torch

    torch.set_num_threads(int(os.environ.get("REHEARSAL_THREADS", "2")))
    with AnonPeak() as anon:
        result = globals()[f"stage_{stage}"](work)
    result["peak_anon_mib"] = round(anon.peak / 1024, 1)
    (work / f".{stage}.json").write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="folder for the data, caches and results")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--toy", action="store_true", help="toy sizes (a smoke test of the script)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.toy:
        use_toy_sizes()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        return _child(args.child, work)
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        parser.error(f"--stages: unknown {', '.join(bad)} (choose from {', '.join(STAGES)})")
    results_file = work / "rehearsal.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["host"] = f"{platform.node()} ({os.cpu_count()} CPUs)"
    for stage in stages:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--work", str(work), "--child", stage, *(["--toy"] if args.toy else [])],
            cwd=REPO,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            print(f"rehearsal: stage {stage} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        entry = json.loads((work / f".{stage}.json").read_text())
        entry["wall_seconds"] = round(time.perf_counter() - t0, 1)
        entry["process_peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
        results[stage] = entry
        results_file.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{stage:10s} {json.dumps(entry)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
