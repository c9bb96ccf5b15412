"""Checkpoint format: one safetensors file holding the weights and a :class:`ModelInfo`.

The file's string metadata is ``{"format": "depth_kd_ros.checkpoint/1", "info": <ModelInfo JSON>}``;
the tensors are the model's ``state_dict`` (BatchNorm buffers included). Nothing is ever unpickled.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from depth_kd_ros.models import ARCHITECTURES, build_model

FORMAT = "depth_kd_ros.checkpoint/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_MAX_NAMES_SHOWN = 5
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


def save_checkpoint(
    path: str | Path, model: nn.Module, info: ModelInfo, dtype: torch.dtype = torch.float32
) -> None:
    """Write ``model``'s weights and ``info`` to ``path`` atomically (temp file + rename).

    Floating tensors are stored as ``dtype`` (e.g. torch.float16 halves the file); integer buffers such
    as BatchNorm's ``num_batches_tracked`` are kept as they are. The state dict is checked against
    ``build_model(info.arch, info.arch_config)`` first, so a written file always loads.
    """
    path = Path(path)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    state = model.state_dict()
    with torch.device("meta"):  # shapes only, no memory or init cost
        reference = _build(path, info, action="cannot save").state_dict()
    problems = _state_problems(reference, state, found_in="the model")
    if problems:
        raise CheckpointError(f"cannot save {path}: model does not match {info.arch!r}: {problems}")
    tensors = {
        name: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().cpu()).contiguous()
        for name, t in state.items()
    }
    write_atomically(path, save(tensors, metadata={"format": FORMAT, "info": info.to_json()}))


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temp file in the same folder and a rename.

    Readers see the old file or the new one, never a partial write; the temp file never outlives a failure.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo]:
    """Load a checkpoint written by :func:`save_checkpoint`: (float32 model in eval mode, info).

    Raises :class:`CheckpointError` naming the file and the problem.
    """
    path = Path(path)
    header = _read_header(path)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or "format" not in metadata:
        raise CheckpointError(f"{path}: no format tag in the metadata; not a depth_kd_ros checkpoint "
                              f"(expected format {FORMAT!r})")
    if metadata["format"] != FORMAT:
        raise CheckpointError(f"{path}: unsupported format tag {metadata['format']!r} (expected {FORMAT!r})")
    try:
        info = ModelInfo.from_json(metadata.get("info", ""))
    except ValueError as err:
        raise CheckpointError(f"{path}: bad model info: {err}") from err

    model = _build(path, info, action="cannot load")
    try:
        tensors = load_file(path, device="cpu")
    except Exception as err:  # safetensors raises its own error type for corrupt data
        raise CheckpointError(f"{path}: cannot read tensors: {err}") from err
    problems = _state_problems(model.state_dict(), tensors, found_in="the file")
    if problems:
        raise CheckpointError(f"{path}: weights do not match {info.arch!r}: {problems}")
    model.load_state_dict(tensors)
    return model.float().to(map_location).eval(), info


def _read_header(path: Path) -> dict:
    """Parse the safetensors header ourselves so every kind of damage gets its own message."""
    _check_is_file(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
            header_len = int.from_bytes(prefix, "little")
            if header_len > min(size - 8, _MAX_HEADER_BYTES):
                raise CheckpointError(f"{path}: not a safetensors file, or truncated: header length "
                                      f"{header_len} does not fit in the file's {size} bytes")
            raw = f.read(header_len)
    except OSError as err:  # e.g. no read permission: still one message naming the file
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a safetensors file (corrupt header: {err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    try:
        data_end = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: not a safetensors file (corrupt header: bad tensor entry)") from err
    needed = 8 + header_len + int(data_end)
    if size < needed:
        raise CheckpointError(f"{path}: truncated: the header promises {needed} bytes, the file has {size}")
    return header


def _check_is_file(path: Path) -> None:
    """Say what is at ``path`` instead (a folder is a common slip for model_path), so the fix is obvious."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file (give the .safetensors file in it)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")


def _build(path: Path, info: ModelInfo, action: str) -> nn.Module:
    if info.arch not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise CheckpointError(f"{path}: {action}: unknown architecture {info.arch!r} (known: {known})")
    try:
        return build_model(info.arch, info.arch_config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {action}: cannot build {info.arch!r}: {err}") from err


def _state_problems(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], found_in: str) -> str:
    """Human-readable differences between two state dicts ('' if they match in names and shapes)."""
    problems = []
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {_some(unexpected)}")
    for name in sorted(expected.keys() & found.keys()):
        want, got = expected[name], found[name]
        if want.shape != got.shape:
            problems.append(f"shape mismatch for {name}: {found_in} has {tuple(got.shape)}, "
                            f"the architecture expects {tuple(want.shape)}")
        elif want.is_floating_point() != got.is_floating_point():
            problems.append(f"dtype mismatch for {name}: {found_in} has {got.dtype}, "
                            f"the architecture expects {want.dtype}")
    return "; ".join(problems)


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (", ..." if len(names) > _MAX_NAMES_SHOWN else "")
