"""Stand-ins shared by the loss tests."""

from __future__ import annotations

import torch

from aminet.model.aminet import ModelOutput


def intra_output(v: torch.Tensor, i: torch.Tensor, num_classes: int, g: torch.Generator) -> ModelOutput:
    """The model's training output for a batch whose fused sets are the intra-modality ones only: ``v`` and
    ``i`` (B, D) are the visible and infrared embeddings of the same B identities' slots, the logits random."""
    b = len(v)
    return ModelOutput(
        features=torch.cat([v, i]),
        logits=torch.randn(2 * b, num_classes, generator=g),
        pair_index=torch.arange(b).repeat(2),
        intra_visible=v,
        intra_infrared=i,
    )
