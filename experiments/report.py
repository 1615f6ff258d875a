#!/usr/bin/env python
"""Tables from the MLflow runs of ``experiments/run.py``: ablation and comparison, CSV and Markdown.

    python experiments/report.py [--mlflow-uri URI] [--experiment NAME ...] [--labels L ...] [--out DIR]

Reads the summary (parent) runs with pandas (``mlflow.search_runs``): one row per configuration label,
each metric as mean +- std over seeds (each seed already averaged over the protocol's trials). Writes
``results.csv`` / ``results.md`` (every run) and ``ablation.csv`` / ``ablation.md`` (rows M0..M4 when
present, in the paper's Table 1 order) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from aminet.cli import ArgumentParser
from aminet.data import registry

ORDER = ["M0", "M1", "M2", "M3", "M4"]
SETTINGS = [s for bench in registry.entries() for s in bench.settings]  # every registered benchmark's
METRICS = ["R1", "R10", "R20", "mAP", "mINP"]


def load_runs(uri: str, experiments: list[str] | None) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    names = experiments or [e.name for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(
        experiment_names=names, filter_string="tags.`aminet.role` = 'summary'", output_format="pandas"
    )
    if runs.empty:
        return runs
    return runs[runs["status"] == "FINISHED"]


def table(runs: pd.DataFrame, labels: list[str] | None = None) -> pd.DataFrame:
    rows = []
    for _, r in runs.iterrows():
        label = r.get("tags.aminet.label") or r.get("tags.mlflow.runName")
        if labels and label not in labels:
            continue
        row = {
            "label": label,
            "experiment": r["experiment_id"],
            "run_id": r["run_id"],
            "seeds": r.get("params.run.seeds", ""),
            "start": r["start_time"],
        }
        for prefix in ("test/", "val/"):
            for s in SETTINGS:
                for m in METRICS:
                    mean = r.get(f"metrics.{prefix}{s}/{m}_mean")
                    if mean is not None and pd.notna(mean):
                        row[f"{prefix}{s}/{m}"] = 100 * float(mean)
                        row[f"{prefix}{s}/{m}_std"] = 100 * float(r.get(f"metrics.{prefix}{s}/{m}_std", 0.0))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # the newest run of each label
    return df.sort_values("start").groupby("label", sort=False).tail(1).reset_index(drop=True)


def to_markdown(df: pd.DataFrame) -> str:
    metric_cols = [c for c in df.columns if "/" in c and not c.endswith("_std")]
    header = ["label", "seeds"] + [c.replace("test/", "").replace("val/", "val ") for c in metric_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in df.iterrows():
        cells = [str(r["label"]), str(r["seeds"])]
        for c in metric_cols:
            v, s = r.get(c), r.get(f"{c}_std")
            cells.append("-" if v is None or pd.isna(v) else f"{v:.2f} ± {0.0 if pd.isna(s) else s:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python experiments/report.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: sqlite:///<cwd>/mlruns/mlflow.db)")
    parser.add_argument("--experiment", action="append", default=None, help="experiment name(s) (default: all)")
    parser.add_argument("--labels", nargs="+", default=None, help="only these configuration labels")
    parser.add_argument("--out", default="reports", help="output folder (default: ./reports)")
    args = parser.parse_args(argv)
    uri = args.mlflow_uri
    if uri is None:
        db = (Path.cwd() / "mlruns" / "mlflow.db").resolve()
        if not db.is_file():
            print(f"error: no MLflow database at {db}; pass --mlflow-uri", file=sys.stderr)
            return 2
        uri = f"sqlite:///{db}"
    try:
        runs = load_runs(uri, args.experiment)
    except Exception as exc:  # unknown experiment, unreachable server
        print(f"error: cannot read MLflow runs from {uri}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    df = table(runs, args.labels)
    if df.empty:
        print("error: no finished summary runs found", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = [c for c in df.columns if c not in ("experiment", "run_id", "start")]
    df[keep].to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(to_markdown(df[keep]))
    ablation = df[df.label.isin(ORDER)].copy()
    if not ablation.empty:
        ablation["order"] = ablation.label.map(ORDER.index)
        ablation = ablation.sort_values("order")[keep]
        ablation.to_csv(out / "ablation.csv", index=False)
        (out / "ablation.md").write_text(to_markdown(ablation))
    print(to_markdown(df[keep]))
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
