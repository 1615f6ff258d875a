#!/usr/bin/env python
"""Look at a search in the real MLflow UI with a headless Chromium (Playwright), and keep screenshots.

    python search/run.py --space sysu --name ui-check                      # any finished search
    python scripts/check_mlflow_ui.py --mlflow-uri sqlite:///$PWD/mlruns/mlflow.db --out ui_screens

It starts ``mlflow server`` on 127.0.0.1, opens the experiment's training-runs page (the link the search
prints), a trial run, the parent run and the registered champion, checks that each shows what a user
needs (trial names with the Optuna number, ``val/score``, the parent's description, the model's
signature), and saves a full-page screenshot of each under ``--out`` to be looked at. Needs Playwright
and a Chromium (``pip install playwright && playwright install chromium``, or ``--browser`` pointing at
a system Chrome/Chromium); where none can be installed (no access to Playwright's CDN) it says so in one
line and exits 77, which CI treats as skipped.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SKIP = 77


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlflow-uri", required=True, help="the search's tracking URI (sqlite:///... or a server)")
    p.add_argument("--experiment", default="aminet-search")
    p.add_argument("--out", default="ui_screens", help="folder for the screenshots")
    p.add_argument("--browser", default=None, help="path of a Chrome/Chromium executable (default: Playwright's)")
    args = p.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: Playwright is not installed (pip install playwright)", file=sys.stderr)
        return SKIP
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.mlflow_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: no experiment {args.experiment!r} in {args.mlflow_uri}", file=sys.stderr)
        return 2
    runs = client.search_runs([exp.experiment_id])
    parent = next((r for r in runs if r.data.tags.get("aminet.role") == "search"), None)
    trial = next((r for r in runs if r.data.tags.get("aminet.role") == "trial"), None)
    if parent is None or trial is None:
        print("error: the experiment holds no search (parent and trial runs)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            args.mlflow_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    problems: list[str] = []
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{host}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=args.browser) if args.browser else pw.chromium.launch()
            except Exception as exc:  # noqa: BLE001 - no browser binary: a skip, said in one line
                print(f"skipped: no Chromium to drive ({' '.join(str(exc).split())[:200]})", file=sys.stderr)
                return SKIP
            page = browser.new_page(viewport={"width": 1600, "height": 1000})

            def look(name: str, url: str, must_show: list[str]) -> None:
                page.goto(url)
                page.wait_for_load_state("networkidle")
                time.sleep(2)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                text = page.inner_text("body")
                for needle in must_show:
                    if needle not in text:
                        problems.append(f"{name}: {needle!r} not shown")

            number = trial.data.tags.get("optuna.trial_number", "")
            look(
                "1_runs",
                f"{host}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning",
                [parent.info.run_name, f"trial {number}:"],
            )
            look(
                "2_trial",
                f"{host}/#/experiments/{exp.experiment_id}/runs/{trial.info.run_id}",
                ["optim.lr", "val/score", "train/loss"],
            )
            look(
                "3_parent",
                f"{host}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}",
                ["Winner", "val/score"],
            )
            registered = parent.data.tags.get("aminet.registered_model", "").split(" v")[0]
            if registered:
                look("4_model", f"{host}/#/models/{registered}", [registered])
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    print(f"screenshots in {out}/ ({'ok' if not problems else f'{len(problems)} problem(s)'})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
