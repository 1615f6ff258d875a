#!/usr/bin/env python
"""Look at a search in the real MLflow UI with a headless Chromium (Playwright), and keep screenshots.

    python search/run.py --space sysu --name ui-check                      # any finished search
    python scripts/check_mlflow_ui.py --mlflow-uri sqlite:///$PWD/mlruns/mlflow.db --out ui_screens

It starts ``mlflow server`` on 127.0.0.1, opens the experiment's training-runs page (the link the search
prints), a trial run, the parent run and the registered champion, checks that each shows what a user
needs (trial names with the Optuna number, ``val/score``, the parent's description, the model's
signature), and saves a full-page screenshot of each under ``--out`` to be looked at. Run pages are opened
with ``?workflowType=machine_learning`` (MLflow 3.17 shows a run linked from outside its table in the GenAI
view otherwise), and the runs page's parent row is expanded to show the trials under it. Needs Playwright
(in the ``dev`` extra) and a Chromium: the system's (Debian: ``apt-get install chromium``; found on the PATH,
or ``--browser PATH``) or Playwright's (``playwright install chromium``); with neither it says so in one
line and exits 77 (skipped). The end-to-end search test runs it where both exist (CI installs them).
"""

from __future__ import annotations

import argparse
import shutil
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
    p.add_argument(
        "--browser",
        default=next(
            (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
        ),
        help="path of a Chrome/Chromium executable (default: one on the PATH, else Playwright's own)",
    )
    args = p.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: Playwright is not installed (pip install playwright)", file=sys.stderr)
        return SKIP
    from mlflow.tracking import MlflowClient

    from tracking.reporting import run_page

    if args.mlflow_uri.startswith("sqlite:///") and not Path(args.mlflow_uri[len("sqlite:///") :]).is_file():
        print(f"error: --mlflow-uri {args.mlflow_uri}: no such database file", file=sys.stderr)
        return 2
    # The server takes ~15 s to come up on two cores: start it first, read the runs and start the browser
    # while it does.
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
    out = Path(args.out)
    problems: list[str] = []
    try:
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
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            try:
                # no background traffic: this machine (and CI) has no network beyond localhost
                flags = ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
                browser = pw.chromium.launch(executable_path=args.browser, args=flags)
            except Exception as exc:  # noqa: BLE001 - no browser binary: a skip, said in one line
                print(f"skipped: no Chromium to drive ({' '.join(str(exc).split())[:200]})", file=sys.stderr)
                return SKIP
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{host}/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            page = browser.new_page(viewport={"width": 1920, "height": 1080})

            def look(name: str, url: str, must_show: list[str], expand: str | None = None) -> None:
                # MLflow's pages keep polling the server, so "network idle" never comes: wait for the page's
                # load, then until what it must show is there (at most 60 s), then keep a screenshot.
                page.goto(url, wait_until="load")
                deadline = time.monotonic() + 60
                if expand is not None:  # e.g. open the search's parent run to show its trial runs
                    page.locator(expand).first.click(timeout=60_000)
                missing = list(must_show)
                while missing and time.monotonic() < deadline:
                    time.sleep(1)
                    text = page.inner_text("body")
                    missing = [needle for needle in must_show if needle not in text]
                time.sleep(1)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                problems.extend(f"{name}: {needle!r} not shown" for needle in missing)

            number = trial.data.tags.get("optuna.trial_number", "")
            look(
                "1_runs",
                f"{host}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning",
                [parent.info.run_name, f"trial {number}:"],
                # the parent's expander in the run-name cell: MLflow lists child runs under their parent
                expand='button[data-component-id*="runnamecellrenderer"]',
            )
            look(
                "2_trial",
                run_page(exp.experiment_id, trial.info.run_id, host),
                ["optim.lr", "val/score", "train/loss"],
            )
            look(
                "3_parent",
                run_page(exp.experiment_id, parent.info.run_id, host),
                ["Winner", "val/score"],
            )
            registered = parent.data.tags.get("aminet.registered_model", "").split(" v")[0]
            if registered:
                look("4_model", f"{host}/#/models/{registered}?workflowType=machine_learning", [registered, "champion"])
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
