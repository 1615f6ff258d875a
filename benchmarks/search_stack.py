#!/usr/bin/env python
"""Search-stack costs on this machine: ``python benchmarks/search_stack.py [--tiny] [--json]``.

* **Overhead per trial**: a trivial trainable (three reports, no work) through the same stack as a real
  search: ``Tuner`` + ``PrunedAwareOptunaSearch`` (TPE, SQLite study) + ASHA + ``TrialRunLogger``
  (MLflow, SQLite), one trial at a time; (fit wall time) / trials. ``ray.init`` is timed separately
  (paid once per search).
* **Memory per extra concurrent trial**: trials that import the project, map the shared image cache,
  build the model and run one training step, then report their own memory: USS (pages only this trial
  holds: what one more concurrent trial costs) and RSS (which also counts the shared cache and library
  pages).

Called by ``python benchmarks/bench.py search`` (``aminet`` never imports Ray itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser  # noqa: E402


def _trivial(config):
    from ray import tune

    for epoch in (1, 2, 3):
        tune.report({"score": config["x"], "epoch": epoch})


def _space(trial):
    trial.suggest_float("x", 0.0, 1.0)


def _memory_trial(config, root: str, cache_dir: str | None, arch: str, height: int, width: int):
    import psutil
    import torch
    from ray import tune

    from aminet.config import load_config
    from aminet.data.augment import DeviceAugment
    from aminet.data.cache import ImageCache
    from aminet.data.sampler import BatchLoader, CrossModalSampler
    from aminet.data.splits import sysu_train
    from aminet.losses import AMINetCriterion
    from aminet.model.aminet import build_model

    cfg = load_config(
        None,
        [
            "model.weights=none",
            f"model.arch={arch}",
            f"data.height={height}",
            f"data.width={width}",
            "data.ids_per_batch=2",
        ],
    )
    cache = ImageCache.open(root, height, width, cache_dir=cache_dir, progress=False)
    train = sysu_train(root, "final")
    sampler = CrossModalSampler(train.labels_visible, train.labels_infrared, 2, 4, seed=0, iters_per_epoch=1)
    loader = BatchLoader(
        cache.images,
        cache.indices(train.visible.paths),
        cache.indices(train.infrared.paths),
        sampler,
        "cpu",
        cams_visible=train.visible.cams,
        cams_infrared=train.infrared.cams,
    )
    model = build_model(cfg, train.num_classes).train()
    crit = AMINetCriterion(cfg, 4)
    aug = DeviceAugment.from_config(cfg)
    gen = torch.Generator().manual_seed(0)
    for b in loader.run(0, 0, 1):
        vis, vu = aug(b.visible, True, gen)
        ir, iu = aug(b.infrared, False, gen)
        loss, _ = crit(model(vis, ir, vu, iu), b.labels, b.cams)
        loss.backward()
    _ = float(cache.images[:: max(1, len(cache.images) // 64)].mean())  # touch the shared cache
    info = psutil.Process().memory_full_info()
    time.sleep(2.0)  # let the other trial reach the same point
    tune.report(
        {
            "score": 0.0,
            "epoch": 1,
            "uss_mb": info.uss / 2**20,
            "rss_mb": info.rss / 2**20,
            "pss_mb": getattr(info, "pss", 0) / 2**20,
            "cache_mb": cache.images.nbytes / 2**20,
        }
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="few trials, small model (for tests)")
    p.add_argument("--trials", type=int, default=None, help="trivial trials (default 8; tiny 3)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    args = p.parse_args(argv)
    n = args.trials or (3 if args.tiny else 8)

    import optuna
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from aminet.data import synthetic
    from search.tuning import PrunedAwareOptunaSearch, TrialRunLogger

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        figures.append(("search: ray.init (once per search)", time.perf_counter() - t0, "s"))
        try:
            uri = f"sqlite:///{tmp}/mlflow.db"
            client = MlflowClient(uri)
            exp = client.create_experiment("bench", (Path(tmp) / "artifacts").as_uri())
            parent = client.create_run(exp, run_name="bench").info.run_id
            searcher = PrunedAwareOptunaSearch(
                _space,
                metric="score",
                mode="max",
                study_name="bench",
                storage=optuna.storages.RDBStorage(f"sqlite:///{tmp}/optuna.db"),
                sampler=optuna.samplers.TPESampler(multivariate=True, seed=0),
                max_epochs=3,
            )
            tuner = tune.Tuner(
                tune.with_resources(_trivial, {"cpu": 1}),
                tune_config=tune.TuneConfig(
                    metric="score",
                    mode="max",
                    search_alg=searcher,
                    num_samples=n,
                    max_concurrent_trials=1,
                    scheduler=ASHAScheduler(time_attr="epoch", max_t=3, grace_period=1),
                ),
                run_config=tune.RunConfig(
                    storage_path=f"{tmp}/ray", name="bench", verbose=0, callbacks=[TrialRunLogger(uri, exp, parent, 3)]
                ),
            )
            t0 = time.perf_counter()
            tuner.fit()
            wall = time.perf_counter() - t0
            figures.append(
                (
                    f"search: overhead per trial (Ray + Optuna TPE + ASHA + MLflow, {n} trivial trials one at a time)",
                    wall / n,
                    "s",
                )
            )

            if args.tiny:
                root = synthetic.generate("sysu", f"{tmp}/sysu", ids=8, images=2, height=64, width=32, workers=1)
                kw = dict(root=str(root), cache_dir=f"{tmp}/cache", arch="resnet18", height=32, width=16)
            else:
                root = synthetic.ensure_default("sysu", quiet=True)
                kw = dict(root=str(root), cache_dir=None, arch="resnet50", height=288, width=144)
            from aminet.data.cache import ImageCache

            ImageCache.open(kw["root"], kw["height"], kw["width"], cache_dir=kw["cache_dir"], progress=False)
            res = tune.Tuner(
                tune.with_resources(tune.with_parameters(_memory_trial, **kw), {"cpu": 1}),
                param_space={"i": tune.grid_search([0, 1])},
                tune_config=tune.TuneConfig(max_concurrent_trials=2),
                run_config=tune.RunConfig(storage_path=f"{tmp}/ray", name="memory", verbose=0),
            ).fit()
            rows = [r.metrics for r in res if r.metrics]
            if rows:
                label = f"{kw['arch']} {kw['height']}x{kw['width']}, CPU, after one training step"
                figures.append(
                    (
                        f"search: memory per extra concurrent trial (USS), {label}",
                        statistics.median(r["uss_mb"] for r in rows),
                        "MiB",
                    )
                )
                figures.append(
                    (
                        "search: RSS of a trial (counts the shared cache and libraries)",
                        statistics.median(r["rss_mb"] for r in rows),
                        "MiB",
                    )
                )
                figures.append(
                    ("search: image cache mapped by every trial (shared, counted once)", rows[0]["cache_mb"], "MiB")
                )
        finally:
            ray.shutdown()
    for name, value, unit in figures:
        print(f"{name:<78s} {value:10.4f} {unit}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
