"""Export a node-format checkpoint: ONNX (checked against PyTorch with onnxruntime) and float16 safetensors.

The ONNX graph is the network itself: input ``image`` N x 3 x H x W float32, already normalised with the
checkpoint's mean/std, at the checkpoint's fixed processing size; output ``depth`` N x 1 x H x W in metres.
The batch axis is fixed to 1 unless ``dynamic_batch``. The ModelInfo JSON travels in the model's
``metadata_props`` (key ``depth_kd_ros.model_info``), so a consumer knows the size, normalisation, depth
range and focal length without the original file; :func:`onnx_model_info` reads it back.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from depth_kd.config import DEFAULT_OPSET
from depth_kd_ros.checkpoint import FORMAT, CheckpointError, ModelInfo, load_checkpoint, save_checkpoint
from depth_kd_ros.model_info import ONNX_FORMAT_KEY, ONNX_INFO_KEY

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The exported model does not reproduce the PyTorch model (or cannot be written)."""


def _probe(info: ModelInfo, batch: int) -> torch.Tensor:
    """A fixed, image-like normalised input (uniform pixels through the checkpoint's mean/std)."""
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(batch, 3, info.input_height, info.input_width, generator=generator)
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    return (rgb - mean) / std


def export_onnx(checkpoint: str | Path, onnx_path: str | Path, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, tolerance: float = 1e-3) -> float:
    """Write ``onnx_path`` and return the max abs difference (metres) to PyTorch on a probe batch.

    Raises :class:`ExportError` (and removes the file) when the difference exceeds ``tolerance``.
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    model, info = load_checkpoint(checkpoint)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    probe = _probe(info, 2 if dynamic_batch else 1)
    axes = {"image": {0: "batch"}, "depth": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
        torch.onnx.export(model, (probe[:1],), str(onnx_path), input_names=["image"], output_names=["depth"],
                          opset_version=opset, dynamic_axes=axes, dynamo=False)
    proto = onnx.load(str(onnx_path))
    onnx.helper.set_model_props(proto, {ONNX_INFO_KEY: info.to_json(), ONNX_FORMAT_KEY: FORMAT})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))

    with torch.no_grad():
        expected = model(probe).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": probe.numpy()})[0]
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    logger.info("%s: ONNX opset %d, %dx%d, max abs difference to PyTorch %.3g m", onnx_path, opset,
                info.input_width, info.input_height, diff)
    if not diff <= tolerance:
        onnx_path.unlink(missing_ok=True)
        raise ExportError(f"{onnx_path}: ONNX output differs from PyTorch by {diff:.3g} m (shape {got.shape} vs "
                          f"{expected.shape}), above the tolerance {tolerance:g}; file removed")
    return diff


def export_fp16(checkpoint: str | Path, out: str | Path) -> float:
    """Write a float16 copy of a checkpoint (half the size); returns its max abs difference (metres)."""
    model, info = load_checkpoint(checkpoint)
    save_checkpoint(out, model, info, dtype=torch.float16)
    half, _ = load_checkpoint(out)
    probe = _probe(info, 1)
    with torch.no_grad():
        diff = float((half(probe) - model(probe)).abs().max())
    logger.info("%s: float16 weights, max abs difference to float32 %.3g m", out, diff)
    return diff


def onnx_model_info(path: str | Path) -> ModelInfo | None:
    """The ModelInfo an exported ONNX model carries, or None for other ONNX models."""
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if ONNX_INFO_KEY not in props:
        return None
    try:
        return ModelInfo.from_json(props[ONNX_INFO_KEY])
    except ValueError as err:
        raise CheckpointError(f"{path}: bad {ONNX_INFO_KEY} metadata: {err}") from err
