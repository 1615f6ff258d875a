"""Pretrained weights, outside the model file (as timm's ``_builder.py`` keeps them): where a file is, fetching
torchvision's ImageNet weights when they are missing, and the offline refusal.

``model.weights`` is ``none``, ``imagenet`` (torchvision's IMAGENET1K_V1 weights of ``model.arch``) or a path.
For ``imagenet`` the file is read from torchvision's cache (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``). When it is missing it is downloaded through torch's own hub downloader,
into that cache, with its hash check (the hash prefix in the file name must match the file's SHA-256;
a mismatch leaves nothing behind), unless downloads are off: ``AMINET_OFFLINE=1`` in the environment (the
runners' ``--offline`` sets it, so every trial and task they start inherits it), as on GPU nodes without
internet. Then the run is refused in one line naming the file to copy and the command that fetches it on a
machine with access:

    python -m aminet.model.weights resnet50            # prints where the file is, downloading it if needed
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torchvision

__all__ = ["WeightsUnavailable", "imagenet_weights_path", "check_weights", "offline", "OFFLINE_ENV"]

OFFLINE_ENV = "AMINET_OFFLINE"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had (missing and not downloadable, unreadable, or
    not the architecture's); the message is one line naming the file."""


def offline() -> bool:
    """Downloads are off: ``AMINET_OFFLINE`` is set to anything but ``0`` / empty."""
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0", "false", "False")


def _imagenet_url(arch: str) -> str:
    try:
        return torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url
    except (ValueError, AttributeError) as exc:
        raise WeightsUnavailable(f"model.weights=imagenet: torchvision has no ImageNet weights of {arch!r} ({exc})")


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_imagenet_url(arch))


def fetch_command(arch: str) -> str:
    return f"python -m aminet.model.weights {arch}"


def download_imagenet(arch: str, progress: bool = True) -> Path:
    """Download ``arch``'s ImageNet weights into torchvision's cache through torch's hub downloader (hash
    checked; a failed or mismatching download leaves no file). ``WeightsUnavailable`` (one line) on failure."""
    url, path = _imagenet_url(arch), imagenet_weights_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=_hash_prefix(path), progress=progress)
    except Exception as exc:  # noqa: BLE001 - a network error, a refused connection, a hash mismatch: one line
        detail = " ".join(str(exc).split())[:200]
        raise WeightsUnavailable(
            f"model.weights=imagenet: downloading {url} to {path} failed ({type(exc).__name__}: {detail}); copy the "
            f"file there from a machine with access ({fetch_command(arch)}), or use model.weights=none"
        ) from None
    return path


def _hash_prefix(path: Path) -> str | None:
    """The SHA-256 prefix torchvision's file names carry (``resnet50-0676ba61.pth``), as torch.hub checks it."""
    stem = path.name.split(".")[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    return prefix if prefix and all(c in "0123456789abcdef" for c in prefix) else None


def check_weights(arch: str, weights: str, download: bool = True) -> Path | None:
    """The weights file a model would load (None for ``none``), downloading torchvision's ImageNet file when it
    is missing and downloads are allowed; ``WeightsUnavailable`` (one line) otherwise."""
    if weights == "none":
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"model.weights: file not found: {path}")
        return path
    path = imagenet_weights_path(arch)
    if path.is_file():
        return path
    if offline() or not download:
        raise WeightsUnavailable(
            f"model.weights=imagenet: the torchvision ImageNet weights of {arch} are not on this machine (expected "
            f"{path}) and downloads are off ({OFFLINE_ENV}=1 / --offline); copy the file there from a machine "
            f"with access (`{fetch_command(arch)}` prints where it is), give a path with "
            f"model.weights=/path/to/{path.name}, or train from scratch with model.weights=none"
        )
    print(f"[aminet] downloading the ImageNet weights of {arch} to {path}", file=sys.stderr, flush=True)
    return download_imagenet(arch)


def main(argv: list[str] | None = None) -> int:
    from aminet.cli import ArgumentParser

    p = ArgumentParser(
        prog="python -m aminet.model.weights",
        description="Fetch torchvision's ImageNet weights of an architecture into its cache and print the path.",
    )
    p.add_argument("arch", nargs="+", help="e.g. resnet50 (AMINet's), resnet18 (the smoke runs')")
    args = p.parse_args(argv)
    try:
        for arch in args.arch:
            print(check_weights(arch, "imagenet"))
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
