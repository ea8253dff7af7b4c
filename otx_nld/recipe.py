"""Training recipes: flat YAML files validated into typed, frozen dataclasses.

A recipe has a few sections (``model``, ``data``, ``augment``, ``optimizer``, ``schedule``,
``train``, ``tracking``), each a flat mapping of typed keys. There is no inheritance between
recipes and no ``type=`` registry: what a recipe says is all there is, and
:func:`load_recipe` writes nothing back. Unknown keys and values of the wrong type are errors
naming the key (``optimizer.lr: ...``). ``--set a.b=value`` overrides parse ``value`` as YAML.

Validation is pydantic's (strict types, ``extra="forbid"``); the result is frozen pydantic
models (typed, immutable records) that the trainer reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from otx_nld.errors import ConfigError
from otx_nld.io import atomic_write_text

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


class ModelConfig(BaseModel):
    """The ATSS detector."""
    model_config = _STRICT

    backbone: Literal["cpu_plain", "mobilenet_v2", "resnet18", "resnet50"] = "cpu_plain"
    weights: str | None = None  # local backbone state dict; None = random init
    fpn_channels: int = Field(64, ge=8)
    head_convs: int = Field(2, ge=1)
    norm_groups: int = Field(32, ge=1)  # GroupNorm groups in the head; must divide fpn_channels
    topk_candidates: int = Field(9, ge=1)  # ATSS assigner k per level
    score_thresh: float = Field(0.05, ge=0, le=1)
    nms_thresh: float = Field(0.6, gt=0, le=1)
    pre_nms_top_n: int = Field(1000, ge=1)
    detections_per_img: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _check_groups(self) -> ModelConfig:
        if self.fpn_channels % self.norm_groups:
            raise ValueError(f"norm_groups ({self.norm_groups}) must divide fpn_channels ({self.fpn_channels})")
        return self


class DataConfig(BaseModel):
    """Input pipeline: images are letterboxed (aspect kept, padded) to ``input_size``."""
    model_config = _STRICT

    input_size: tuple[int, int] = (320, 320)  # height, width
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0-255 scale
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_size(self) -> DataConfig:
        if min(self.input_size) < 32 or any(s % 32 for s in self.input_size):
            raise ValueError(f"input_size must be multiples of 32, at least 32, got {list(self.input_size)}")
        return self


class AugmentConfig(BaseModel):
    """Training augmentations; every one carries each box's ann id with the box."""
    model_config = _STRICT

    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    # Probability of a quarter turn (+-90 degrees, canvas expanded): only where every class
    # looks the same rotated (dice faces, aerial views), so off by default.
    rot90: float = Field(0.0, ge=0, le=1)
    scale_range: tuple[float, float] = (1.0, 1.0)  # random zoom factor (RandomAffine scale)
    crop: float = Field(0.0, ge=0, le=1)  # probability of an SSD-style RandomIoUCrop
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)
    saturation: float = Field(0.0, ge=0, le=1)
    hue: float = Field(0.0, ge=0, le=0.5)

    @model_validator(mode="after")
    def _check_scale(self) -> AugmentConfig:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < low <= high, got {list(self.scale_range)}")
        return self


class OptimizerConfig(BaseModel):
    model_config = _STRICT
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(35.0, gt=0)  # max gradient norm; None = no clipping


class ScheduleConfig(BaseModel):
    model_config = _STRICT
    policy: Literal["cosine", "step", "constant"] = "cosine"
    warmup_iters: int = Field(100, ge=0)
    warmup_ratio: float = Field(0.001, gt=0, le=1)  # lr at iteration 0, relative to optimizer.lr
    min_lr_ratio: float = Field(0.01, ge=0, le=1)  # cosine floor
    milestones: tuple[float, ...] = (0.7, 0.9)  # step policy: fractions of the run
    gamma: float = Field(0.1, gt=0, le=1)


class TrainConfig(BaseModel):
    model_config = _STRICT
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    eval_interval: int = Field(1, ge=0)  # epochs between validations; 0 = only at the end
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 = torch's default


class TrackingConfig(BaseModel):
    """Per-annotation loss tracking (the stats writer)."""
    model_config = _STRICT

    enabled: bool = True
    chunk_rows: int = Field(65536, ge=1)  # rows buffered in memory before a chunk is written
    export_datumaro: bool = True  # also write the tutorial's Datumaro layout at the end


class Recipe(BaseModel):
    """A complete training recipe."""
    model_config = _STRICT

    name: str = "unnamed"
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples), as written to ``recipe.yaml`` beside a run."""
        return _plain(self.model_dump())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        """Write the resolved recipe (every key, defaults included) atomically."""
        atomic_write_text(path, self.to_yaml())
        return Path(path)

    def override(self, assignments: Iterable[str]) -> Recipe:
        """A copy with ``section.key=value`` overrides applied (value parsed as YAML)."""
        return recipe_from_dict(apply_overrides(self.to_dict(), assignments), source="--set")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    """YAML gives lists; tuple-typed fields are strict, so turn lists into tuples."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(recipe)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif e["type"] == "value_error":  # our own validators: the message says it all
            lines.append(f"{key}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {e['msg']} (got {e['input']!r})")
    return f"{source}: invalid recipe: " + "; ".join(lines)


def recipe_from_dict(data: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """Validate a mapping into a :class:`Recipe`; errors name ``source`` and each bad key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {type(data).__name__}")
    try:
        return Recipe.model_validate(_tuples(dict(data)))
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path as given, or the name of a built-in recipe (``atss_cpu`` -> recipes/atss_cpu.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and builtin.is_file():
        return builtin
    known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: recipe file does not exist (built-in recipes: {known})")


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read a recipe file (or built-in recipe name) and apply ``--set`` overrides."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    recipe = recipe_from_dict(data, source=str(path))
    overrides = list(overrides)
    return recipe.override(overrides) if overrides else recipe


def apply_overrides(data: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (a copy); values parsed as YAML."""
    result = _plain(data)
    for text in assignments:
        key, sep, raw = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE with KEY like optimizer.lr")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                where = ".".join(parts[:depth + 1])
                raise ConfigError(f"--set {text!r}: unknown section {where!r}")
            node = child
        if parts[-1] not in node:
            raise ConfigError(f"--set {text!r}: unknown key {key.strip()!r}")
        node[parts[-1]] = value
    return result
