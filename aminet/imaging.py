"""What the data pipeline and the model both need about an image, in one leaf module (neither imports the
other): the ImageNet normalisation constants and the upper-body view of HMG-DBNet."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "upper_rows", "upper_view"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def upper_rows(height: int, ratio: float) -> int:
    """Rows of an image of ``height`` rows that form its upper-body view: round(ratio * height)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"upper_body_ratio {ratio!r}: must be in (0, 1]")
    return max(1, min(height, int(round(ratio * height))))


def upper_view(x: torch.Tensor, ratio: float, out_height: int | None = None) -> torch.Tensor:
    """The top ``ratio`` of each image (B, C, H, W): ``upper_rows(H, ratio)`` x W, not resampled; with
    ``out_height`` it is resized to ``out_height`` x W (which changes the person's aspect ratio)."""
    rows = upper_rows(x.shape[2], ratio)
    top = x[:, :, :rows]
    if out_height is None or rows == out_height:
        return top.contiguous(memory_format=torch.channels_last)
    out = F.interpolate(top, size=(out_height, x.shape[3]), mode="bilinear", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)
