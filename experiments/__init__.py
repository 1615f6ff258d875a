"""The paper's and the ablations' configs (YAML, installed with the package) and the fixed-config runner
(``experiments.run.main``: ``python -m experiments.run`` or ``python experiments/run.py``), which the
search's ``--retrain-best`` calls in its Ray tasks."""
