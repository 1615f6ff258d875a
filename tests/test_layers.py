"""The library's layers (issue 29): ``aminet``'s data, model, losses, engine and evaluation import neither Ray,
MLflow nor any driver package; the model and the losses do not import the data layer; the command-line
helpers are a leaf (no import circle through them). Each import runs in a fresh interpreter, so what a
module pulls in is exactly what ``sys.modules`` shows."""

import json
import subprocess
import sys

import pytest

DRIVERS = ("ray", "mlflow", "optuna", "search", "trainables", "experiments", "tracking", "serving")
LIBRARY = (
    "aminet.config",
    "aminet.data.builders",
    "aminet.data.cache",
    "aminet.data.augment",
    "aminet.data.sampler",
    "aminet.data.synthetic",
    "aminet.model.aminet",
    "aminet.losses",
    "aminet.engine.trainer",
    "aminet.evaluation.protocol",
    "aminet.evaluation.trained",
    "aminet.preflight",
    "aminet.cli",
)


def _imported(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_imports_no_driver(module):
    loaded = _imported(module)
    assert not {m for m in loaded if m.split(".")[0] in DRIVERS}, module


@pytest.mark.parametrize("module", ["aminet.model.aminet", "aminet.losses"])
def test_the_model_and_the_losses_do_not_import_the_data_layer(module):
    assert not {m for m in _imported(module) if m.startswith("aminet.data")}


def test_the_command_line_helpers_are_a_leaf():
    loaded = _imported("aminet.cli")
    assert not {m for m in loaded if m.startswith("aminet.") and m not in ("aminet.cli",)}


@pytest.mark.parametrize("module", ["trainables.aminet_trainable", "trainables.params"])
def test_the_trainables_import_nothing_from_the_search(module):
    """Issue 40: the Ray adapters sit below the search; the replay trainable (a study feature) lives in
    ``search/`` so no arrow points up from ``trainables/``."""
    assert not {m for m in _imported(module) if m.split(".")[0] == "search"}, module


def test_the_sampler_table_is_the_one_list():
    """Issue 40: argparse's choices, the ASHA refusal, the factory and the benchmarks read one table."""
    from benchmarks import external, search_study
    from search.plan import parse_args
    from search.samplers import SAMPLER_TABLE, SAMPLERS, asha_refusal
    from search.tuning import SAMPLERS as TUNING

    assert SAMPLERS == tuple(SAMPLER_TABLE) == TUNING == search_study.SAMPLERS == external.SAMPLERS
    for name in SAMPLERS:
        assert parse_args(["--sampler", name, "--scheduler", "none"]).sampler == name
        assert (asha_refusal(name, "asha") is None) == SAMPLER_TABLE[name].with_asha
        assert asha_refusal(name, "none") is None
