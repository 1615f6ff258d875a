"""A trained AMINet as an MLflow pyfunc model that loads without unpickling anything.

The registered champion is three files: ``weights.pt`` (the model's ``state_dict``, read back with
``torch.load(weights_only=True)``, which refuses arbitrary objects), ``config.yaml`` (the run's whole
config) and this package's ``serving/mlflow_model.py`` as MLflow's "model from code" (MLflow runs that file,
which is ours and installed, instead of unpickling a Python object). Input: uint8 images (N, H, W, 3) at
the model's size, RGB for visible and the 3-channel thermal image for infrared; params ``modality``
(``visible`` / ``infrared``), ``feature`` (``bn`` / ``pool``, default the config's ``eval.feature``) and
``flip`` (default the config's ``eval.flip``). Output: L2-normalised float32 features (N, D), computed
exactly as the evaluation protocol computes them (``aminet.evaluation.protocol.extract_features``)::

    model = mlflow.pyfunc.load_model("models:/aminet-sysu-real-1a2b3c4d@champion")
    feats = model.predict(images, params={"modality": "infrared"})
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel as _PythonModel

from aminet.config import Config

__all__ = ["AMINetPyfunc", "save_weights", "load_weights", "log_pyfunc_model", "MODEL_CODE"]

MODEL_CODE = Path(__file__).resolve().parent / "mlflow_model.py"


def save_weights(model: torch.nn.Module, path: str | Path) -> Path:
    """The model's tensors only (no pickled objects beyond a dict of tensors)."""
    path = Path(path)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def load_weights(weights: str | Path, config: str | Path):
    """(model in eval mode, config) from ``weights.pt`` and ``config.yaml``; ``weights_only`` loading."""
    from aminet.evaluation.trained import model_from_weights

    cfg = Config.load(Path(config))
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    return model_from_weights(cfg, state).eval(), cfg


class AMINetPyfunc(_PythonModel):
    """The pyfunc wrapper (see the module doc)."""

    # MLflow inspects ``predict``'s type hints when the class is defined and asks for some; the model has an
    # explicit signature instead (images as a uint8 tensor), which type hints cannot express.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.model, self.cfg = load_weights(context.artifacts["weights"], context.artifacts["config"])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        from aminet.evaluation.protocol import extract_features

        params = params or {}
        images = np.asarray(model_input)
        h, w = self.cfg.data.height, self.cfg.data.width
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}")
        feature = params.get("feature") or self.cfg.eval.feature
        flip = params.get("flip")
        feats = extract_features(
            self.model.extract,
            images,
            params.get("modality") or "visible",
            batch_size=self.cfg.eval.batch_size,
            device="cpu",
            flip=self.cfg.eval.flip if flip is None else bool(flip),
        )
        if feature not in feats:
            raise ValueError(f"feature {feature!r}: choose one of {sorted(feats)}")
        return feats[feature].numpy()


def log_pyfunc_model(model: torch.nn.Module, cfg: Config, example: np.ndarray, **log_model_kwargs):
    """Log ``model`` with ``mlflow.pyfunc.log_model`` as a model from code (no pickle), with a signature
    inferred from ``example`` (uint8 images at the model's size) and that example as the input example.
    Extra keyword arguments go to ``log_model`` (``name``, ``registered_model_name``, ...)."""
    import mlflow
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        weights = save_weights(model, Path(tmp) / "weights.pt")
        config = Path(tmp) / "config.yaml"
        config.write_text(cfg.to_yaml())
        wrapper = AMINetPyfunc()
        wrapper.model, wrapper.cfg = model.eval(), cfg
        output = wrapper.predict(None, example)
        params = {"modality": "visible", "feature": cfg.eval.feature, "flip": bool(cfg.eval.flip)}
        signature = infer_signature(example, output, params=params)
        return mlflow.pyfunc.log_model(
            python_model=str(MODEL_CODE),
            artifacts={"weights": str(weights), "config": str(config)},
            signature=signature,
            input_example=example,
            **log_model_kwargs,
        )
