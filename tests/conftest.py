"""Fixtures shared by the test files: the tiny synthetic benchmark and the tiny training config
(their settings are defined once, in ``e2e_helpers``)."""

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
