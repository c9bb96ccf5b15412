"""What a depth model needs besides its weights (:class:`ModelInfo`), free of torch.

Every backend reads it: the torch backend from a safetensors checkpoint's metadata, ONNX Runtime from an
exported model's ``metadata_props``; a robot running ONNX Runtime never imports torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

FORMAT = "depth_kd_ros.checkpoint/1"
ONNX_INFO_KEY = "depth_kd_ros.model_info"  # ONNX metadata_props key holding the ModelInfo JSON
ONNX_FORMAT_KEY = "depth_kd_ros.format"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_INPUT_SIDE = 4096  # processing height/width limit: a larger header is damage or a typo, not a real network


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass
class ModelInfo:
    """Everything besides the weights that is needed to run a checkpoint. Validated on construction."""

    arch: str  # registry name
    arch_config: dict  # kwargs for build_model
    input_height: int  # processing size the network runs at
    input_width: int
    mean: tuple[float, float, float]  # RGB normalisation, on [0, 1] pixel values
    std: tuple[float, float, float]
    min_depth: float  # metres
    max_depth: float
    focal_px: float | None = None  # focal length (pixels, at input_width) that the metric scale assumes
    provenance: dict = field(default_factory=dict)  # free-form JSON: command, data, git revision, ...

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"arch must be a non-empty string, got {self.arch!r}")
        for name in ("arch_config", "provenance"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name} must be a dict with string keys, got {value!r}")
        for name in ("input_height", "input_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % 32:
                raise ValueError(f"{name} must be a positive int divisible by 32, got {value!r}")
            if value > MAX_INPUT_SIDE:  # the node would allocate (and run) a network this size per frame
                raise ValueError(f"{name} must be at most {MAX_INPUT_SIDE}, got {value}")
        self.mean = _triple("mean", self.mean)
        self.std = _triple("std", self.std)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        self.min_depth = _number("min_depth", self.min_depth)
        self.max_depth = _number("max_depth", self.max_depth)
        if not 0 < self.min_depth < self.max_depth:  # 0 m is no measurement: clamping to it, log metrics are -inf
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth} and {self.max_depth}")
        if self.focal_px is not None:
            self.focal_px = _number("focal_px", self.focal_px)
            if self.focal_px <= 0:
                raise ValueError(f"focal_px must be positive or null, got {self.focal_px}")

    def to_json(self) -> str:
        """Serialise to a JSON object string (raises ValueError for non-JSON config/provenance)."""
        try:
            return json.dumps(dataclasses.asdict(self), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"ModelInfo is not JSON-serialisable: {err}") from err

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse and validate; raises ValueError naming the missing, unknown or bad field."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        optional = {n for n, f in fields.items()
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        required = [n for n in fields if n not in optional]
        missing = [n for n in required if n not in data]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        return cls(**data)


def _number(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _triple(name: str, value: object) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"{name} must be a list of 3 numbers (R, G, B), got {value!r}")
    return tuple(_number(f"{name}[{i}]", v) for i, v in enumerate(value))


def check_is_file(path: Path) -> None:
    """Raise :class:`CheckpointError` saying what is at ``path`` instead (a folder is a common slip for model_path)."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file "
                              "(give the .safetensors or .onnx file in it)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
