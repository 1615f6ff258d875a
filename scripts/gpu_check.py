#!/usr/bin/env python
"""Every CUDA path once, for the day a GPU machine is lent: one summary line per stage.

    bash scripts/gpu_check.sh                 # on a bare GPU machine: installs the project, then this script
    python scripts/gpu_check.py               # installed already
    python scripts/gpu_check.py --dry         # the same stages on the CPU at toy size (CI runs this)

Stages: the environment; a bf16 training step of each ablation preset through the trainer (with its
evaluation on validation identities); an fp16 step with the gradient scaler; the model's graph breaks and
a compiled run's recompilations (dynamo counters); phase congruency on the GPU against the CPU; both test
protocols on a tiny synthetic set; a 2-trial search with half a GPU per trial; ``experiments/run.py`` for
2 epochs; ``pytest tests/test_gpu.py``; ``benchmarks/bench.py train`` at the paper's batch (8 identities x
4 + 4 images) with images/s and peak memory. A stage that fails prints FAIL with its last error line and
the others still run; the exit status is 1 if any failed. With ``$OUT`` set, the lines go to
``$OUT/gpu_check.txt`` and the figures to ``$OUT/gpu_check.json`` too. The whole run is sized to finish within
8 minutes on one H100 (the search and the bench are the long stages), the stages a torch-only node runs within
4; the last line says both sums against those budgets (``OVER`` where one is exceeded on a GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PRESETS = ("M0", "M1", "M2", "M3", "M4")
TINY = {
    "model.arch": "resnet18",
    "model.weights": "none",
    "model.last_stride": 1,
    "data.height": 64,
    "data.width": 32,
    "data.upper_height": 32,
    "data.pad": 2,
    "data.ids_per_batch": 2,
    "data.instances": 2,
    "data.iters_per_epoch": 2,
    "optim.optimizer": "adam",
    "optim.lr": 0.001,
    "optim.backbone_lr_mult": 1.0,
    "optim.warmup_share": 0.0,
    "optim.milestone_shares": "[]",
    "train.epochs": 1,
    "train.eval_every": 1,
    "eval.trials": 1,
}


class Check:
    def __init__(self, dry: bool, out: Path | None) -> None:
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.out = out
        self.lines: list[str] = []
        self.figures: dict[str, dict] = {}
        self.failed = 0
        self.only: set[str] = set()  # --only: the stages to run (empty: all)
        self.names: list[str] = []  # every stage's name, run or not
        self.seconds = {"all": 0.0, "torch-only": 0.0}  # the budgets' sums (BUDGET_S)

    def stage(self, name: str, fn) -> None:
        self.names.append(name)
        if self.only and name not in self.only:
            return
        t0 = time.perf_counter()
        try:
            status, detail, figures = fn()
        except Exception as exc:  # noqa: BLE001 - one stage's failure is reported and the others run
            status, figures = "FAIL", {}
            detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - t0
        self.seconds["all"] += seconds
        if not set(getattr(fn, "needs", ())) & {"ray", "optuna", "mlflow"}:
            self.seconds["torch-only"] += seconds
        self.failed += status == "FAIL"
        line = f"{name:<24s} {status:<5s} {seconds:7.1f} s  {detail}"
        print(line, flush=True)
        self.lines.append(line)
        self.figures[name] = {"status": status, "seconds": round(seconds, 2), **figures}

    def write(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.txt").write_text("\n".join(self.lines) + "\n")
        (self.out / "gpu_check.json").write_text(json.dumps(self.figures, indent=1) + "\n")


def _overrides(extra: dict | None = None) -> list[str]:
    return [f"{k}={v}" for k, v in {**TINY, **(extra or {})}.items()]


def missing(*modules: str) -> list[str]:
    """The modules of ``modules`` this Python cannot import (a GPU node may have torch and nothing else)."""
    import importlib.util

    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except (ImportError, ValueError):
            out.append(m)
    return out


def needs(*modules: str):
    """A stage wrapper: SKIP with the reason when a module the stage needs is not importable."""

    def wrap(fn):
        def stage():
            gone = missing(*modules)
            if gone:
                return "skip", f"needs {', '.join(gone)}, not installed here (a torch-only node)", {}
            return fn()

        stage.needs = modules
        return stage

    return wrap


# Issue 39's budgets on one GPU: the whole check, and the stages a torch-only node runs (a GPU node without Ray,
# Optuna or MLflow). The summary line says each sum against its budget; over budget is said, not failed.
BUDGET_S = {"all": 480.0, "torch-only": 240.0}


def budget_line(seconds: dict[str, float], dry: bool) -> str:
    parts = []
    for key, budget in BUDGET_S.items():
        over = "" if dry or seconds[key] <= budget else " OVER"
        parts.append(f"{key} {seconds[key]:.0f} s (budget on one GPU {budget:.0f} s{over})")
    return "; ".join(parts)


def _child_env() -> dict[str, str]:
    """The children's environment: the repository first on an absolute PYTHONPATH (the stages run from a
    temporary folder, where a relative entry such as ``.`` would name the wrong folder)."""
    parts = [str(REPO)] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONUNBUFFERED="1", RAY_DISABLE_DOCKER_CPU_WARNING="1", PYTHONPATH=os.pathsep.join(parts))


def recompilations() -> int:
    """Recompilations dynamo made since its last reset: for each code object that failed a guard, its cache
    entries beyond the first (dynamo keeps no counter of them: ``counters['stats']`` has none)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    from torch._dynamo.utils import guard_failures

    return sum(max(0, len(_debug_get_cache_entry_list(code)) - 1) for code in list(guard_failures))


