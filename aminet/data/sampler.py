"""The cross-modal identity sampler of the field and a long-lived batch loader over the image cache.

Each step draws P identities without replacement (among those with images in both modalities), then
K visible and K infrared images of each, with replacement. The batch is laid out visible first, then
infrared, identity-major (``[v(id1) x K, v(id2) x K, ..., t(id1) x K, ...]``), as in the public code.

Randomness is keyed by (seed, epoch, step), so any step can be regenerated on its own: a run resumed
mid-epoch sees exactly the batches it would have seen.

The loader is one background thread for a whole run (no per-epoch worker respawn): it gathers the
uint8 rows of each batch from the memory-mapped cache (pinned when the target is a GPU) while the
model works on the previous batch. Augmentation happens afterwards, on the device.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CrossModalSampler", "StepBatch", "BatchLoader", "Transfer"]


class CrossModalSampler:
    def __init__(
        self,
        labels_visible: np.ndarray,
        labels_infrared: np.ndarray,
        ids_per_batch: int,
        instances: int,
        seed: int,
        iters_per_epoch: int | None = None,
    ):
        labels_visible = np.asarray(labels_visible)
        labels_infrared = np.asarray(labels_infrared)
        self.ids = np.intersect1d(np.unique(labels_visible), np.unique(labels_infrared))
        if len(self.ids) < ids_per_batch:
            raise ValueError(
                f"ids_per_batch={ids_per_batch}, but only {len(self.ids)} identities have both "
                f"visible and infrared training images"
            )
        if instances < 1:
            raise ValueError(f"instances={instances}: need at least 1")
        self.P, self.K, self.seed = ids_per_batch, instances, seed
        self._vis = {int(i): np.flatnonzero(labels_visible == i) for i in self.ids}
        self._ir = {int(i): np.flatnonzero(labels_infrared == i) for i in self.ids}
        # The public code counts an epoch as (number of visible images) / (batch size).
        self.iters_per_epoch = iters_per_epoch or max(1, len(labels_visible) // (ids_per_batch * instances))

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def step(self, epoch: int, it: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(visible rows, infrared rows, labels of the P*K pairs) for one step."""
        rng = np.random.default_rng([self.seed, epoch, it, 0x5A17])
        chosen = rng.choice(self.ids, self.P, replace=False)
        vis = np.concatenate([self._vis[int(i)][rng.integers(0, len(self._vis[int(i)]), self.K)] for i in chosen])
        ir = np.concatenate([self._ir[int(i)][rng.integers(0, len(self._ir[int(i)]), self.K)] for i in chosen])
        return vis, ir, np.repeat(chosen, self.K)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for it in range(start, self.iters_per_epoch):
            yield self.step(epoch, it)


@dataclass
class StepBatch:
    epoch: int
    it: int
    visible: torch.Tensor  # (B, H, W, 3) uint8 on the device
    infrared: torch.Tensor
    labels: torch.Tensor  # (B,) int64, the same for both halves
    # cameras of the visible and of the infrared half, (B,) int64 on the device (None when the loader has none)
    cams: tuple[torch.Tensor, torch.Tensor] | None = None


class BatchLoader:
    """Iterate ``run(start_epoch, start_it, epochs)`` for every step of a run, prefetched in one thread.

    ``rows_visible`` / ``rows_infrared`` map the training set's visible / infrared indices to rows of
    ``images`` (the cache's memory-mapped array); ``cams_visible`` / ``cams_infrared`` (optional) give
    their cameras, handed out with each batch on the host."""

    def __init__(
        self,
        images: np.ndarray,
        rows_visible: np.ndarray,
        rows_infrared: np.ndarray,
        sampler: CrossModalSampler,
        device: torch.device | str = "cpu",
        prefetch: int = 3,
        cams_visible: np.ndarray | None = None,
        cams_infrared: np.ndarray | None = None,
    ):
        self.images = images
        self.rows_visible = np.asarray(rows_visible, dtype=np.int64)
        self.rows_infrared = np.asarray(rows_infrared, dtype=np.int64)
        self.sampler = sampler
        self.device = torch.device(device)
        self.prefetch = max(1, prefetch)
        self.cams = None
        if cams_visible is not None and cams_infrared is not None:
            self.cams = (np.asarray(cams_visible), np.asarray(cams_infrared))

    def _pinned(self, t: torch.Tensor) -> torch.Tensor:
        # page-locked on a GPU machine, so the copies are asynchronous and never wait on the GPU
        return t.pin_memory() if self.device.type == "cuda" else t

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        return self._pinned(torch.from_numpy(np.asarray(self.images[rows])))

    def run(self, start_epoch: int, start_it: int, epochs: int) -> Iterator[StepBatch]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        transfer = Transfer(self.device)

        def produce() -> None:
            try:
                for epoch in range(start_epoch, epochs):
                    for it in range(start_it if epoch == start_epoch else 0, self.sampler.iters_per_epoch):
                        vis, ir, labels = self.sampler.step(epoch, it)
                        host = [
                            self._gather(self.rows_visible[vis]),
                            self._gather(self.rows_infrared[ir]),
                            self._pinned(torch.from_numpy(labels)),
                        ]
                        if self.cams is not None:
                            host += [
                                self._pinned(torch.from_numpy(self.cams[0][vis])),
                                self._pinned(torch.from_numpy(self.cams[1][ir])),
                            ]
                        item = (epoch, it, *transfer.send(host))
                        while not stop.is_set():
                            try:
                                q.put(item, timeout=0.1)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
                q.put(None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                q.put(exc)

        worker = threading.Thread(target=produce, name="aminet-batch-loader", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                epoch, it, tensors, ready = item
                vis, ir, labels, *cams = transfer.receive(tensors, ready)
                yield StepBatch(epoch, it, vis, ir, labels, (cams[0], cams[1]) if cams else None)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)


class Transfer:
    """Host-to-device copies of one step's tensors, made by the loader thread ahead of the step.

    On a GPU the copies run on a side stream, so they overlap the compute stream's work instead of queueing
    behind it; ``send`` records an event after them and ``receive`` makes the compute stream wait for that
    event (no host wait) and marks each tensor as used by the compute stream, so the caching allocator does
    not hand its memory to the side stream again while the step still reads it. Elsewhere ``send`` is a
    plain ``.to(device)``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def send(self, host: list[torch.Tensor]) -> tuple[list[torch.Tensor], object]:
        if self.stream is None:
            return [t.to(self.device) for t in host], None
        with torch.cuda.stream(self.stream):
            moved = [t.to(self.device, non_blocking=True) for t in host]
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return moved, ready

    def receive(self, tensors: list[torch.Tensor], ready) -> list[torch.Tensor]:
        if ready is None:
            return tensors
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(ready)
        for t in tensors:
            t.record_stream(compute)
        return tensors
