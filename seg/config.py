"""Typed experiment configuration: YAML files with ``base:`` inheritance and dotted CLI overrides.

A config is plain data. ``load_config(path, overrides)`` reads the YAML, merges the chain of
``base:`` files (child wins, dictionaries merge key by key), applies ``section.key=value``
overrides, and validates the result against the pydantic schema below. Unknown keys and wrong
types are errors that name the key and the file.

Relative paths inside a config (``output_dir``, ``data.root``, ``data.cache_dir``, ``base:``) resolve
against the folder of the file that names them, so a config works from any working directory and a
folder that holds its config (``seg auto``'s) may be moved; in an override they are relative to the
shell. An ``output_dir`` that no file names is ``runs`` in the working directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seg.errors import ConfigError
from seg_runtime.atomic import atomic_write_text
from seg_runtime.consistency import description_problems
from seg_runtime.outputs import output_channels

# The model.json keys of seg_runtime.consistency's checks, as a config names them.
DESCRIPTION_KEYS = {"preprocess.normalization": "data.preprocess.normalization", "keep_largest": "infer.keep_largest",
                    "remove_small": "infer.remove_small", "outputs": "model.outputs", "label_codes": "data.label_codes"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Section):
    """Train/validation split: explicit id lists, or k-fold over all cases with a seed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    train: list[str] | None = None
    val: list[str] | None = None
    folds: int = 5
    fold: int = 0
    seed: int = 0

    @model_validator(mode="after")
    def _check_fold(self) -> SplitConfig:
        if not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must be in [0, {self.folds}), got {self.fold}")
        return self


class NormalizationConfig(_Section):
    """Intensity normalisation for one channel (see seg_runtime.preprocess for the maths)."""

    scheme: Literal["zscore", "fixed", "minmax", "none"] = "zscore"
    nonzero: bool = False
    clip: list[float] | None = None
    mean: float = 0.0
    std: float = 1.0
    lo: float = 0.0
    hi: float = 1.0


class PreprocessConfig(_Section):
    """The deterministic prefix shared by training, validation, inference and the deploy runtime."""

    orientation: Literal["RAS"] | None = "RAS"
    target_spacing: list[float] | None = None
    normalization: list[NormalizationConfig] = Field(default_factory=lambda: [NormalizationConfig()])


class SegmentCodeConfig(_Section):
    """One DICOM code (SNOMED CT unless ``scheme`` says otherwise)."""

    code: str
    meaning: str
    scheme: str = "SCT"


class LabelCodeConfig(_Section):
    """What a label is, for DICOM-SEG: property category and type codes, display colour (RGB)."""

    category: SegmentCodeConfig
    type: SegmentCodeConfig
    rgb: list[int] | None = None


class DataConfig(_Section):
    """Where the cases are, what they hold and how they are split."""

    layout: Literal["nnunet", "msd", "case_folders", "image_folders", "synthetic"] = "nnunet"
    root: Path | None = None
    spatial_dims: Literal[2, 3] = 3
    channel_names: list[str] = Field(default_factory=lambda: ["image"])
    channel_files: list[str] | None = None
    label_file: str | None = None
    image_dir: str = "images"
    label_dir: str = "labels"
    labels: dict[str, int] = Field(default_factory=lambda: {"background": 0, "foreground": 1})
    label_values: dict[int, int] | None = None
    regions: dict[str, list[int]] = Field(default_factory=dict)
    # Optional, per label name: DICOM-SEG codes and colour, carried into model.json (label_codes).
    label_codes: dict[str, LabelCodeConfig] = Field(default_factory=dict)
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    # disk: preprocess once into cache_dir (default output_dir/.cache) and memory-map per patch, so
    # memory does not grow with the number of cases; memory: every case in RAM; none: no cache.
    cache: Literal["none", "memory", "disk"] = "disk"
    cache_dir: Path | None = None
    # Loader processes; auto: 0 below 4 CPU cores, else cores - 2, at most 8 (seg.data.loaders).
    num_workers: int | Literal["auto"] = "auto"

    @field_validator("num_workers")
    @classmethod
    def _check_workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"must be 'auto' or a number of processes >= 0, got {v}")
        return v

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, v: dict[str, int]) -> dict[str, int]:
        values = sorted(v.values())
        if values != list(range(len(values))):
            raise ValueError(f"label values must be 0..K-1 without gaps, got {values}")
        return v

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)