def _run(cmd: list[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    env = _child_env()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if done.returncode != 0:
        # the command's own one-line error where it printed one (Ray may log after it), else its last line
        lines = [line for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("error:")] or lines[-1:] or ["(no output)"]
        raise RuntimeError(f"{' '.join(cmd[1:3])} exited {done.returncode}: {said[-1][:300]}")
    return done


def _environment(dev: str):
    import torch

    if dev == "cpu":
        return "ok", f"torch {torch.__version__}, CPU (dry run)", {"torch": torch.__version__}
    name = torch.cuda.get_device_name(0)
    cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
    bf16 = torch.cuda.is_bf16_supported()
    figures = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": name, "capability": cap}
    return "ok", f"torch {torch.__version__} CUDA {torch.version.cuda}, {name} (sm {cap}), bf16 {bf16}", figures


def _train_preset(dev: str, tmp: Path, sysu: Path, preset: str, precision: str):
    """A short training run of an ablation preset at ``precision`` on the tiny benchmark."""
    from aminet.config import load_config
    from aminet.engine.trainer import device_summary, train
    from aminet.presets import preset_overrides

    cfg = load_config(
        None,
        [
            f"data.root={sysu}",
            f"data.cache_dir={tmp / 'cache'}",
            f"train.device={dev}",
            f"train.precision={precision}",
            *_overrides(),
            *[f"{k}={v}" for k, v in preset_overrides([preset]).items()],
        ],
    )
    if dev == "cpu" and precision == "fp16":
        return "skip", "fp16 autocast with a gradient scaler is a GPU path", {}
    res = train(cfg, None, None, quiet=True)
    loss = res.epochs[-1]["loss"]
    if not loss == loss:  # NaN
        raise RuntimeError(f"non-finite loss {loss}")
    return (
        "ok",
        f"{device_summary(cfg)}: loss {loss:.3f}, val R1 {100 * res.metrics['R1']:.1f}",
        {"loss": loss, "R1": res.metrics["R1"]},
    )


def _compile_counters(dev: str, tmp: Path, sysu: Path):
    """Graphs and graph breaks of the model's forward and of the criterion; on a GPU, recompilations of a
    compiled 2-epoch run."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from aminet.config import load_config
    from aminet.engine.trainer import train
    from aminet.model.aminet import build_model

    cfg = load_config(None, [f"train.device={dev}", *_overrides()])
    model = build_model(cfg, 10).to(dev).eval()
    x = torch.randn(4, 3, 64, 32, device=dev)
    up = torch.randn(4, 3, 32, 32, device=dev)
    explained = torch._dynamo.explain(model)(x, x, up, up)
    from aminet.losses import AMINetCriterion

    out = model.train()(x, x, up, up)
    crit = AMINetCriterion(cfg.replace({"loss.imdal": "camera"}), 4, cameras=([1, 2, 4, 5], [3, 6])).to(dev)
    labels = torch.arange(4, device=dev)
    cams = (torch.tensor([1, 2, 4, 5], device=dev), torch.tensor([3, 6, 3, 6], device=dev))
    crit_explained = torch._dynamo.explain(crit)(out, labels, cams)
    breaks = explained.graph_break_count + crit_explained.graph_break_count
    figures = {
        "graph_breaks": explained.graph_break_count,
        "graphs": explained.graph_count,
        "criterion_graph_breaks": crit_explained.graph_break_count,
        "criterion_graphs": crit_explained.graph_count,
    }
    detail = (
        f"model forward: {explained.graph_count} graph(s), {explained.graph_break_count} break(s); "
        f"criterion: {crit_explained.graph_count} graph(s), {crit_explained.graph_break_count} break(s)"
    )
    if dev == "cuda":
        counters.clear()
        torch._dynamo.reset()
        train(
            load_config(
                None,
                [f"data.root={sysu}", f"data.cache_dir={tmp / 'cache'}", "train.device=cuda", "train.compile=true",
                 *_overrides({"train.epochs": 2, "train.eval_every": 2})],
            ),
            None,
            None,
            quiet=True,
        )  # fmt: skip
        recompiles = recompilations()
        figures["recompiles"] = recompiles
        detail += f"; a compiled 2-epoch run: {recompiles} recompilation(s)"
    return ("ok" if breaks == 0 else "warn"), detail, figures


def trial_devices(db: Path) -> list[str]:
    """The device type each trial of a search trained on (``cuda``, ``cpu``), from the ``aminet.device`` tag
    its MLflow run carries (the trainer's own ``device_summary``, e.g. ``cuda:0 (NVIDIA H100) bf16``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("aminet-search")
    runs = client.search_runs([exp.experiment_id], "tags.`aminet.role` = 'trial'") if exp else []
    return sorted(r.data.tags.get("aminet.device", "?").split(":")[0].split()[0] for r in runs)


def main(argv: list[str] | None = None) -> int:
    from aminet.cli import ArgumentParser

    p = ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="run every stage on the CPU at toy size (CI)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.txt / .json (default $OUT)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STAGE",
        help="run this stage only (repeatable; the names of gpu_check.txt's first column); default every stage",
    )
    args = p.parse_args(argv)
    import torch

    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device visible to torch (use --dry on a CPU machine)", file=sys.stderr)
        return 2
    check = Check(args.dry, Path(args.out) if args.out else None)
    check.only = set(args.only)
    tmp = Path(tempfile.mkdtemp(prefix="aminet-gpu-check-"))
    from aminet.data import synthetic

    sysu = synthetic.generate("sysu", tmp / "SYSU", ids=10, images=2, height=64, width=32, seed=0, workers=1)
    regdb = synthetic.generate("regdb", tmp / "RegDB", ids=10, images=2, height=64, width=32, seed=0, workers=1)
    dev = check.device

    check.stage("environment", lambda: _environment(dev))

    from aminet.config import load_config

    for preset in PRESETS:
        check.stage(f"train bf16 {preset}", partial(_train_preset, dev, tmp, sysu, preset, "bf16"))
    check.stage("train fp16 + scaler", partial(_train_preset, dev, tmp, sysu, "M4", "fp16"))

    check.stage("compile", partial(_compile_counters, dev, tmp, sysu))

    def phase():
        from aminet.model.phase import phase_congruency

        x = torch.rand(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
        ref = phase_congruency(x.double())
        got = phase_congruency(x.to(dev)).double().cpu()
        diff = float((got - ref).abs().max())
        status = "ok" if diff < 1e-3 else "FAIL"
        return status, f"{dev} float32 against CPU float64: max abs difference {diff:.2e}", {"max_abs_diff": diff}

    check.stage("phase congruency", phase)

    def protocols():
        from aminet.evaluation.trained import evaluate_benchmarks
        from aminet.model.aminet import build_model

        cfg = load_config(None, [f"train.device={dev}", *_overrides()])
        torch.manual_seed(0)
        model = build_model(cfg, 10).eval()
        roots, trials = {"sysu": sysu, "regdb": regdb}, {"regdb": [1, 2]}
        frame = evaluate_benchmarks(model.to(dev), cfg, roots, trials=trials, device=dev)
        ref = evaluate_benchmarks(model.cpu(), cfg, roots, trials=trials, device="cpu")
        cols = [c for c in ("R1", "R10", "R20", "mAP", "mINP") if c in frame.columns]
        if len(frame) != len(ref) or not cols:
            raise RuntimeError(f"{len(frame)} rows on {dev}, {len(ref)} on the CPU; columns {list(frame.columns)}")
        diff = float((frame[cols].astype(float).values - ref[cols].astype(float).values).__abs__().max())
        status = "ok" if diff <= 0.5 else "FAIL"  # percentage points: one rank flip in a tiny gallery is ~0.4
        return (
            status,
            f"SYSU all + indoor x 10 trials, RegDB 2 trials x 2 directions ({len(frame)} rows): {dev} against the "
            f"CPU, max |difference| {diff:.3f} over {', '.join(cols)}",
            {"rows": len(frame), "max_abs_diff": diff},
        )

    check.stage("test protocols", protocols)

    @needs("ray", "optuna", "mlflow")
    def search():
        sets = [a for k, v in {**TINY, "train.epochs": 2, "train.eval_every": 1, "data.cache_dir": tmp / "cache"}.items()
                for a in ("--set", f"{k}={v}")]  # fmt: skip
        gpu = ["--gpus-per-trial", "0.5", "--cpus-per-trial", "1"] if dev == "cuda" else []
        cmd = [
            sys.executable, str(REPO / "search" / "run.py"), "--space", "sysu", "--quick", "--data-root", str(sysu),
            "--regdb-root", str(regdb), "--num-samples", "2", "--name", "gpu-check", "--storage", str(tmp / "ray"),
            "--mlflow-uri", f"sqlite:///{tmp / 'search.db'}", "--reseeds", "0", "--no-register", "--verbose", "0",
            *gpu, *sets,
        ]  # fmt: skip
        done = _run(cmd, 420, tmp)
        selected = next((line for line in done.stdout.splitlines() if line.startswith("selected")), "selected: ?")
        devices = trial_devices(tmp / "search.db")
        if dev == "cuda" and (not devices or any(d != "cuda" for d in devices)):
            raise RuntimeError(f"the trials did not all train on the GPU: train/device {devices}")
        return "ok", f"2 trials{' at 0.5 GPU each' if gpu else ''} on {devices}; {selected[:100]}", {"devices": devices}

    check.stage("search 2 trials", search)

    @needs("mlflow")
    def experiment():
        import yaml

        cfg = {"name": "gpu-check", "data": {"dataset": "sysu", "purpose": "final"}}
        (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        sets = [
            a for o in _overrides({"train.epochs": 2, "train.eval_every": 2, "eval.trials": 2}) for a in ("--set", o)
        ]
        cmd = [
            sys.executable, str(REPO / "experiments" / "run.py"), str(tmp / "tiny.yaml"), "--data-root", str(sysu),
            "--mlflow-uri", f"sqlite:///{tmp / 'exp.db'}", "--set", f"train.device={dev}", *sets,
        ]  # fmt: skip
        done = _run(cmd, 300, tmp)
        table = [line for line in done.stdout.splitlines() if "+-" in line][:1]
        return "ok", f"2 epochs, test protocol: {table[0].strip()[:100] if table else 'table printed'}", {}

    check.stage("experiments/run.py", experiment)

    @needs("pytest")
    def pytest_gpu():
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "tests" / "test_gpu.py"),
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
        ]
        done = _run(cmd, 300, REPO)
        last = [line for line in done.stdout.splitlines() if "passed" in line or "skipped" in line][-1:]
        return "ok", last[0].strip("= ") if last else "passed", {}

    check.stage("pytest test_gpu.py", pytest_gpu)

    def bench():
        cmd = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "train", "--device", dev, "--repeats", "1"]
        cmd += ["--tiny"] if dev == "cpu" else ["--train-ids", "8", "--compile"]
        _run([*cmd, "--json", str(tmp / "bench.json")], 420, REPO)
        rows = json.loads((tmp / "bench.json").read_text())
        figures = {r["name"].strip(): r["value"] for r in rows}
        m4 = {k: v for k, v in figures.items() if k.startswith("train M4") and "aminet" in k}
        detail = "; ".join(f"{k.split(', ')[-1]} {v:.0f} img/s" for k, v in m4.items())
        peak = max((r["value"] for r in rows if r["unit"] == "MiB"), default=None)
        if dev == "cuda" and peak is None:
            raise RuntimeError("bench.py printed no peak-memory figure")
        detail = (f"M4 {detail}" if detail else f"{len(figures)} figures") + (
            f"; peak GPU memory {peak:.0f} MiB" if peak is not None else ""
        )
        return "ok", detail, figures

    check.stage("bench train", bench)
    unknown = sorted(check.only - set(check.names))
    if unknown:
        print(
            f"gpu_check: error: --only {unknown[0]!r}: no such stage (stages: {', '.join(check.names)})",
            file=sys.stderr,
        )
        return 2
    check.write()
    print(f"gpu_check: {len(check.lines)} stages, {check.failed} failed{' (dry run on the CPU)' if args.dry else ''}")
    print(f"gpu_check: time {budget_line(check.seconds, args.dry)}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
