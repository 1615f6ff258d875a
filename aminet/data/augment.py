"""Batched augmentation on whatever device the batch lives on, with per-sample randomness.

Input: uint8 images (B, H, W, 3) as they come from the cache. Per sample, in order:
    1. zero-pad by ``pad`` and crop back to H x W at a random offset, and flip horizontally with
       probability ``flip_p`` (both done by one gather, in uint8);
    2. visible images only, with probability ``channel_aug_p``: replace all three channels by one random
       channel (R, G or B) or by the grayscale image (each 1/4), the channel augmentation of VI-ReID
       (computed on [0, 1] values, before normalisation);
    3. ImageNet normalisation;
    4. random erasing with probability ``erase_p``: a rectangle of 2-40 % of the area, aspect ratio
       log-uniform in [0.3, 3.3], set to 0 (the normalised mean);
    5. the upper-body view: the top ``round(upper_body_ratio * H)`` rows of the augmented image, at their
       own resolution (so the view's height follows the share and the person keeps its proportions),
       so both branches see the same augmented person. A fixed ``upper_height`` instead rescales the
       view to that height (bilinear), which stretches or squashes it: only for reproducing older runs.

All random parameters are drawn on the CPU from a ``torch.Generator``, so a seed gives the same
augmentation on every device. Outputs are float32 (B, 3, H, W) in the channels-last memory layout.

On a GPU nothing here waits for the device: the per-sample parameters (a few hundred bytes) go over in
pinned memory with asynchronous copies and the constants are made once per device, so the host can
queue the next step's augmentation while the GPU still runs the current step.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from aminet.imaging import IMAGENET_MEAN, IMAGENET_STD, upper_rows, upper_view

__all__ = ["DeviceAugment", "normalize", "upper_view", "upper_rows", "to_device"]

_GRAY = (0.299, 0.587, 0.114)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without waiting for the device (pinned, asynchronous copy)."""
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.cache
def _constants(device: str) -> dict[str, torch.Tensor]:
    """Normalisation constants and the channel-augmentation mixing rows, made once per device."""
    dev = torch.device(device)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    # rows 0-2: keep channel R, G or B in all three; row 3: the grayscale image (stays on the host)
    mix = torch.cat([torch.eye(3), torch.tensor([_GRAY])])
    f32 = {"device": dev, "dtype": torch.float32}
    return {
        "mean": mean.to(**f32),
        "std": std.to(**f32),
        "scale": (1.0 / (255.0 * std)).to(**f32),
        "shift": (-mean / std).to(**f32),
        "mix": mix,
    }


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) normalised with the ImageNet statistics."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    c = _constants(str(x.device))
    return (x - c["mean"]) / c["std"]


