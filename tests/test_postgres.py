"""A real PostgreSQL behind a real MLflow tracking server (issue 29): the search with ``--retrain-best``
writes from several processes at once (the driver, each trial's logger, one Ray task per final model), with
the end-to-end checks of the SQLite drills: every run finished, lineage, registry, champion.

The test starts a throw-away cluster in a temporary folder on a free local port (Debian's ``postgresql``
package; ``.ci/run`` installs it) and ``mlflow server`` on it. Without PostgreSQL or psycopg it is skipped
with the reason, never faked. docs/operations.md gives the same commands for a real deployment."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_helpers import free_port, search_args, search_env, search_runs, tiny_roots

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the package's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait(url: str, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")


@pytest.fixture()
def tracking_server(tmp_path):
    """``http://127.0.0.1:<port>``: an MLflow tracking server on a fresh PostgreSQL database."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    # a folder the postgres user can use (pytest's own tmp folders are private to root)
    cluster = Path(tempfile.mkdtemp(prefix="aminet-pg-"))
    if os.geteuid() == 0:
        shutil.chown(cluster, "postgres")
    port = free_port()
    data = cluster / "data"
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(cluster / "log"),
                "-w",
                "start",
                "-o",
                f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1",
            ]
        ),  # fmt: skip
        check=True,
        capture_output=True,
    )
    server = None
    try:
        subprocess.run(
            _as_postgres(
                [_pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"]
            ),
            check=True,
            capture_output=True,
        )
        http = free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"postgresql://mlflow@127.0.0.1:{port}/mlflow",
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(http),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "mlflow-server.log", "w"),  # noqa: SIM115 - closed with the process
        )
        _wait(f"http://127.0.0.1:{http}/health", 120, server)
        yield f"http://127.0.0.1:{http}", port
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)


def test_the_search_and_its_final_runs_on_a_postgresql_tracking_server(tmp_path, tracking_server):
    import psycopg

    uri, pg_port = tracking_server
    tmp, sysu, regdb = tiny_roots(tmp_path)
    name = "pg"
    out = subprocess.run(
        search_args(
            tmp,
            sysu,
            regdb,
            name,
            "--num-samples",
            "3",
            "--reseeds",
            "0",  # re-seeding is the SQLite end-to-end test's; here the writers are the trials and the finals
            "--retrain-best",
            "--retrain-trials",
            "1",
            "--mlflow-uri",
            uri,
        ),  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
        env=search_env(),
        cwd=tmp,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "champion" in out.stdout and "2 model(s) as Ray tasks (sysu: 1, regdb: 1)" in out.stdout

    client, (parent,), trials = search_runs(tmp, name, uri)
    runs = client.search_runs([parent.info.experiment_id])
    assert parent.info.status == "FINISHED" and len(trials) >= 3
    assert {r.info.status for r in runs} == {"FINISHED"}  # nothing left RUNNING by any writer
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}  # lineage

    final = client.get_experiment_by_name("aminet-final")
    finals = client.search_runs([final.experiment_id], f"tags.`aminet.search_parent` = '{parent.info.run_id}'")
    assert sorted(r.data.tags.get("aminet.role") for r in finals) == ["model", "model", "summary", "summary"]
    assert {r.info.status for r in finals} == {"FINISHED"}

    from aminet.data.cache import dataset_fingerprint

    champion = client.get_model_version_by_alias(f"aminet-sysu-synthetic-{dataset_fingerprint(sysu)[:8]}", "champion")
    assert champion.tags["aminet.search"] == name and champion.run_id

    # ... and all of it is in PostgreSQL, not in a file next to the server
    with psycopg.connect(host="127.0.0.1", port=pg_port, user="mlflow", dbname="mlflow") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == len(runs) + len(finals)
            cur.execute("SELECT count(*) FROM model_versions")
            assert cur.fetchone()[0] >= 1
