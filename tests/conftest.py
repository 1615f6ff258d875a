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


# The longest end-to-end tests as CI measured them (--durations, 2 cores), longest first: handed out first so
# that none of them starts near the end and becomes the suite's tail (longest-processing-time-first).
LONGEST = (
    "test_slurm.py::test_a_search_runs_under_sbatch_survives_scancel_and_resumes",  # ~190 s
    "test_search.py::test_search_end_to_end_with_a_crashed_trial_retried_from_its_checkpoint",  # ~120 s
    "test_postgres.py::test_the_search_and_its_final_runs_on_a_postgresql_tracking_server",  # ~95 s
    "test_gpu_check.py::test_the_gpu_check_runs_every_stage_dry_on_the_cpu",  # ~85 s
    "test_reliability.py::test_driver_killed_then_resume_finishes_without_duplicates",  # ~85 s
    # started 4th, beside the SLURM drill, it failed in two CI runs: the drill's job ended with `ray stop`, which
    # kills every Ray on the machine (session 22: the job now stops only its own Ray; the order stays)
    "test_reliability.py::test_multi_node_drill_with_ray_start_processes",  # ~90 s
    "test_search.py::test_interrupted_search_resumes_without_rerunning_or_duplicating",  # ~85 s
    "test_search.py::test_a_time_budget_stops_starting_trials_then_the_search_selects_registers_and_retrains",  # 80
    "test_search.py::test_ctrl_c_while_every_trial_trains_is_an_interrupt_that_resumes",  # ~75 s
    "test_reliability.py::test_killed_trial_resumes_and_a_nan_trial_fails_visibly",  # ~60 s
    "test_bench.py::test_search_bench_runs_tiny",  # ~55 s
    "test_llcm_e2e.py::test_a_search_on_llcm_selects_evaluates_and_registers",  # ~55 s
    "test_search_units.py::test_two_searches_guarding_one_champion_through_a_tracking_server_leave_the_better_one",
    "test_full_disk.py::test_a_disk_that_fills_mid_search_ends_in_one_line_and_the_resume_finishes",  # ~45 s
)


def pytest_collection_modifyitems(config, items):
    """The longest end-to-end tests first (``LONGEST``, in that order), then the other end-to-end tests
    (``slow``) in collection order, then the rest: with the tests handed out one at a time
    (``--maxschedchunk 1``), the many short tests fill the cores while the long ones finish."""

    def rank(item) -> tuple[int, int]:
        name = item.nodeid.split("/")[-1]
        if name in LONGEST:
            return (0, LONGEST.index(name))
        return (1 if item.get_closest_marker("slow") else 2, 0)

    items.sort(key=rank)
