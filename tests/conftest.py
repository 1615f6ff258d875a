"""Fixtures shared by the test files: the tiny synthetic benchmark and the tiny training config
(their settings are defined once, in ``e2e_helpers``); how the suite shares the machine's cores."""

import os
import shutil
import tempfile

import pytest
from e2e_helpers import TINY_TRAIN, overrides, tiny_sysu

from aminet.config import Config, load_config


@pytest.fixture(scope="session")
def tiny_sysu_root(tmp_path_factory):
    """A tiny synthetic SYSU-MM01 in the official layout, generated once per test session."""
    return tiny_sysu(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_config(tiny_sysu_root, tmp_path):
    """``tiny_config(*overrides) -> Config``: the engine's tiny training setting on ``tiny_sysu_root``, with
    the image cache in the test's own folder, then the test's own ``key=value`` overrides."""

    def make(*extra: str) -> Config:
        return load_config(
            None,
            [f"data.root={tiny_sysu_root}", f"data.cache_dir={tmp_path / 'cache'}", *overrides(TINY_TRAIN), *extra],
        )

    return make


# ------------------------------------------------------------------------------------------------
# Running on every core (pytest-xdist, ``-n auto`` in pyproject.toml)
# ------------------------------------------------------------------------------------------------


def pytest_configure(config):
    """Each test process gets its own Ray temp folder, so the Ray instances of tests running side by side
    never see each other: ``ray.init()`` without an address joins the newest cluster recorded in that folder
    (a ``ray start`` or ``ray.cluster_utils.Cluster`` of another test would otherwise be joined). The folder
    is short, as Ray's socket paths under it must stay below 108 bytes. In a process that shares the cores
    with other test processes, torch (and the experiments it starts) take a fair share of threads."""
    # No test downloads by accident (CI reaches package indexes only; a download there would hang until
    # urllib gives up): missing ImageNet weights are refused as on an offline node. The download tests set
    # their own environment.
    os.environ.setdefault("AMINET_OFFLINE", "1")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    config._aminet_ray_tmp = tempfile.mkdtemp(prefix=f"ray-{worker}-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = config._aminet_ray_tmp
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_unconfigure(config):
    folder = getattr(config, "_aminet_ray_tmp", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The end-to-end tests (``slow``) first, in collection order, then the rest: with the tests handed out
    one at a time (``--maxschedchunk 1``), the many short tests fill the cores while the long ones finish."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
