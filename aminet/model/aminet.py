"""AMINet: HMG-DBNet (full-body + upper-body branches) with IFFS fusion and PESAM, on a ResNet.

Backbone (the AGW baseline the paper builds on): torchvision's ResNet-18/34/50 with modality-specific
stems (conv1, bn1, relu, maxpool: one copy per modality), shared layer1-4, last stride 1 (an 18x9 map at
288x144) and non-local blocks after the last 2 blocks of layer2 and the last 3 of layer3 (embedded
dot product divided by N, W-path BN initialised to zero, so each block starts as the identity).

PESAM (between stem and body): phase congruency of the input (``aminet.model.phase``), average-pooled
to the stem's resolution; an edge-guided attention ``A = sigmoid(W_e * PC)`` that modulates the stem
features (``F' = F * (0.5 + A)``, the identity at initialisation); a phase stem (conv + BN + ReLU on PC)
giving phase features; and learned weights on the simplex (softmax of three logits: visible,
infrared, phase) mixing them. An image has one modality, so its stem output is
``(a_m F'_m + a_phase F_phase) / (a_m + a_phase)`` with m its modality (the paper's Eq. 11 applied per
image); the phase weight starts small so a pretrained stem is not disturbed at the start.

HMG-DBNet: a full-body branch on the image and an upper-body branch on the upper-body view (the top
``round(upper_body_ratio * H)`` rows of the image, not rescaled, from ``aminet.data.augment.upper_view``);
each ends in its own GeM pooling. Whether both branches share the backbone is ``share_branches``.

Mixed batches (``mixed_bn``, default on): in training, each branch runs the visible half through the
visible stem and the infrared half through the infrared stem, then concatenates them, so PESAM and every
shared layer (and each of its BatchNorms) run once per branch on one visible+infrared batch, as the
field's reference code does: the BN statistics of training then contain the modality shift that the
test-time running estimates contain. The fusion runs once on all intra and cross pairs.

IFFS: a fusion head phi_shared (Linear 2D -> D, BN, ReLU) maps a (global, part) pair into the embedding
space. Intra-modality fusion pairs each image's own global and part features; cross-modality fusion
pairs the global feature of one modality with the part feature of the identity-paired image of the
other modality (sample k of the visible half and sample k of the infrared half share an identity, by
the sampler's layout). All fused features share the BN neck (bias frozen) and the bias-free classifier.

Evaluation embedding (``extract``): per image, one modality at a time: the intra-fused feature
("pool") and its BN-neck output ("bn"); without the upper-body branch, the global GeM feature.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from aminet.imaging import IMAGENET_MEAN, IMAGENET_STD, upper_view
from aminet.model.phase import phase_congruency_rgb
from aminet.model.weights import WeightsUnavailable, check_weights, imagenet_weights_path  # noqa: F401 - re-exported

__all__ = [
    "AMINet",
    "NonLocal",
    "GeM",
    "PESAM",
    "DualStemResNet",
    "WeightsUnavailable",
    "imagenet_weights_path",
    "check_weights",
    "build_model",
    "ModelOutput",
]

MODALITIES = ("visible", "infrared")


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


class NonLocal(nn.Module):
    """Embedded dot-product non-local block, normalised by the number of positions, no softmax. ``inner``:
    the embedding width (channels / 2 in the original design; 1 in AGW's released code)."""

    def __init__(self, channels: int, inner: int | None = None):
        super().__init__()
        inter = max(1, channels // 2 if inner is None else inner)
        self.inter = inter
        self.g = nn.Conv2d(channels, inter, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = h * w
        g = self.g(x).reshape(b, self.inter, n).transpose(1, 2)
        theta = self.theta(x).reshape(b, self.inter, n).transpose(1, 2)
        phi = self.phi(x).reshape(b, self.inter, n)
        y = ((theta @ phi) / n) @ g  # (b, n, inter)
        y = y.transpose(1, 2).reshape(b, self.inter, h, w)
        return x + self.W(y)


class GeM(nn.Module):
    """Generalised mean pooling, computed in float32: (mean x^p)^(1/p)."""

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float().clamp(min=1.0)
        x = x.float().clamp(min=self.eps).pow(p)
        return x.mean(dim=(2, 3)).pow(1.0 / p)


class BNNeck(nn.Module):
    """BatchNorm1d with a frozen zero bias, weight ~ N(1, 0.01) (AGW)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.normal_(self.bn.weight, 1.0, 0.01)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class PESAM(nn.Module):
    """Phase-enhanced structural attention on the stem output (see the module docstring)."""

    def __init__(self, channels: int, phase_init: float = -2.0):
        super().__init__()
        self.attention = nn.Conv2d(1, 1, 3, padding=1)  # W_e
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)
        self.phase_stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.logits = nn.Parameter(torch.tensor([0.0, 0.0, phase_init]))  # visible, infrared, phase

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, feat: torch.Tensor, pc: torch.Tensor, modality: str | Sequence[tuple[str, int]]) -> torch.Tensor:
        """``modality``: one name for the whole batch, or ``[(name, rows), ...]`` for a batch made of
        consecutive blocks of each modality (the visible+infrared training batch)."""
        pc = F.adaptive_avg_pool2d(pc.to(feat.dtype), feat.shape[-2:])
        attn = torch.sigmoid(self.attention(pc))
        modulated = feat * (0.5 + attn)
        phase = self.phase_stem(pc)
        alpha = torch.softmax(self.logits.float(), dim=0)
        if isinstance(modality, str):
            a_m = alpha[MODALITIES.index(modality)]
        else:  # one weight per row, built on the device from the block sizes (no host round trip)
            a_m = torch.cat([alpha[MODALITIES.index(m)].expand(n) for m, n in modality]).view(-1, 1, 1, 1)
            a_m = a_m.to(modulated.dtype)
        a_p = alpha[2]
        return (a_m * modulated + a_p * phase) / (a_m + a_p)


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------


def _load_resnet(arch: str, weights: str) -> nn.Module:
    net = getattr(torchvision.models, arch)(weights=None)
    path = check_weights(arch, weights)
    if path is None:
        return net
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise WeightsUnavailable(f"model.weights: cannot read {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    missing, unexpected = net.load_state_dict(state, strict=False)
    body_missing = [k for k in missing if not k.startswith("fc.")]
    if body_missing or unexpected:
        raise WeightsUnavailable(
            f"model.weights: {path} does not match {arch} "
            f"(missing {body_missing[:3]}..., unexpected {list(unexpected)[:3]}...)"
        )
    return net


class DualStemResNet(nn.Module):
    """ResNet with one stem per modality, shared layer1-4, last stride configurable, non-local blocks."""

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str = "none",
        last_stride: int = 1,
        non_local: bool = True,
        non_local_width: str = "agw",
    ):
        super().__init__()
        if non_local_width not in ("agw", "half"):
            raise ValueError(f"non_local_width {non_local_width!r}: choose agw or half")
        net = _load_resnet(arch, weights)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stems = nn.ModuleDict({"visible": stem, "infrared": copy.deepcopy(stem)})
        if last_stride == 1:
            block = net.layer4[0]
            if isinstance(block, torchvision.models.resnet.Bottleneck):
                block.conv2.stride = (1, 1)
            else:
                block.conv1.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        layers = []
        for idx, layer in enumerate([net.layer1, net.layer2, net.layer3, net.layer4], start=1):
            blocks = list(layer.children())
            n_nl = {2: 2, 3: 3}.get(idx, 0) if non_local else 0
            first_nl = len(blocks) - min(n_nl, len(blocks))
            seq = []
            for i, blk in enumerate(blocks):
                seq.append(blk)
                if i >= first_nl:
                    seq.append(NonLocal(_out_channels(blk), 1 if non_local_width == "agw" else None))
            layers.append(nn.Sequential(*seq))
        self.body = nn.Sequential(*layers)
        self.stem_channels = net.conv1.out_channels
        self.out_channels = _out_channels(list(net.layer4.children())[-1])

    def stem(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.stems[modality](x)


def _out_channels(block: nn.Module) -> int:
    if isinstance(block, torchvision.models.resnet.Bottleneck):
        return block.conv3.out_channels
    return block.conv2.out_channels


# --------------------------------------------------------------------------------------------------
# AMINet
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelOutput:
    """Training-time output. ``features`` (N, D) are the pre-neck embeddings of every fused set
    (intra visible, intra infrared, then cross visible-infrared and infrared-visible when IFFS is on),
    ``logits`` their classifier outputs, ``pair_index`` maps each row to a sample of the batch half
    (0..B-1), ``intra_visible`` / ``intra_infrared`` are the per-modality embeddings used by the
    distribution-alignment losses."""

    features: torch.Tensor
    logits: torch.Tensor
    pair_index: torch.Tensor
    intra_visible: torch.Tensor
    intra_infrared: torch.Tensor
    global_features: torch.Tensor | None = None  # (2B, D) full-body branch, visible rows then infrared
    part_features: torch.Tensor | None = None  # (2B, D) upper-body branch, same rows (None without it)
    # logits of the global and of the upper-body branch features (their own necks and classifiers), when the
    # branches are supervised directly (loss.branch_supervision); None otherwise
    branch_logits: tuple[torch.Tensor, torch.Tensor] | None = None


class AMINet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        arch: str = "resnet50",
        weights: str = "none",
        last_stride: int = 1,
        non_local: bool = True,
        upper_body: bool = True,
        upper_body_ratio: float = 0.5,
        upper_height: int | None = None,
        share_branches: bool = False,
        iffs: bool = True,
        pesam: bool = True,
        gem_p: float = 3.0,
        gem_learnable: bool = False,
        fusion: str = "mlp",
        pc_eps: float = 1e-4,
        mixed_bn: bool = True,
        non_local_width: str = "agw",
        neck_stats: str = "intra",
        branch_heads: bool = True,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes {num_classes}: need at least 2 identities")
        self.upper_body, self.iffs, self.use_pesam = upper_body, iffs and upper_body, pesam
        self.upper_body_ratio, self.upper_height = upper_body_ratio, upper_height
        self.mixed_bn = mixed_bn
        self.backbone = DualStemResNet(arch, weights, last_stride, non_local, non_local_width)
        dim = self.backbone.out_channels
        self.dim = dim
        self.part_backbone = None
        if upper_body and not share_branches:
            self.part_backbone = copy.deepcopy(self.backbone)
        self.pesam = PESAM(self.backbone.stem_channels) if pesam else None
        self.part_pesam = copy.deepcopy(self.pesam) if (pesam and self.part_backbone is not None) else None
        self.pool_global = GeM(gem_p, gem_learnable)
        self.pool_part = GeM(gem_p, gem_learnable) if upper_body else None
        self.fusion = None
        if fusion not in ("residual", "mlp"):
            raise ValueError(f"fusion {fusion!r}: choose residual or mlp")
        self.fusion_kind = fusion
        if upper_body:
            if fusion == "residual":
                # g + BN(W [g; p]) with the BN weight at zero: the global feature at initialisation.
                self.fusion = nn.Sequential(nn.Linear(2 * dim, dim, bias=False), nn.BatchNorm1d(dim))
                nn.init.zeros_(self.fusion[1].weight)
            else:
                self.fusion = nn.Sequential(
                    nn.Linear(2 * dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)
                )
        if neck_stats not in ("intra", "all"):
            raise ValueError(f"neck_stats {neck_stats!r}: choose intra or all")
        self.neck_stats = neck_stats
        self.neck = BNNeck(dim)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)
        self.branch_necks = self.branch_classifiers = None
        if branch_heads and upper_body:  # global and upper-body branch: each its own neck and classifier
            self.branch_necks = nn.ModuleList([BNNeck(dim), BNNeck(dim)])
            self.branch_classifiers = nn.ModuleList([nn.Linear(dim, num_classes, bias=False) for _ in range(2)])
            for c in self.branch_classifiers:
                nn.init.normal_(c.weight, 0.0, 0.001)
        self.pc_eps = pc_eps
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ---- pieces -----------------------------------------------------------------------------------
    def _phase(self, x: torch.Tensor) -> torch.Tensor:
        """Phase congruency of the normalised images, fp32, as one opaque op inside compiled graphs
        (``aminet.model.phase.phase_congruency_rgb``)."""
        return phase_congruency_rgb(x, self._mean, self._std, self.pc_eps)

    def _branch(
        self, images: Sequence[tuple[str, torch.Tensor]], part: bool, phase_from: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """GeM features of one branch for ``[(modality, images), ...]``: each block goes through its own
        modality stem, then the blocks are concatenated, so PESAM and every shared layer (and its BN)
        run once on the whole batch, as they do at test time on a mixed batch's statistics. PESAM's phase
        congruency reads ``phase_from`` (one tensor per block, e.g. the images before random erasing) when
        given, else the images themselves."""
        backbone = self.part_backbone if (part and self.part_backbone is not None) else self.backbone
        pesam = self.part_pesam if (part and self.part_pesam is not None) else self.pesam
        stems = [backbone.stem(x, m) for m, x in images]
        f = stems[0] if len(stems) == 1 else torch.cat(stems)
        if pesam is not None:
            sources = list(phase_from) if phase_from is not None else [x for _, x in images]
            x = sources[0] if len(sources) == 1 else torch.cat(sources)
            f = pesam(f, self._phase(x), [(m, x.shape[0]) for m, x in images])
        f = backbone.body(f)
        return (self.pool_part if part else self.pool_global)(f)

    def _pair(
        self, visible: torch.Tensor, infrared: torch.Tensor, part: bool, phase_from: tuple | None = None
    ) -> torch.Tensor:
        """Branch features of the visible then the infrared half: (2B, D)."""
        if self.mixed_bn:
            return self._branch([("visible", visible), ("infrared", infrared)], part, phase_from)
        pv, pi = (None, None) if phase_from is None else ([phase_from[0]], [phase_from[1]])
        return torch.cat(
            [self._branch([("visible", visible)], part, pv), self._branch([("infrared", infrared)], part, pi)]
        )

    def _train_neck(self, features: torch.Tensor, intra_rows: int) -> torch.Tensor:
        """The BN neck in training. ``neck_stats="intra"``: every row is normalised with the batch statistics of
        the intra-modality rows (the first ``intra_rows``), and the running estimates, which normalise every
        test feature, follow those rows only; ``"all"``: a plain BatchNorm over every row."""
        if self.neck_stats == "all" or intra_rows == features.shape[0] or not self.training:
            return self.neck(features)
        bn = self.neck.bn
        x = features.float()
        intra = x[:intra_rows]
        mean, var = intra.mean(dim=0), intra.var(dim=0, unbiased=False)
        with torch.no_grad():  # as BatchNorm: the running variance takes the unbiased estimate
            m = bn.momentum
            bn.running_mean.mul_(1.0 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1.0 - m).add_(var.detach() * intra_rows / max(1, intra_rows - 1), alpha=m)
            bn.num_batches_tracked.add_(1)
        return (x - mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias

    def _fuse(self, g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        refined = self.fusion(torch.cat([g, p], dim=1))
        return g + refined if self.fusion_kind == "residual" else refined

    def embed(self, x: torch.Tensor, modality: str, upper: torch.Tensor | None = None) -> torch.Tensor:
        """The pre-neck embedding of images of one modality (intra-modality fusion)."""
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r}: choose visible or infrared")
        g = self._branch([(modality, x)], part=False)
        if not self.upper_body:
            return g
        if upper is None:
            upper = upper_view(x, self.upper_body_ratio, self.upper_height)
        return self._fuse(g, self._branch([(modality, upper)], part=True))

    # ---- training -------------------------------------------------------------------------------
    def forward(
        self,
        visible: torch.Tensor,
        infrared: torch.Tensor,
        visible_upper: torch.Tensor | None = None,
        infrared_upper: torch.Tensor | None = None,
        phase_from: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> ModelOutput:
        """``visible`` and ``infrared`` are identity-paired halves of a batch (row k of each shares an
        identity), with their upper-body views. ``phase_from``: the images PESAM's phase congruency reads
        for the visible, infrared, visible upper and infrared upper views (``model.phase_input=clean``: the
        augmented images before random erasing); None: the views themselves."""
        if visible.shape[0] != infrared.shape[0]:
            raise ValueError(f"visible and infrared halves differ in size: {visible.shape[0]} vs {infrared.shape[0]}")
        b = visible.shape[0]
        phase_full = None if phase_from is None else (phase_from[0], phase_from[1])
        phase_part = None if phase_from is None else (phase_from[2], phase_from[3])
        g = self._pair(visible, infrared, part=False, phase_from=phase_full)  # (2B, D): visible, then infrared
        p = None
        if not self.upper_body:
            sets = [g]
            intra = g
        else:
            if visible_upper is None:
                visible_upper = upper_view(visible, self.upper_body_ratio, self.upper_height)
            if infrared_upper is None:
                infrared_upper = upper_view(infrared, self.upper_body_ratio, self.upper_height)
            p = self._pair(visible_upper, infrared_upper, part=True, phase_from=phase_part)
            swapped = torch.cat([p[b:], p[:b]])  # (part of the other modality's paired image)
            if self.mixed_bn:
                # intra (g_v p_v, g_i p_i) and cross (g_v p_i, g_i p_v) pairs through the fusion in one call
                if self.iffs:
                    sets = [self._fuse(torch.cat([g, g]), torch.cat([p, swapped]))]
                else:
                    sets = [self._fuse(g, p)]
                intra = sets[0][: 2 * b]
            else:
                intra = torch.cat([self._fuse(g[:b], p[:b]), self._fuse(g[b:], p[b:])])
                sets = [intra]
                if self.iffs:
                    sets += [self._fuse(g[:b], p[b:]), self._fuse(g[b:], p[:b])]
        features = sets[0] if len(sets) == 1 else torch.cat(sets)
        logits = self.classifier(self._train_neck(features, 2 * b))
        pair_index = torch.arange(b, device=features.device).repeat(features.shape[0] // b)
        branch_logits = None
        if self.branch_necks is not None and p is not None:
            branch_logits = tuple(
                c(n(f)) for f, n, c in zip((g, p), self.branch_necks, self.branch_classifiers, strict=True)
            )
        return ModelOutput(features, logits, pair_index, intra[:b], intra[b:], g, p, branch_logits)

    # ---- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, x: torch.Tensor, modality: str) -> dict[str, torch.Tensor]:
        f = self.embed(x, modality)
        return {"pool": f.float(), "bn": self.neck(f).float()}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``backbone`` (pretrained body and stems) and ``head`` (everything added on top)."""
        backbone_ids = {id(p) for m in (self.backbone, self.part_backbone) if m is not None for p in m.parameters()}
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": []}
        for p in self.parameters():
            if p.requires_grad:
                groups["backbone" if id(p) in backbone_ids else "head"].append(p)
        return groups


def build_model(cfg, num_classes: int) -> AMINet:
    """An ``AMINet`` from a ``aminet.config.Config``."""
    m = cfg.model
    return AMINet(
        num_classes,
        arch=m.arch,
        weights=m.weights,
        last_stride=m.last_stride,
        non_local=m.non_local,
        upper_body=m.upper_body,
        upper_body_ratio=m.upper_body_ratio,
        upper_height=cfg.data.upper_height,
        share_branches=m.share_branches,
        iffs=m.iffs,
        pesam=m.pesam,
        gem_p=m.gem_p,
        gem_learnable=m.gem_learnable,
        fusion=m.fusion,
        mixed_bn=m.mixed_bn,
        non_local_width=m.non_local_width,
        neck_stats=m.neck_stats,
        branch_heads=cfg.loss.branch_supervision,
    )
