"""The SLURM drill (issue 39): scripts/slurm/search.sbatch on a real one-node SLURM cluster that this test
starts on 127.0.0.1 (Debian's slurmctld, slurmd and munge; `.ci/run` installs them as it does PostgreSQL).
A 2-trial search is submitted with sbatch, cancelled with scancel while its trials train, resumed with a
second sbatch, and must finish: the job COMPLETED with exit code 0, the trials children of the search,
FINISHED, and a champion registered. Without the SLURM packages the test is skipped with the reason."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import TINY, free_port, search_runs, tiny_roots

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SBIN = ("/usr/sbin", "/usr/bin")


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if Path(f"{d}/{name}").is_file()), None)


def _wait(predicate, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(1)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


@pytest.fixture
def slurm(tmp_path):
    tools = {n: _tool(n) for n in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")}
    gone = [n for n, p in tools.items() if p is None]
    if gone:
        pytest.skip(f"SLURM drill: {', '.join(gone)} not installed (Debian: apt-get install slurmctld slurmd "
                    "slurm-client munge)")  # fmt: skip
    if os.geteuid() != 0:
        pytest.skip("SLURM drill: slurmd must run as root to start jobs")
    base = Path(tempfile_short())
    for d in ("state", "spool", "munge"):
        (base / d).mkdir(parents=True)
    key = base / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = base / "munge" / "munge.sock"
    procs = []
    subprocess.run(
        [tools["munged"], "--force", f"--key-file={key}", f"--socket={sock}", f"--pid-file={base}/munge/pid",
         f"--log-file={base}/munge/log", f"--seed-file={base}/munge/seed"], check=True, timeout=30,
    )  # fmt: skip
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(
        "\n".join([
            "ClusterName=drill", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            "CredType=cred/munge", f"AuthInfo=socket={sock}", f"StateSaveLocation={base}/state",
            f"SlurmdSpoolDir={base}/spool", f"SlurmctldPidFile={base}/ctld.pid", f"SlurmdPidFile={base}/d.pid",
            f"SlurmctldLogFile={base}/ctld.log", f"SlurmdLogFile={base}/d.log", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none", "ReturnToService=2", "MinJobAge=600",
            "KillWait=60", f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
            "PartitionName=drill Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
        ])
    )  # fmt: skip
    env = dict(os.environ, SLURM_CONF=str(conf))
    try:
        for cmd in ([tools["slurmctld"], "-D", "-f", str(conf)], [tools["slurmd"], "-D", "-f", str(conf), "-N", host]):
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(2)
        _wait(
            lambda: (
                "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            ),
            60,
            "the SLURM node to come up",
        )
        yield env, tools, tmp_path
    finally:
        subprocess.run([tools["scancel"], "--full", "-u", "root"], env=env, capture_output=True)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        pid = base / "munge" / "pid"
        if pid.is_file():
            try:
                os.kill(int(pid.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        shutil.rmtree(base, ignore_errors=True)


def tempfile_short() -> str:
    """A short folder (the munge socket's path has a length limit like Ray's)."""
    import tempfile

    return tempfile.mkdtemp(prefix="sl-", dir="/tmp")


def _job(env, tools, job: str) -> dict[str, str]:
    out = subprocess.run([tools["scontrol"], "show", "job", job], env=env, capture_output=True, text=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def test_a_search_runs_under_sbatch_survives_scancel_and_resumes(slurm):
    env, tools, tmp = slurm
    tmp, sysu, regdb = tiny_roots(tmp)
    shared = tmp / "shared"
    env = dict(env, AMINET_SHARED=str(shared), AMINET_PYTHON=sys.executable, PYTHONPATH=str(REPO))
    name = "slurm-drill"
    sets = [a for o in [*TINY, f"data.cache_dir={tmp / 'cache'}"] for a in ("--set", o)]
    search = ["--space", "sysu", "--quick", "--data-root", str(sysu), "--regdb-root", str(regdb), "--name", name,
              "--num-samples", "2", "--reseeds", "0", "--verbose", "0", *sets]  # fmt: skip

    def sbatch(*extra):
        out = subprocess.run(
            [tools["sbatch"], "--parsable", f"--cpus-per-task={os.cpu_count()}", f"--output={tmp}/job-%j.out",
             str(REPO / "scripts" / "slurm" / "search.sbatch"), *search, *extra],
            env=env, capture_output=True, text=True, cwd=tmp, check=True,
        )  # fmt: skip
        return out.stdout.strip().split(";")[0]

    # a bystander that `ray stop` would end (Ray's own process filter: "default_worker.py" in the command line),
    # standing for another job's Ray on the same node: the script must stop its own Ray and nothing else
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", "default_worker.py"])
    try:
        _drill(env, tools, tmp, shared, name, sbatch)
        assert bystander.poll() is None, "the job's clean-up ended another Ray process on the node (ray stop?)"
    finally:
        bystander.kill()


def _drill(env, tools, tmp, shared, name, sbatch):
    first = sbatch()
    trial_folders = shared / "ray" / name
    _wait(
        lambda: [p for p in trial_folders.glob("train_aminet_*") if (p / "result.json").is_file()
                 and (p / "result.json").stat().st_size > 0],
        400,
        "a trial of the first job to report",
    )  # fmt: skip
    subprocess.run([tools["scancel"], first], env=env, check=True)
    _wait(lambda: _job(env, tools, first).get("JobState") not in ("RUNNING", "COMPLETING", "PENDING"), 180, "scancel")
    assert _job(env, tools, first)["JobState"] == "CANCELLED"  # every step signalled, Ray's head with the driver

    second = sbatch("--resume")
    _wait(lambda: _job(env, tools, second).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 600, "the resume")
    info = _job(env, tools, second)
    log = (tmp / f"job-{second}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert "the search exited 0" in log
    client, parents, trials = search_runs(tmp, name, f"sqlite:///{shared / 'mlflow.db'}")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    champions = [m for m in client.search_registered_models() if "champion" in (m.aliases or {})]
    assert champions, "no champion registered"
    # and none of the job's own Ray processes outlives it (they carry its temporary folder, /tmp/ray-<job id>)
    for job in (first, second):
        left = _wait_gone(f"/tmp/ray-{job}/", 30)
        assert not left, f"Ray processes of job {job} left running: {left}"


def _wait_gone(marker: str, seconds: float) -> list[str]:
    deadline = time.time() + seconds
    while True:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # the process ended meanwhile
                continue
            if marker in line:
                left.append(line[:120])
        if not left or time.time() > deadline:
            return left
        time.sleep(1)
