"""Checkpoint format: one safetensors file holding the weights and a :class:`ModelInfo`.

The file's string metadata is ``{"format": "depth_kd_ros.checkpoint/1", "info": <ModelInfo JSON>}``;
the tensors are the model's ``state_dict`` (BatchNorm buffers included). Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from depth_kd_ros.model_info import (  # noqa: F401  (re-exported: the checkpoint format's vocabulary)
    FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_INPUT_SIDE,
    CheckpointError,
    ModelInfo,
    check_is_file,
)
from depth_kd_ros.models import ARCHITECTURES, build_model

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_MAX_NAMES_SHOWN = 5


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
    check_is_file(path)
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
