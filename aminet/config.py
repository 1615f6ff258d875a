"""One typed configuration tree for data, model, losses, optimisation, training and evaluation.

A config is built from nested dictionaries (YAML through ``yaml.safe_load``), patched with dotted
``key=value`` overrides, type-checked field by field and validated once. Every error names the
field (``loss.mmd_intra_weight``), the offending value and what is allowed. ``to_yaml`` writes a
resolved config that ``from_yaml`` reads back to an equal object, so a run's logged YAML is the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "Config",
    "apply_overrides",
    "load_config",
    "read_yaml_tree",
]


class ConfigError(ValueError):
    """A configuration value, key or file is wrong. The message names it."""


# --------------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    # A registered benchmark (aminet.data.registry): "sysu", "regdb" or "llcm".
    dataset: str = "sysu"
    # Dataset root in the official layout. None means the project's synthetic benchmark.
    root: str | None = None
    # "search": validation identities held out (SYSU val_id / a share of RegDB's training ids);
    # "final": the full training set of the protocol, evaluated on the test protocol.
    purpose: Literal["search", "final"] = "search"
    regdb_trial: int = 1
    regdb_val_share: float = 0.2
    # LLCM has no validation split: this share of its training identities is held out for the search.
    llcm_val_share: float = 0.2
    height: int = 288
    width: int = 144
    # Height of the upper-body view. null (default): the top round(model.upper_body_ratio * height) rows
    # as they are, so the view's height follows the share and the person is never stretched (the paper's
    # 194 of 388 at 0.5). An integer rescales the view to that height, which distorts it unless it equals
    # ratio * height: kept only to reproduce runs made before the view followed the share.
    upper_height: int | None = None
    cache_dir: str | None = None
    ids_per_batch: int = 8  # P
    instances: int = 4  # K visible + K infrared per identity
    # Iterations per epoch; None = visible training images / (P * K), as the common code counts.
    iters_per_epoch: int | None = None
    pad: int = 10
    flip_p: float = 0.5  # not in the paper's list ("include random cropping and random erasing"); AGW's code flips
    erase_p: float = 0.5
    # Channel augmentation (CAJ, visible images only): not in the paper, off by default; 0.5 is CAJ's setting.
    channel_aug_p: float = 0.0


@dataclass
class ModelConfig:
    arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    # "imagenet" (torchvision weights from the local cache), "none", or a path to a state dict.
    weights: str = "imagenet"
    last_stride: Literal[1, 2] = 1
    non_local: bool = True
    # Inner width of the non-local blocks: "agw" = 1 channel, as AGW's released code (the baseline the field
    # reports with, inner = reduc_ratio // reduc_ratio); "half" = channels / 2, the original non-local design
    # (Wang et al. 2018), about 7.3 M more parameters per backbone.
    non_local_width: Literal["agw", "half"] = "agw"
    upper_body: bool = True  # UBF: the upper-body branch of HMG-DBNet
    upper_body_ratio: float = 0.5  # top share of the image that forms the upper-body view
    # false: the paper's phi_global != phi_part, each branch its own backbone (chosen from the measured
    # ablation, docs/results.md); true: one backbone for both branches.
    share_branches: bool = False
    # Shared layers run once per branch on the visible+infrared batch (their BNs see both modalities, as
    # at test time); false: once per modality (the BN statistics then hide the modality shift in training).
    mixed_bn: bool = True
    iffs: bool = True
    # phi_shared of IFFS: "mlp" = ReLU(BN(W [g; p])), the paper's "nonlinear fusion"; "residual" =
    # g + BN(W [g; p]) (BN weight 0 at start, a linear refinement of the global feature).
    fusion: Literal["residual", "mlp"] = "mlp"
    # Where PESAM's phase congruency reads: "clean" = the augmented image before random erasing, its padding
    # replicated from the border (erased boxes and a zero-pad border would be strong false edges);
    # "augmented" = the image the backbone sees.
    phase_input: Literal["clean", "augmented"] = "clean"
    # Running statistics of the BN neck: "intra" = from the intra-modality rows only (the rows a test feature
    # is made like); "all" = also from the cross-fused rows, which no test feature ever contains.
    neck_stats: Literal["intra", "all"] = "intra"
    pesam: bool = True
    gem_p: float = 3.0
    gem_learnable: bool = False


@dataclass
class LossConfig:
    id_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet_weight: float = 1.0
    triplet: Literal["weighted", "hard"] = "weighted"
    triplet_margin: float = 0.3  # only for "hard"
    mmd_intra_weight: float = 0.4  # IMDAL
    mmd_inter_weight: float = 0.6  # IDAL
    # IMDAL compares, within each modality: "branch" (default: full-body vs upper-body features of the same
    # images, meaningful on both benchmarks), "camera" (each camera vs the modality's other cameras; SYSU-MM01
    # only: RegDB has one camera per modality) or "halves" (two halves of every identity's images; zero in
    # expectation with the balanced estimator). "auto" (the default until issue 30): camera on SYSU-MM01,
    # branch on RegDB.
    imdal: Literal["auto", "camera", "branch", "halves"] = "branch"
    # Figure 1: ID and triplet losses also on each branch's own features (global and upper-body, each with its
    # own BN neck and classifier), averaged with the fused features' terms; false: on the fused features only.
    branch_supervision: bool = True
    # "balanced": MMD estimates unbiased with respect to the identity composition of the compared sets;
    # "plain": the textbook unbiased MMD, biased (towards identity clustering) on identity-structured batches.
    mmd_estimator: Literal["balanced", "plain"] = "balanced"
    mmd_multipliers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    mmd_kernel_weights: Literal["adversarial", "fixed"] = "adversarial"
    # Entropy bonus in the kernel weights' (maximising) objective: keeps them off the simplex corners.
    mmd_weight_entropy: float = 0.05


@dataclass
class OptimConfig:
    # SGD is the paper's; Adam trains from scratch faster (the synthetic smoke runs, no ImageNet weights).
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1  # peak lr of the BN neck and classifier
    backbone_lr_mult: float = 0.1  # backbone lr = lr * this
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # Weight decay on PESAM's mixing logits: false (default) excludes them, as the MMD kernel-weight logits
    # (decay pulls a softmax's logits to uniform, i.e. the phase share towards a third); true decays them.
    decay_mixing_logits: bool = False
    schedule: Literal["step", "cosine"] = "step"
    # Warm-up and milestones are shares of train.epochs, so one config trains at any length; the epoch of
    # a share is round(share * epochs) (``warmup_epochs`` / ``milestone_epochs``). The paper's 80-epoch
    # schedule: warm-up 10 epochs (0.125), x0.1 at 20 and 50 (0.25, 0.625). The older epoch keys
    # (optim.warmup_epochs, optim.milestones) are still read and converted with the config's train.epochs.
    warmup_share: float = 0.125
    warmup_start_factor: float = 0.1  # the paper: 0.01 -> 0.1 peak
    milestone_shares: list[float] = field(default_factory=lambda: [0.25, 0.625])
    gamma: float = 0.1  # applied at each milestone: 0.1 -> 0.01 -> 0.001
    min_lr_factor: float = 0.01  # cosine floor, as a share of the peak

    def warmup_epochs(self, epochs: int) -> int:
        """Warm-up length in epochs for a run of ``epochs``."""
        return int(round(self.warmup_share * epochs))

    def milestone_epochs(self, epochs: int) -> list[int]:
        """The 0-based epochs at which the step schedule multiplies the lr by ``gamma``."""
        return [int(round(s * epochs)) for s in self.milestone_shares]


@dataclass
class TrainConfig:
    epochs: int = 80
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool = True  # used on GPU only
    compile: bool = False  # torch.compile the model's forward and the criterion
    tf32: bool = True  # GPU: TF32 for float32 convolutions (matrix products stay full float32: distances)
    eval_every: int = 10
    checkpoint_every: int = 1
    # Steps between copies of the loss values to the host (the one host-device synchronisation of the
    # loop; a non-finite loss is caught there, naming its step). 0: every step on a CPU, 25 on a GPU.
    host_sync_every: int = 0


@dataclass
class EvalConfig:
    sysu_modes: list[str] = field(default_factory=lambda: ["all", "indoor"])
    trials: int = 10
    regdb_directions: list[str] = field(default_factory=lambda: ["v2t", "t2v"])
    llcm_directions: list[str] = field(default_factory=lambda: ["ir2vis", "vis2ir"])
    feature: Literal["bn", "pool"] = "bn"  # headline feature; both are always reported
    flip: bool = False
    rerank: bool = False
    batch_size: int = 256
    max_rank: int = 20


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> Config:
        raw = _deepcopy_plain(data or {})
        if not isinstance(raw, dict):
            raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
        apply_overrides(raw, overrides)
        _epochs_to_shares(raw)
        cfg = _build(cls, raw, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, text: str, overrides: Sequence[str] = (), source: str = "<string>") -> Config:
        try:
            data = load_yaml_text(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {_one_line(exc)}") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.from_dict(data, overrides)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> Config:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return cls.from_yaml(path.read_text(encoding="utf-8"), overrides, source=str(path))

    # ---- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (``{"loss.mmd_intra_weight": 0.4, ...}``), e.g. for MLflow params."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out

    def replace(self, overrides: Sequence[str] | Mapping[str, Any]) -> Config:
        """A new validated config with dotted overrides applied (``["a.b=1"]`` or ``{"a.b": 1}``)."""
        if isinstance(overrides, Mapping):
            raw = self.to_dict()
            for key, value in overrides.items():
                set_dotted(raw, key, value)
            return Config.from_dict(raw)
        return Config.from_dict(self.to_dict(), overrides)

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        from aminet.data import registry

        d, m, lo, o, t, e = self.data, self.model, self.loss, self.optim, self.train, self.eval
        _check(d.dataset in registry.names(), "data.dataset", d.dataset, f"one of {', '.join(registry.names())}")
        bench = registry.get(d.dataset)
        _check(d.regdb_trial in range(1, 11), "data.regdb_trial", d.regdb_trial, "an integer in 1..10")
        _check(0.0 < d.regdb_val_share < 1.0, "data.regdb_val_share", d.regdb_val_share, "in (0, 1)")
        _check(0.0 < d.llcm_val_share < 1.0, "data.llcm_val_share", d.llcm_val_share, "in (0, 1)")
        for name in ("height", "width"):
            v = getattr(d, name)
            _check(16 <= v <= 2048, f"data.{name}", v, "an integer in 16..2048")
        if d.upper_height is not None:
            _check(
                8 <= d.upper_height <= d.height,
                "data.upper_height",
                d.upper_height,
                f"null (follow the share) or an integer in 8..data.height ({d.height})",
            )
        _check(d.ids_per_batch >= 2, "data.ids_per_batch", d.ids_per_batch, ">= 2 (triplets need negatives)")
        _check(d.instances >= 1, "data.instances", d.instances, ">= 1")
        _check(
            d.iters_per_epoch is None or d.iters_per_epoch >= 1,
            "data.iters_per_epoch",
            d.iters_per_epoch,
            "null or >= 1",
        )
        _check(0 <= d.pad <= 64, "data.pad", d.pad, "an integer in 0..64")
        for name in ("flip_p", "erase_p", "channel_aug_p"):
            v = getattr(d, name)
            _check(0.0 <= v <= 1.0, f"data.{name}", v, "a probability in [0, 1]")

        _check(m.weights.strip() != "", "model.weights", m.weights, '"imagenet", "none" or a file path')
        _check(0.0 < m.upper_body_ratio <= 1.0, "model.upper_body_ratio", m.upper_body_ratio, "in (0, 1]")
        _check(
            round(m.upper_body_ratio * d.height) >= 8 or not m.upper_body,
            "model.upper_body_ratio",
            m.upper_body_ratio,
            f"at least 8 rows of data.height ({d.height}) in the upper-body view",
        )
        _check(1.0 <= m.gem_p <= 20.0, "model.gem_p", m.gem_p, "in [1, 20]")

        for name in ("id_weight", "triplet_weight", "mmd_intra_weight", "mmd_inter_weight"):
            v = getattr(lo, name)
            _check(v >= 0.0, f"loss.{name}", v, ">= 0")
        _check(0.0 <= lo.label_smoothing < 1.0, "loss.label_smoothing", lo.label_smoothing, "in [0, 1)")
        _check(lo.triplet_margin >= 0.0, "loss.triplet_margin", lo.triplet_margin, ">= 0")
        _check(
            not (not bench.cameras and lo.imdal == "camera" and lo.mmd_intra_weight > 0),
            "loss.imdal",
            lo.imdal,
            f"branch or halves on {bench.title} (one camera per modality: no camera to align)",
        )
        _check(
            not (lo.imdal == "branch" and lo.mmd_intra_weight > 0 and not m.upper_body),
            "loss.imdal",
            lo.imdal,
            "camera or halves without the upper-body branch (model.upper_body=false)",
        )
        _check(lo.mmd_weight_entropy >= 0.0, "loss.mmd_weight_entropy", lo.mmd_weight_entropy, ">= 0")
        _check(
            len(lo.mmd_multipliers) > 0,
            "loss.mmd_multipliers",
            lo.mmd_multipliers,
            "a non-empty list of positive bandwidth multipliers",
        )
        for i, v in enumerate(lo.mmd_multipliers):
            _check(v > 0.0, f"loss.mmd_multipliers[{i}]", v, "> 0")
        _check(
            len(set(lo.mmd_multipliers)) == len(lo.mmd_multipliers),
            "loss.mmd_multipliers",
            lo.mmd_multipliers,
            "distinct values",
        )

        _check(o.lr > 0.0, "optim.lr", o.lr, "> 0")
        _check(0.0 < o.backbone_lr_mult <= 10.0, "optim.backbone_lr_mult", o.backbone_lr_mult, "in (0, 10]")
        _check(0.0 <= o.momentum < 1.0, "optim.momentum", o.momentum, "in [0, 1)")
        _check(not (o.nesterov and o.momentum == 0.0), "optim.nesterov", o.nesterov, "false when optim.momentum is 0")
        _check(o.weight_decay >= 0.0, "optim.weight_decay", o.weight_decay, ">= 0")
        _check(0.0 <= o.warmup_share < 1.0, "optim.warmup_share", o.warmup_share, "a share of train.epochs in [0, 1)")
        _check(0.0 < o.warmup_start_factor <= 1.0, "optim.warmup_start_factor", o.warmup_start_factor, "in (0, 1]")
        _check(
            all(b > a for a, b in zip(o.milestone_shares, o.milestone_shares[1:])),
            "optim.milestone_shares",
            o.milestone_shares,
            "strictly increasing shares of train.epochs",
        )
        for i, v in enumerate(o.milestone_shares):
            _check(
                o.warmup_share <= v < 1.0,
                f"optim.milestone_shares[{i}]",
                v,
                f"a share in [{o.warmup_share:g}, 1) (after warm-up, before the end of training)",
            )
        _check(0.0 < o.gamma < 1.0, "optim.gamma", o.gamma, "in (0, 1)")
        _check(0.0 <= o.min_lr_factor < 1.0, "optim.min_lr_factor", o.min_lr_factor, "in [0, 1)")

        _check(t.epochs >= 1, "train.epochs", t.epochs, ">= 1")
        _check(t.seed >= 0, "train.seed", t.seed, ">= 0")
        _check(
            t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda") or t.device == "mps",
            "train.device",
            t.device,
            '"auto", "cpu", "cuda[:N]" or "mps"',
        )
        _check(t.eval_every >= 1, "train.eval_every", t.eval_every, ">= 1")
        _check(t.checkpoint_every >= 1, "train.checkpoint_every", t.checkpoint_every, ">= 1")
        _check(
            0 <= t.host_sync_every <= 10_000,
            "train.host_sync_every",
            t.host_sync_every,
            "an integer in 0..10000 (0: automatic)",
        )

        for b in registry.entries():  # each benchmark's settings field: a non-empty subset of its settings
            values, allowed = getattr(e, b.settings_field), ", ".join(f'"{v}"' for v in b.settings)
            _check(len(values) > 0, f"eval.{b.settings_field}", values, f"a non-empty subset of [{allowed}]")
            for i, v in enumerate(values):
                _check(v in b.settings, f"eval.{b.settings_field}[{i}]", v, " or ".join(f'"{s}"' for s in b.settings))
        _check(1 <= e.trials <= 10, "eval.trials", e.trials, "an integer in 1..10")
        _check(e.batch_size >= 1, "eval.batch_size", e.batch_size, ">= 1")
        _check(e.max_rank >= 1, "eval.max_rank", e.max_rank, ">= 1")


def _epochs_to_shares(raw: dict[str, Any]) -> None:
    """Read the older epoch keys ``optim.warmup_epochs`` / ``optim.milestones`` (configs, checkpoints and
    commands written before the schedule was expressed in shares) as shares of the config's train.epochs.
    An epoch key replaces the share key of the same meaning: it is the more specific of the two (e.g.
    ``--set optim.milestones=[24]`` over a YAML's shares)."""
    optim = raw.get("optim")
    if not isinstance(optim, dict) or not ({"warmup_epochs", "milestones"} & optim.keys()):
        return
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    epochs = _coerce(train.get("epochs", TrainConfig.epochs), int, "train.epochs")
    _check(epochs >= 1, "train.epochs", epochs, ">= 1")
    if "warmup_epochs" in optim:
        w = _coerce(optim.pop("warmup_epochs"), int, "optim.warmup_epochs")
        _check(0 <= w < epochs, "optim.warmup_epochs", w, f"in 0..{epochs - 1} (less than train.epochs)")
        optim["warmup_share"] = w / epochs
    if "milestones" in optim:
        stones = _coerce(optim.pop("milestones"), list[int], "optim.milestones")
        for i, m in enumerate(stones):
            _check(0 <= m < epochs, f"optim.milestones[{i}]", m, f"an epoch in 0..{epochs - 1}")
        optim["milestone_shares"] = [m / epochs for m in stones]


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The defaults (``path=None``) or a YAML file, with dotted overrides, validated."""
    if path is None:
        return Config.from_dict({}, overrides)
    return Config.load(path, overrides)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming the same key twice (plain YAML keeps the last one, so
    a parameter or field written twice would silently lose its first value)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (``yaml.YAMLError`` naming the key and its line)."""
    loader = _UniqueKeyLoader(text)  # a SafeLoader subclass: no arbitrary objects are constructed
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML file as a plain dict, its ``extends: base.yaml`` (relative to the file) merged in: the file's
    keys over the base's, mappings merged recursively. A base's ``name`` is not inherited."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    merged = read_yaml_tree(path.parent / base, _seen + (path,))
    merged.pop("name", None)
    return _merge(merged, data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = _deepcopy_plain(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else _deepcopy_plain(v)
    return out


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a plain dict in place. Values are read as YAML scalars
    or flow lists (``loss.mmd_multipliers=[0.5,1,2]``, ``data.root=null``)."""
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r}: expected the form section.key=value")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot read value {text!r}: {_one_line(exc)}") from None
        set_dotted(raw, key, value)
    return raw


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


# --------------------------------------------------------------------------------------------------
# Typed construction
# --------------------------------------------------------------------------------------------------


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(f"{prefix}{key}: unknown key{hint}; known keys of {where}: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(raw[name], tp, f"{prefix}{name}")
    return cls(**kwargs)


# The scalar types a config field may have: how a value is recognised, and what the error says it expected.
_SCALARS: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, path)
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        allowed = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{path}: {_show(value)} is not allowed; choose one of {allowed}")
    if origin is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of {_type_name(args[0])}, got {_show(value)}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        return _coerce_float(value, path)
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if accepts(value):
            return value
        raise ConfigError(f"{path}: expected {expected}, got {_show(value)}")
    raise TypeError(f"{path}: unsupported config type {tp!r}")  # a bug in this module, not in input


def _coerce_union(value: Any, args: tuple, path: str) -> Any:
    if value is None and type(None) in args:
        return None
    for a in (a for a in args if a is not type(None)):
        try:
            return _coerce(value, a, path)
        except ConfigError:
            continue
    allowed = " or ".join(_type_name(a) for a in args)
    raise ConfigError(f"{path}: expected {allowed}, got {_show(value)}")


def _coerce_float(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a number, got {_show(value)}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        # PyYAML reads "1e-3" (no dot) as a string; accept any spelling float() accepts.
        try:
            out = float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {_show(value)}") from None
    else:
        raise ConfigError(f"{path}: expected a number, got {_show(value)}")
    if not math.isfinite(out):
        raise ConfigError(f"{path}: expected a finite number, got {_show(value)}")
    return out


def _check(ok: bool, path: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: {_show(value)} is out of range; allowed: {allowed}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _deepcopy_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deepcopy_plain(v) for v in value]
    return value
