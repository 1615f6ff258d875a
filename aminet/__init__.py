"""AMINet for visible-infrared person re-identification: data, model, losses, engine, evaluation.

A pure library: it never imports Ray. ``trainables/`` and ``search/`` adapt it to Ray Tune and Optuna.
"""

__version__ = "0.1.0"
