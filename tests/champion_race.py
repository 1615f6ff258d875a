"""Two searches guarding one champion at the same instant (issue 38): each process registers a version, tags
it, waits for the other at a barrier and runs the guard, ``rounds`` times on fresh registered models. Spawned
by tests/test_search_units.py; module level so that ``multiprocessing`` can start it in a fresh interpreter."""

from __future__ import annotations

import time


class SlowLink:
    """An MLflow client whose every call takes ``delay`` seconds longer: one search on a slower network path."""

    def __init__(self, client, delay: float):
        self._client, self._delay = client, delay

    def __getattr__(self, attr):
        target = getattr(self._client, attr)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            time.sleep(self._delay)
            return target(*args, **kwargs)

        return call


def guard_rounds(uri, prefix, score, protocol, fingerprint, rounds, barrier, delay, out):
    """Even rounds: both versions are tagged before either guard starts (the searches finish at the same
    instant); odd rounds: tagging races the other guard too (a rival decides before our tags exist)."""
    try:
        _rounds(uri, prefix, score, protocol, fingerprint, rounds, barrier, delay, out)
    except BaseException as exc:
        out.put((-1, score, "", None, f"{type(exc).__name__}: {exc}"))
        barrier.abort()


def _rounds(uri, prefix, score, protocol, fingerprint, rounds, barrier, delay, out):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from search.champion import guard_champion

    raw = MlflowClient(uri)
    client = SlowLink(raw, delay) if delay else raw
    for i in range(rounds):
        name = f"{prefix}-{i}"
        try:
            raw.create_registered_model(name)
        except MlflowException:
            pass  # the other search created it first
        version = raw.create_model_version(name, source="s3://race-bucket/model").version
        tags = {"aminet.val_score": repr(score), "aminet.protocol": protocol, "aminet.dataset_fingerprint": fingerprint}
        if i % 2 == 1:
            barrier.wait()
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)
        if i % 2 == 0:
            barrier.wait()
        try:
            moved, line = guard_champion(client, name, version, score, protocol, fingerprint)
            out.put((i, score, str(version), moved, line))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            out.put((i, score, str(version), None, f"{type(exc).__name__}: {exc}"))