class DeviceAugment:
    def __init__(
        self,
        upper_body_ratio: float = 0.5,
        upper_height: int | None = None,
        pad: int = 10,
        flip_p: float = 0.5,
        erase_p: float = 0.5,
        channel_aug_p: float = 0.5,
    ):
        self.upper_body_ratio = upper_body_ratio
        self.upper_height = upper_height
        self.pad, self.flip_p, self.erase_p, self.channel_aug_p = pad, flip_p, erase_p, channel_aug_p

    @classmethod
    def from_config(cls, cfg) -> DeviceAugment:
        d = cfg.data
        return cls(cfg.model.upper_body_ratio, d.upper_height, d.pad, d.flip_p, d.erase_p, d.channel_aug_p)

    def __call__(
        self, images: torch.Tensor, visible: torch.Tensor | bool, generator: torch.Generator, structure: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Augment uint8 (B, H, W, 3); ``visible`` is a bool per sample (or one bool for the batch).
        Returns (full view, upper-body view), both float32 channels-last; with ``structure`` also the same two
        views before random erasing and with the padding replicated from the border instead of zeros (what
        PESAM's phase congruency reads with ``model.phase_input=clean``: no false edges)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[3] != 3:
            raise ValueError(f"images: expected uint8 (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        b, h, w, _ = images.shape
        return self.apply(images, self.draw(b, h, w, visible, generator), structure)

    def draw(self, b: int, h: int, w: int, visible: torch.Tensor | bool, generator: torch.Generator) -> dict:
        """Every random choice of one batch, on the host (the generator is a CPU one; data-dependent steps such
        as which samples get the channel augmentation are resolved here, so ``apply`` has none)."""
        g = generator
        if isinstance(visible, bool):
            visible = torch.full((b,), visible, dtype=torch.bool)
        visible = visible.to("cpu", torch.bool)
        p = self.pad
        oy = torch.randint(0, 2 * p + 1, (b,), generator=g)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=g)
        flip = torch.rand(b, generator=g) < self.flip_p
        chan_apply = (torch.rand(b, generator=g) < self.channel_aug_p) & visible
        chan_kind = torch.randint(0, 4, (b,), generator=g)
        erase_apply = torch.rand(b, generator=g) < self.erase_p
        area = torch.empty(b).uniform_(0.02, 0.4, generator=g) * (h * w)
        log_r = torch.empty(b).uniform_(math.log(0.3), math.log(1 / 0.3), generator=g)
        aspect = torch.exp(log_r)
        eh = torch.sqrt(area * aspect).round().clamp(1, h).long()
        ew = torch.sqrt(area / aspect).round().clamp(1, w).long()
        ey = (torch.rand(b, generator=g) * (h - eh + 1).float()).long()
        ex = (torch.rand(b, generator=g) * (w - ew + 1).float()).long()
        ar_h, ar_w = torch.arange(h), torch.arange(w)
        chosen = torch.nonzero(chan_apply).squeeze(1)
        out = {
            "rows": oy[:, None] + ar_h[None, :],
            "cols": torch.where(flip[:, None], ox[:, None] + (w - 1 - ar_w)[None, :], ox[:, None] + ar_w[None, :]),
            "chosen": chosen,
            "mix": _constants("cpu")["mix"][chan_kind[chosen]],
            "erase": bool(erase_apply.any()),
        }
        if out["erase"]:
            out["row_in"] = (ar_h[None, :] >= ey[:, None]) & (ar_h[None, :] < (ey + eh)[:, None]) & erase_apply[:, None]
            out["col_in"] = (ar_w[None, :] >= ex[:, None]) & (ar_w[None, :] < (ex + ew)[:, None])
        return out

    def _crop_colour(self, images: torch.Tensor, d: dict, pad_mode: str) -> torch.Tensor:
        """Pad + crop + flip (one gather) and the channel augmentation: float32 (B, 3, H, W), values 0..255, not
        yet normalised."""
        b = images.shape[0]
        dev = images.device
        p = self.pad
        if not p:
            padded = images
        elif pad_mode == "constant":  # zeros, on the uint8 images
            padded = F.pad(images.permute(0, 3, 1, 2), (p, p, p, p)).permute(0, 2, 3, 1)
        else:
            padded = F.pad(images.permute(0, 3, 1, 2).float(), (p, p, p, p), mode=pad_mode).permute(0, 2, 3, 1)
        bidx = torch.arange(b, device=dev)[:, None, None]
        crop = padded[bidx, to_device(d["rows"], dev)[:, :, None], to_device(d["cols"], dev)[:, None, :]]  # (B,H,W,3)

        # channel augmentation on [0, 1] values (visible images only), on the chosen samples.
        x = crop.permute(0, 3, 1, 2).float()  # 0..255; channels-last memory already
        if d["chosen"].numel():
            idx = to_device(d["chosen"], dev)
            mixed = torch.einsum("bc,bchw->bhw", to_device(d["mix"], dev), x[idx])[:, None].expand(-1, 3, -1, -1)
            x[idx] = mixed
        return x

    def _outside(self, d: dict, h: int, w: int, dev: torch.device) -> torch.Tensor:
        """(B, 1, H, W) bool: the output pixels that the crop took from the padding."""
        p = self.pad
        rows = (d["rows"] < p) | (d["rows"] >= p + h)
        cols = (d["cols"] < p) | (d["cols"] >= p + w)
        return to_device(rows, dev)[:, None, :, None] | to_device(cols, dev)[:, None, None, :]

    def apply(self, images: torch.Tensor, d: dict, structure: bool = False) -> tuple[torch.Tensor, ...]:
        """The drawn augmentation on the images' device: host parameters go over as small asynchronous copies.
        ``structure``: also the views before erasing, padded by replication (see ``__call__``)."""
        dev = images.device
        const = _constants(str(dev))
        # 1-2. pad + crop + flip, channel augmentation. With ``structure`` one gather serves both views: the
        # zero-padded crop is the replicate-padded one with its padding pixels set to 0 (the channel mix is
        # linear, so a zero pixel stays zero).
        if structure:
            s = self._crop_colour(images, d, "replicate")
            x = s.masked_fill(self._outside(d, images.shape[1], images.shape[2], dev), 0.0) if self.pad else s
        else:
            x = self._crop_colour(images, d, "constant")
        # 3. normalisation, one multiply-add: (x / 255 - mean) / std.
        x = torch.addcmul(const["shift"], x, const["scale"])

        # 4. random erasing: the rectangle is the outer product of a row band and a column band.
        if d["erase"]:
            box = to_device(d["row_in"], dev)[:, None, :, None] & to_device(d["col_in"], dev)[:, None, None, :]
            x = x.masked_fill(box, 0.0)

        x = x.contiguous(memory_format=torch.channels_last)
        # 5. the upper-body view of the same augmented image.
        views = (x, upper_view(x, self.upper_body_ratio, self.upper_height))
        if not structure:
            return views
        s = torch.addcmul(const["shift"], s, const["scale"]).contiguous(memory_format=torch.channels_last)
        return (*views, s, upper_view(s, self.upper_body_ratio, self.upper_height))

    def eval_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """No randomness: normalised full view and its upper-body view."""
        x = normalize(images).contiguous(memory_format=torch.channels_last)
        return x, upper_view(x, self.upper_body_ratio, self.upper_height)
