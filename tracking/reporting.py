"""Reporting: the paper-format result tables, the plots of a trained model, and an MLflow reporter.

Plots (matplotlib, Agg): the CMC curve of the final test protocol; a t-SNE of visible and infrared
embeddings of a few test identities (circles visible, triangles infrared, one colour per identity, the
paper's Fig. 4 a-c); and the histograms of cross-modal intra-class and inter-class Euclidean distances
between L2-normalised embeddings with their mean gap (Fig. 4 d-f).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "paper_table",
    "seed_summary",
    "log_seed_summary",
    "log_summary_inputs",
    "cmc_figure",
    "tsne_figure",
    "distance_figure",
    "MLflowReporter",
    "distance_gap",
]

_SYSU_COLS = [
    ("all", "R1"),
    ("all", "R10"),
    ("all", "R20"),
    ("all", "mAP"),
    ("all", "mINP"),
    ("indoor", "R1"),
    ("indoor", "R10"),
    ("indoor", "R20"),
    ("indoor", "mAP"),
    ("indoor", "mINP"),
]
_REGDB_COLS = [
    ("t2v", "R1"),
    ("t2v", "R10"),
    ("t2v", "mAP"),
    ("t2v", "mINP"),
    ("v2t", "R1"),
    ("v2t", "R10"),
    ("v2t", "mAP"),
    ("v2t", "mINP"),
]
_SETTING_NAMES = {
    "all": "All Search",
    "indoor": "Indoor Search",
    "t2v": "Thermal to Visible",
    "v2t": "Visible to Thermal",
}


def seed_summary(per_trial: pd.DataFrame, feature: str = "bn") -> pd.DataFrame:
    """Per seed: metrics averaged over the protocol's trials; then mean and std over seeds.

    ``per_trial`` has the columns of ``aminet.evaluation`` frames plus ``seed`` (and ``label``)."""
    df = per_trial[per_trial.feature == feature]
    keys = ["label", "benchmark", "setting"] if "label" in df.columns else ["benchmark", "setting"]
    metrics = ["R1", "R5", "R10", "R20", "mAP", "mINP"]
    per_seed = df.groupby(keys + ["seed"], sort=False)[metrics].mean().reset_index()
    g = per_seed.groupby(keys, sort=False)[metrics]
    out = pd.concat(
        [g.mean().add_suffix("_mean"), g.std(ddof=1).fillna(0.0).add_suffix("_std"), g.size().rename("seeds")], axis=1
    ).reset_index()
    return out


def log_summary_inputs(client, run_id: str, cfg, seeds: list[int], trials: list[int]) -> None:
    """On a summary run (``run_id``, an ``MlflowClient``'s): the whole config as params, the seeds and the RegDB
    trials (``-`` on SYSU) as ``run.seeds`` / ``run.trials``, and the config as ``config.yaml``."""
    from mlflow.entities import Param

    from aminet.data import registry

    params = {
        **flatten_config(cfg.flat()),
        "run.seeds": " ".join(map(str, seeds)),
        "run.trials": " ".join(map(str, trials)) if registry.get(cfg.data.dataset).model_per_trial else "-",
    }
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])
    client.log_text(run_id, cfg.to_yaml(), "config.yaml")


def log_seed_summary(client, run_id: str, per_trial: pd.DataFrame, cfg) -> pd.DataFrame:
    """On run ``run_id`` (an ``MlflowClient``'s): every metric's mean and std over seeds as
    ``<test|val>/<setting>/<metric>_mean|_std``, and the per-trial, summary and paper-layout tables as text
    artifacts. ``per_trial`` holds the models' per-trial frames with a ``seed`` column. Returns the summary."""
    prefix = "test/" if cfg.data.purpose == "final" else "val/"
    summary = seed_summary(per_trial, cfg.eval.feature)
    for _, r in summary.iterrows():
        for m in ("R1", "R5", "R10", "R20", "mAP", "mINP"):
            client.log_metric(run_id, f"{prefix}{r.setting}/{m}_mean", float(r[f"{m}_mean"]))
            client.log_metric(run_id, f"{prefix}{r.setting}/{m}_std", float(r[f"{m}_std"]))
    client.log_text(
        run_id, per_trial.drop(columns=["cmc"], errors="ignore").to_csv(index=False), "results/per_trial.csv"
    )
    client.log_text(run_id, summary.to_csv(index=False), "results/summary.csv")
    client.log_text(run_id, paper_table(summary) + "\n", "results/summary.txt")
    return summary


def paper_table(summary: pd.DataFrame) -> str:
    """The paper's layout (Tables 1, 3, 4): percent, mean +- std over seeds, one line per label."""
    if summary.empty:
        return "(no results)"
    benchmark = summary.benchmark.iloc[0]
    # the paper's columns on SYSU-MM01 and RegDB; another benchmark, mAP, mINP of each setting
    cols = {"sysu": _SYSU_COLS, "regdb": _REGDB_COLS}.get(benchmark) or [
        (s, m) for s in dict.fromkeys(summary.setting) for m in ("R1", "R10", "R20", "mAP", "mINP")
    ]
    present = [c for c in cols if c[0] in set(summary.setting)]
    labels = list(dict.fromkeys(summary["label"])) if "label" in summary.columns else [""]
    head1 = f"{'':<24s}" + "".join(
        f"{_SETTING_NAMES.get(s, s):<{17 * sum(1 for c in present if c[0] == s)}s}"
        for s in dict.fromkeys(c[0] for c in present)
    )
    head2 = f"{'':<24s}" + "".join(f"{m.replace('R', 'R-'):<17s}" for _, m in present)
    lines = [head1.rstrip(), head2.rstrip()]
    for label in labels:
        rows = summary[summary["label"] == label] if "label" in summary.columns else summary
        cells = []
        for setting, metric in present:
            r = rows[rows.setting == setting]
            if r.empty:
                cells.append(f"{'-':<17s}")
                continue
            mean, std = 100 * float(r[f"{metric}_mean"].iloc[0]), 100 * float(r[f"{metric}_std"].iloc[0])
            cells.append(f"{mean:6.2f} +- {std:<6.2f}".ljust(17))
        seeds = int(rows["seeds"].iloc[0]) if len(rows) else 0
        lines.append(f"{(label or 'result')[:18] + f' (n={seeds})':<24s}" + "".join(cells).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cmc_figure(frame: pd.DataFrame, feature: str = "bn"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    rows = frame[frame.feature == feature]
    for setting, group in rows.groupby("setting", sort=False):
        curve = 100 * np.mean(np.stack([np.asarray(c) for c in group["cmc"]]), axis=0)
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            marker="o",
            ms=3,
            label=f"{_SETTING_NAMES.get(setting, setting)} (R1 {curve[0]:.1f})",
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"CMC ({feature} feature, mean over trials)")
    fig.tight_layout()
    return fig


def tsne_figure(
    vis: np.ndarray, vis_pids: np.ndarray, ir: np.ndarray, ir_pids: np.ndarray, max_ids: int = 10, seed: int = 0
):
    """t-SNE of visible (circles) and infrared (triangles) embeddings of up to ``max_ids`` identities."""
    from sklearn.manifold import TSNE

    plt = _plt()
    ids = [p for p in np.unique(vis_pids) if p in set(ir_pids.tolist())][:max_ids]
    mv, mi = np.isin(vis_pids, ids), np.isin(ir_pids, ids)
    x = np.concatenate([vis[mv], ir[mi]])
    perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    ev, ei = emb[: mv.sum()], emb[mv.sum() :]
    cmap = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, pid in enumerate(ids):
        c = cmap(k % cmap.N)
        ax.scatter(*ev[vis_pids[mv] == pid].T, marker="o", s=18, color=c)
        ax.scatter(*ei[ir_pids[mi] == pid].T, marker="^", s=22, color=c)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE: visible (o) vs infrared (^), {len(ids)} identities")
    fig.tight_layout()
    return fig


def distance_gap(query: np.ndarray, q_pids: np.ndarray, gallery: np.ndarray, g_pids: np.ndarray) -> dict[str, Any]:
    """Cross-modal Euclidean distances of L2-normalised embeddings, split into same / different identity."""
    q = query / (np.linalg.norm(query, axis=1, keepdims=True) + 1e-12)
    g = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
    d = np.sqrt(np.clip(2.0 - 2.0 * q @ g.T, 0.0, None))
    same = q_pids[:, None] == g_pids[None, :]
    intra, inter = d[same], d[~same]
    return {"intra": intra, "inter": inter, "gap": float(inter.mean() - intra.mean()) if len(intra) else math.nan}


def distance_figure(gap: dict[str, Any]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    bins = np.linspace(0, 2, 61)
    ax.hist(gap["intra"], bins=bins, density=True, histtype="step", color="tab:blue", lw=1.5, label="intra-class")
    ax.hist(gap["inter"], bins=bins, density=True, histtype="step", color="tab:green", lw=1.5, label="inter-class")
    ax.set_xlabel("Euclidean distance (infrared query to visible gallery)")
    ax.set_ylabel("frequency (density)")
    ax.set_title(f"mean gap {gap['gap']:.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------


def check_tracking_uri(uri: str | None, timeout: float = 5.0) -> None:
    """Raise ``ConnectionError`` (one line naming the URI) when the tracking store cannot be reached, in at most
    ~``timeout`` seconds: an HTTP(S) server that does not answer, a database host that refuses or ignores
    the connection, a SQLite or file store whose folder cannot be created. MLflow's own client would retry
    an unreachable server with backoff for minutes before failing. Any HTTP answer (even 401/404) counts as
    reachable: authentication and paths are MLflow's to report."""
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    if uri is None:
        return
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.split("+")[0].lower()
    where = f"--mlflow-uri {uri}"
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(
                f"{where}: no tracking server answers there ({' '.join(str(reason).split())})"
            ) from None
    elif scheme in ("postgresql", "mysql", "mssql"):
        default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[scheme]
        try:
            port = parsed.port or default_port
        except ValueError:
            raise ConnectionError(f"{where}: not a valid database URI (port)") from None
        try:
            with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
                pass
        except OSError as exc:
            raise ConnectionError(
                f"{where}: cannot reach the database server ({exc.strerror or type(exc).__name__})"
            ) from None
    elif scheme in ("sqlite", "file", ""):
        path = uri[len("sqlite:///") :] if scheme == "sqlite" else (parsed.path if scheme == "file" else uri)
        folder = Path(path).expanduser().resolve()
        folder = folder.parent if scheme == "sqlite" else folder
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            raise ConnectionError(f"{where}: cannot create or write {folder}")


def absolute_tracking_uri(uri: str) -> str:
    """A relative SQLite URI (``sqlite:///mlruns/x.db``) made absolute; any other URI as it is."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).expanduser().resolve()}"
    return uri


def is_local_store(uri: str) -> bool:
    """The tracking store is a file on this machine (SQLite or a folder): only this node can write it."""
    return uri.split(":", 1)[0].lower() in ("sqlite", "file") or "://" not in uri


def mlflow_store(uri: str | None, experiment: str) -> tuple[str, str]:
    """(tracking URI, experiment id), the experiment created if missing. ``uri=None``:
    ``sqlite:///<cwd>/mlruns/mlflow.db``. SQLite URIs are made absolute and get an absolute artifact folder
    beside the database (MLflow would otherwise put artifacts under the working directory at creation)."""
    from mlflow.tracking import MlflowClient

    if uri is None:
        base = (Path.cwd() / "mlruns").resolve()
        base.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{base / 'mlflow.db'}"
    uri = absolute_tracking_uri(uri)
    artifacts = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri() if uri.startswith("sqlite:") else None
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, artifacts)
    if exp is None or exp.tags.get(EXPERIMENT_KIND) != "custom_model_development":
        # MLflow 3 opens an experiment without this tag in its GenAI view; these are training runs.
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND, "custom_model_development")
    return uri, exp_id


EXPERIMENT_KIND = "mlflow.experimentKind"


def runs_page(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The experiment's training-runs page in ``mlflow ui`` (the machine-learning view, not GenAI)."""
    return f"{host}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_page(experiment_id: str, run_id: str, host: str = "") -> str:
    """A run's page in ``mlflow ui``, in the machine-learning view (without ``workflowType`` MLflow 3.17 opens
    a run linked from outside its runs table in the GenAI view, as an "evaluation run"); ``host=""``: the
    link relative to the UI (a run description's markdown)."""
    return f"{host}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def dataset_input(name: str, digest: str, source: str | Path, context: str):
    """An MLflow dataset input (shown under a run's Datasets): ``name``, a content ``digest`` (see
    ``aminet.data.cache.dataset_fingerprint``), the folder it was read from and its use (``train``,
    ``validation`` or ``test``)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": str(source)}))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's own source tags (the UI's Source column and the run page's git commit; the commit only from a
    checkout of aminet itself) and ``aminet.version``, the installed package's version."""
    tags = {"mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL", "aminet.version": aminet_version()}
    commit = git_commit()
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def aminet_version() -> str:
    """The installed aminet's version (``pip install .`` or ``-e .``), or "unknown" when it is not installed
    (``python search/run.py`` from a checkout without an install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aminet")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The commit of the aminet checkout this code runs from, or "unknown". Only a checkout of aminet
    counts: installed with ``pip install .`` the code lives in ``site-packages``, and ``git rev-parse`` there
    finds whatever repository encloses the environment (a user's own project with its venv inside), whose
    commit says nothing about aminet; so the repository's top folder must be the folder holding this
    package."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != here:
        return "unknown"
    return lines[1]


class MLflowReporter:
    """The engine's reporter for fixed-config runs: per-epoch training figures and every evaluation as
    MLflow metrics of the active run (``prefix`` e.g. ``val/`` or ``test/``)."""

    def __init__(self, prefix: str = ""):
        import mlflow

        self._mlflow = mlflow
        self.prefix = prefix

    @staticmethod
    def _clean(metrics: dict[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._mlflow.log_metrics({f"train/{k}": v for k, v in self._clean(metrics).items()}, step=epoch)

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        clean = {k: v for k, v in self._clean(metrics).items() if k != "epoch"}
        self._mlflow.log_metrics({f"{self.prefix}{k}": v for k, v in clean.items()}, step=epoch)


def flatten_config(flat: dict[str, Any]) -> dict[str, str]:
    """MLflow params: every dotted config key, values as text."""
    return {k: ("null" if v is None else str(v)) for k, v in flat.items()}


def iter_settings(frame: pd.DataFrame) -> Iterable[str]:
    return list(dict.fromkeys(frame.setting))
