"""Nodes without internet (issue 39): the wheelhouse flow of docs/operations.md, tested offline. A GPU node
has its own torch; aminet comes from a wheelhouse with ``pip install --no-index --find-links``. Here the
wheel is built from the checkout without an index, installed into a fresh virtual environment that sees the
machine's packages (as the node's preinstalled torch), with no index at all, and the commands run."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_the_project_installs_from_a_wheelhouse_with_no_index(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w",
         str(wheelhouse), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    assert len(list(wheelhouse.glob("aminet-*.whl"))) == 1
    env_dir = tmp_path / "node-venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # the venv borrows this interpreter's pip (no download of pip either)
    offline = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_INDEX": "1"}
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    # aminet from the wheelhouse into the venv (this machine has it installed from the checkout, which the
    # venv would otherwise take as satisfied), then pip's own check that every dependency is met offline
    install = subprocess.run(
        [*pip, "install", "--no-index", "--find-links", str(wheelhouse), "--force-reinstall", "--no-deps", "aminet"],
        capture_output=True, text=True, timeout=600, env=offline,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=300, env=offline)
    problems = [line for line in check.stdout.splitlines() if line.lower().startswith("aminet")]
    assert not problems, problems
    where = subprocess.run(
        [str(py), "-c", "import aminet, search.run, experiments.run; print(aminet.__file__)"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    assert str(env_dir) in where.stdout  # the wheel's copy, not the checkout
    for script in ("aminet-search", "aminet-run"):
        help_ = subprocess.run([str(env_dir / "bin" / script), "--help"], capture_output=True, text=True, timeout=120)
        assert help_.returncode == 0 and f"usage: {script}" in help_.stdout, help_.stderr[-2000:]
