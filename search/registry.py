"""The model registry: the champion logged as a safe pyfunc model in the run that trained it, registered per
benchmark and data fingerprint, the ``champion`` alias moved only under the guarded rule."""

from __future__ import annotations

from search.context import Plan

__all__ = ["register_champion"]


def register_champion(client, parent_id: str, plan: Plan, winner, best, uri: str, test_text: str):
    """Log the best seed model as a pyfunc model from code (weights as a state dict, no pickle) with a
    signature and an input example, in the MLflow run of the trial that trained it, register it, tag and
    describe the version, and move ``@champion`` only under the guarded rule. Returns (version, the champion line, the label
    "<name> v<version>[ @champion]" the parent run records)."""
    import mlflow
    import numpy as np

    from aminet.data.cache import ImageCache
    from aminet.evaluation.trained import load_trained
    from search import champion
    from search.tuning import trial_run
    from serving.pyfunc import log_pyfunc_model
    from tracking.reporting import aminet_version, git_commit

    with best.checkpoint.as_directory() as folder:
        model, cfg = load_trained(folder, device="cpu")
    base = plan.base
    cache = ImageCache.open(base.data.root, base.data.height, base.data.width, base.data.cache_dir, progress=False)
    example = np.array(cache.images[:2])  # two training-set images at the model's size
    trial_id = str(best.metrics.get("trial_id", winner.trial_id))
    found = trial_run(client, client.get_run(parent_id).info.experiment_id, parent_id, trial_id)
    source_run = found.info.run_id if found is not None else parent_id
    data_fp = plan.fingerprint  # computed once, by preflight
    name = champion.registered_name(plan.space.dataset, plan.synthetic_data, data_fp)
    protocol = champion.validation_protocol(base)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=source_run):  # the model's source is the run that trained it
        info = log_pyfunc_model(
            model,
            cfg,
            example,
            name="model",
            registered_model_name=name,
            pip_requirements=["torch", "torchvision", "numpy", "pyyaml", "aminet"],
            await_registration_for=60,
        )
    version = str(info.registered_model_version)
    tags = {
        "aminet.val_score": repr(winner.mean),
        "aminet.val_score_std": repr(winner.std),
        "aminet.protocol": protocol,
        "aminet.dataset_fingerprint": data_fp,
        "aminet.search": plan.name,
        "aminet.search_run": parent_id,
        "aminet.source_run": source_run,
        "aminet.seeds": " ".join(map(str, winner.seeds)),
        "aminet.synthetic": str(plan.synthetic_data).lower(),
        "aminet.trial_id": trial_id,
        "aminet.git_commit": git_commit(),  # "unknown" unless aminet runs from its own checkout
        "aminet.version": aminet_version(),
        "aminet.checkpoint": str(best.checkpoint.path),
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    client.update_model_version(
        name,
        version,
        description=(
            f"AMINet selected by search `{plan.name}` on {plan.space.dataset} "
            f"({'synthetic' if plan.synthetic_data else 'real'} data, fingerprint `{data_fp}`), aminet {aminet_version()} commit `{git_commit()[:12]}`.\n\n"
            f"Validation score (R1 + mAP) / 2: {100 * winner.mean:.2f} +- {100 * winner.std:.2f} % over seeds "
            f"{winner.seeds} (protocol `{protocol}`); this version is the seed model best on validation.\n\n"
            f"Input: uint8 images (N, {cfg.data.height}, {cfg.data.width}, 3); params modality, feature, flip; output: "
            f"L2-normalised features.\n\n```\n{test_text.strip()}\n```"
        ),
    )
    moved, line = champion.guard_champion(client, name, version, winner.mean, protocol, data_fp)
    return version, line, f"{name} v{version}" + (" @champion" if moved else "")