class ModelConfig(_Section):
    """Which registered network to build; ``params`` go to its builder.

    ``outputs``: ``classes`` (softmax over the labels) or ``regions`` (one sigmoid channel per
    ``data.regions`` entry, trained with Dice + BCE on the regions; see ``seg_runtime.outputs``).
    """

    name: str = "ag_unet"
    size: Literal["small", "base"] = "small"
    deep_supervision: bool = True
    gate: Literal["attention", "none"] = "attention"
    outputs: Literal["classes", "regions"] = "classes"
    params: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
    """Optimisation and the training loop."""

    epochs: int = Field(50, ge=1)
    iters_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(2, ge=1)
    patch_size: list[int] = Field(default_factory=lambda: [64, 64, 64])
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = 0.99
    scheduler: Literal["poly", "cosine", "constant"] = "poly"
    warmup_epochs: int = Field(0, ge=0)
    grad_clip: float | None = 12.0
    amp: bool = True
    ema: float | None = None
    foreground_oversample: float = Field(0.5, ge=0, le=1)
    # How a foreground-centred patch picks its centre: a random foreground voxel ("voxels": classes
    # in proportion to their volume) or first a random class present in the case ("classes": nnU-Net).
    foreground_sampling: Literal["voxels", "classes"] = "voxels"
    augment: bool = True
    val_every: int = Field(1, ge=1)
    val_cases: int | None = None
    deterministic: bool = False
    compile: bool = False
    channels_last: bool = False
    device: str = "auto"


class InferConfig(_Section):
    """Sliding-window inference settings (validation and ``seg predict``)."""

    patch_size: list[int] | None = None
    overlap: float = Field(0.5, ge=0, lt=1)
    tta: bool = False
    batch_size: int = Field(1, ge=1)
    # Class/region names cut to their largest connected component in predicted label maps.
    keep_largest: list[str] = Field(default_factory=list)
    # Class/region name -> smallest component volume kept (mm³, pixels for images without spacing),
    # applied after keep_largest. ``seg train --folds`` chooses both on the pooled CV.
    remove_small: dict[str, float] = Field(default_factory=dict)


class ExportConfig(_Section):
    """ONNX export settings."""

    opset: int = 17
    fp16: bool = False
    tolerance: float = 1e-3


class Config(_Section):
    """One experiment."""

    name: str = "experiment"
    seed: int = 0
    output_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        # The run folder is output_dir/name: a name with a separator or .. would write outside output_dir.
        if not v or v in (".", "..") or "/" in v or "\\" in v or "\0" in v:
            raise ValueError(f"must be a folder name inside output_dir (no '/', '\\' or '..'), got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_dims(self) -> Config:
        d = self.data.spatial_dims
        for key, size in (("train.patch_size", self.train.patch_size), ("infer.patch_size", self.infer.patch_size)):
            if size is not None and len(size) != d:
                raise ValueError(f"{key} has {len(size)} entries but data.spatial_dims is {d}")
        problems = description_problems(
            in_channels=self.data.in_channels, normalization_entries=len(self.data.preprocess.normalization),
            labels=self.data.labels, regions=self.data.regions, keep_largest=self.infer.keep_largest,
            remove_small=self.infer.remove_small, outputs=self.model.outputs,
            label_codes={k: v.model_dump() for k, v in self.data.label_codes.items()})
        if problems:
            raise ValueError("; ".join(f"{DESCRIPTION_KEYS[key]}: {message}" for key, message in problems))
        return self

    @property
    def out_channels(self) -> int:
        """The network's output channels: one per class, or one per region."""
        return output_channels(self.model.outputs, self.data.num_classes, self.data.regions)

    @property
    def patch_size(self) -> list[int]:
        """The inference patch size (defaults to the training one)."""
        return list(self.infer.patch_size or self.train.patch_size)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A short hash of the resolved config, for provenance."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _absolute(value: Any, folder: Path) -> str:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())


def resolve_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Make the relative paths a file names (``output_dir``, ``data.root``, ``data.cache_dir``)
    absolute against that file's folder."""
    if data.get("output_dir") not in (None, ""):
        data["output_dir"] = _absolute(data["output_dir"], folder)
    section = data.get("data")
    if isinstance(section, dict):
        for key in ("root", "cache_dir"):
            if section.get(key) not in (None, ""):
                section[key] = _absolute(section[key], folder)
    return data


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular base: chain {' -> '.join(str(p) for p in seen)}")
    data = resolve_paths(_read_yaml(path), path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = Path(str(base))
    base_path = base_path if base_path.is_absolute() else path.parent / base_path
    return _deep_merge(_load_chain(base_path, (*seen, path)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as YAML (numbers, lists, null...)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict (validation happens afterwards)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def apply_shell_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides as typed in a shell: a path one names (``output_dir``, ``data.root``,
    ``data.cache_dir``) is relative to the working directory, whatever the paths already in ``data``
    are relative to (their file's folder, or the file a plan is written to)."""
    typed = resolve_paths(apply_overrides({}, list(overrides)), Path.cwd())
    return _deep_merge(apply_overrides(data, list(overrides)), typed)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return f"{source}: invalid config: " + "; ".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a raw dict into a :class:`Config`, with errors that name the key and the source."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config with its ``base:`` chain and dotted overrides.

    Args:
        path: the YAML file.
        overrides: ``["train.lr=1e-3", "model.size=base"]``.

    Raises:
        ConfigError: missing file, bad YAML, unknown key or wrong type (message names file and key).
    """
    path = Path(path)
    return config_from_dict(apply_shell_overrides(_load_chain(path), list(overrides or [])), str(path))


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
