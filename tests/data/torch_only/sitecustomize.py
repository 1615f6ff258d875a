"""Makes this Python a torch-only GPU node: with this folder first on PYTHONPATH, importing Ray, Optuna or
MLflow (or anything under them) raises ModuleNotFoundError, in this process and in every child that inherits
the environment. Used by tests/test_gpu_check.py to keep scripts/gpu_check.py's torch-only path alive."""

import importlib.abc
import sys

BLOCKED = ("ray", "optuna", "mlflow")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a torch-only node)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
