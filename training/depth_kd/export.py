"""Export a node-format checkpoint: ONNX (checked against PyTorch with onnxruntime), statically quantised int8
ONNX, and float16 safetensors.

The ONNX graph is the network itself: input ``image`` N x 3 x H x W float32, already normalised with the
checkpoint's mean/std, at the checkpoint's fixed processing size; output ``depth`` N x 1 x H x W in metres.
The batch axis is fixed to 1 unless ``dynamic_batch``. The ModelInfo JSON travels in the model's
``metadata_props`` (key ``depth_kd_ros.model_info``), so a consumer knows the size, normalisation, depth
range and focal length without the original file; :func:`onnx_model_info` reads it back.

:func:`export_int8` quantises that float32 graph (QDQ, per-channel int8 weights) with activation ranges
calibrated on real frames, each pre-processed by the node's own :func:`~depth_kd_ros.inference.to_network_input`;
:func:`int8_accuracy` measures what it costs through the node's :class:`~depth_kd_ros.inference.DepthEstimator`.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from depth_kd.config import DEFAULT_DEPTH_TOPIC, DEFAULT_IMAGE_TOPIC, DEFAULT_OPSET, FLOAT_CONVS, INT8_COMPARE_FRAMES
from depth_kd.data import BagSource, DataError, ImageFolder, open_source
from depth_kd.metrics import DepthMetricAccumulator
from depth_kd_ros.checkpoint import FORMAT, CheckpointError, ModelInfo, load_checkpoint, save_checkpoint
from depth_kd_ros.inference import DepthEstimator, to_network_input
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


# ---- int8 ------------------------------------------------------------------------------------------------

# Frames of intermediate outputs the calibrator holds before folding them into ranges. Chunked with
# CalibStridedMinMax, not CalibMaxIntermediateOutputs: onnxruntime 1.32 drops each full chunk of the latter unused.
_CALIBRATION_CHUNK = 16


@dataclass(frozen=True)
class Int8Export:
    """What :func:`export_int8` wrote."""

    path: Path
    calibration_frames: int
    fp32_diff: float  # max abs difference (metres) of the float32 graph it quantised to PyTorch


def spread(lengths: Sequence[int], total: int) -> list[list[int]]:
    """Frame indices for at most ``total`` frames from sources of ``lengths``: an equal share per source
    (a short source's unused share goes to the others), at the middles of equal stretches within each source,
    so a long bag cannot crowd out a short one and one stretch of a recording cannot stand for all of it."""
    quotas = [0] * len(lengths)
    left = min(total, sum(lengths))
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for rank, i in enumerate(order):
        quotas[i] = min(lengths[i], left // (len(order) - rank))
        left -= quotas[i]
    return [[int((k + 0.5) * n / q) for k in range(q)] for n, q in zip(lengths, quotas, strict=True)]


def _open(specs: Sequence[str], role: str, **kwargs: object) -> list[BagSource | ImageFolder]:
    """Every spec opened (before any slow work, so a typo fails at once), the error naming its role."""
    sources = []
    for spec in specs:
        try:
            sources.append(open_source(spec, **kwargs))
        except DataError as err:
            raise type(err)(f"{role}: {err}") from err
    return sources


def _frames(sources: Sequence[BagSource | ImageFolder], total: int) -> Iterator[dict]:
    """At most ``total`` frames of ``sources`` (see :func:`spread`), one in memory at a time."""
    for source, indices in zip(sources, spread([len(s) for s in sources], total), strict=True):
        for index in indices:
            yield source.load(index)


class _CalibrationReader(CalibrationDataReader):
    """Feeds the calibrator what the node feeds the network: frames through ``to_network_input``, loaded one at
    a time. ``set_range`` and ``len`` let quantize_static calibrate in chunks (CalibStridedMinMax), folding each
    chunk's ranges in before the next, so memory does not grow with the number of frames."""

    def __init__(self, sources: Sequence[BagSource | ImageFolder], total: int, info: ModelInfo,
                 input_name: str) -> None:
        picks = spread([len(s) for s in sources], total)
        self.frames = [(source, index) for source, indices in zip(sources, picks, strict=True) for index in indices]
        self._info, self._name = info, input_name
        self._window = iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._window = iter(self.frames[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        source, index = next(self._window, (None, 0))
        if source is None:
            return None
        return {self._name: to_network_input(source.load(index)["rgb"], self._info)}


def _chunk(frames: int) -> int:
    """Calibration chunk size: the largest divisor of ``frames`` up to _CALIBRATION_CHUNK (ORT needs one)."""
    return max(d for d in range(1, min(frames, _CALIBRATION_CHUNK) + 1) if frames % d == 0)


def float_conv_names(proto: onnx.ModelProto, first: int = FLOAT_CONVS) -> list[str]:
    """The convolutions ``export_int8`` keeps float: the first ``first`` (the stem, see config.FLOAT_CONVS) and
    those of the output layer (the module of the last one, e.g. ``/decoder/refine/refine.1``).

    The output layer: the MFF head computes its one channel as per-channel products summed over 64 channels
    (models.mff.OneChannelConv2d); quantising the products moved the default student's output 4.5% from
    float32 on real frames, 1.0% with them float, at no measured cost in speed.
    """
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    if not convs:
        return []
    head = convs[-1].rsplit("/", 1)[0] + "/"  # the exporter names nodes by module path: /decoder/head/Conv
    return convs[:first] + [name for name in convs[first:] if name.startswith(head) or name == convs[-1]]


def export_int8(checkpoint: str | Path, out: str | Path, calibration: Sequence[str], frames: int = 64, *,
                image_topic: str | None = DEFAULT_IMAGE_TOPIC, opset: int = DEFAULT_OPSET,
                tolerance: float = 1e-3, fp32_out: str | Path | None = None,
                float_convs: int = FLOAT_CONVS) -> Int8Export:
    """Write a statically quantised ONNX model to ``out``, calibrated on at most ``frames`` real frames.

    Int8 weights shrink the file about 3x and let ONNX Runtime run integer kernels on CPUs; the activation
    ranges come from ``calibration`` (data specs, as for training) so they cover what the camera shows. The
    float32 graph is exported first (checked against PyTorch as :func:`export_onnx` does; kept at ``fp32_out``
    if given, else in a temporary folder) and the int8 model carries its metadata, so the node loads either
    the same way. Raises DataError naming an unusable calibration spec, before anything is written.
    """
    if not calibration:
        raise ValueError("export_int8 needs at least one calibration data spec")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    sources = _open(calibration, "calibration data", image_topic=image_topic)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="depth_kd_int8_") as tmp:
        fp32 = Path(fp32_out) if fp32_out is not None else Path(tmp) / "fp32.onnx"
        diff = export_onnx(checkpoint, fp32, opset=opset, tolerance=tolerance)
        proto = onnx.load(str(fp32))
        prepared = Path(tmp) / "prepared.onnx"
        # shapes for every tensor, constants folded: same accuracy and speed, but no dead initializers left for
        # ONNX Runtime to warn about on every load
        quant_pre_process(str(fp32), str(prepared))
        info = ModelInfo.from_json({p.key: p.value for p in proto.metadata_props}[ONNX_INFO_KEY])
        reader = _CalibrationReader(sources, frames, info, proto.graph.input[0].name)
        if not len(reader):
            raise DataError(f"calibration data: no frames in {', '.join(calibration)}")
        quantised = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(quantised), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        # U8S8 (ORT's CPU advice): as fast as S8S8 here (AVX2), closer to fp32 than 7-bit reduce_range
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=float_conv_names(onnx.load(str(prepared)), float_convs),
                        extra_options={"CalibStridedMinMax": _chunk(len(reader))})
        _save_with_metadata(quantised, proto, out)
    logger.info("%s: int8 QDQ model calibrated on %d frames", out, len(reader))
    return Int8Export(out, len(reader), diff)


def _save_with_metadata(model: Path, source: onnx.ModelProto, out: Path) -> None:
    """Save ``model`` to ``out`` with the metadata_props of ``source`` (ModelInfo and format), which the node
    reads; written only once complete and checked, so a failed export leaves no file."""
    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {p.key: p.value for p in source.metadata_props})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


@dataclass(frozen=True)
class Int8Accuracy:
    """int8 against float32 on the same frames, both through the node's DepthEstimator."""

    frames: int
    mean_relative_difference: float  # mean over pixels of |int8 - fp32| / fp32
    absrel_fp32: float | None = None  # against ground truth; None when the frames have none
    absrel_int8: float | None = None

    @property
    def relative_change(self) -> float | None:
        """``(absrel_int8 - absrel_fp32) / absrel_fp32``: the share of accuracy quantisation costs."""
        if self.absrel_fp32 is None or self.absrel_int8 is None or not self.absrel_fp32 > 0:
            return None
        return (self.absrel_int8 - self.absrel_fp32) / self.absrel_fp32

    def summary(self) -> str:
        """One line for people, e.g. ``int8: AbsRel 0.212 vs fp32 0.208 (+1.9% relative) on 150 frames; ...``."""
        diff = f"mean relative difference to fp32 {100 * self.mean_relative_difference:.1f}%"
        change = self.relative_change
        if change is None:
            return f"int8: no ground-truth depth in these frames, so no AbsRel; {diff} on {self.frames} frames"
        return (f"int8: AbsRel {self.absrel_int8:.3f} vs fp32 {self.absrel_fp32:.3f} ({100 * change:+.1f}% relative) "
                f"on {self.frames} frames; {diff}")


def _depth_sources(specs: Sequence[str], image_topic: str | None, depth_topic: str) -> list[BagSource | ImageFolder]:
    """The specs' frames that have ground-truth depth (sources without any are left out, with a log line)."""
    sources = []
    for spec in specs:
        try:
            source = open_source(spec, image_topic=image_topic, depth_topic=depth_topic, require_depth=True)
        except DataError as err:
            logger.info("no ground-truth depth in %s (%s)", spec, err)
            continue
        if len(source):
            sources.append(source)
    return sources


def accuracy_sources(calibration: Sequence[str], eval_data: Sequence[str] | None = None, *,
                     image_topic: str | None = DEFAULT_IMAGE_TOPIC,
                     depth_topic: str = DEFAULT_DEPTH_TOPIC) -> list[BagSource | ImageFolder]:
    """The frames :func:`int8_accuracy` measures on: ``eval_data`` (each must have depth) if given, else the
    ``calibration`` frames that have depth, else the calibration frames without ground truth (then only the
    int8-vs-fp32 difference can be measured). Opened up front, so a bad spec fails before the slow export."""
    if eval_data:
        sources = _open(eval_data, "evaluation data", image_topic=image_topic, depth_topic=depth_topic,
                        require_depth=True)
        if not any(len(s) for s in sources):
            raise DataError(f"evaluation data: no frames with ground-truth depth in {', '.join(eval_data)}")
        return sources
    plain = _open(calibration, "calibration data", image_topic=image_topic)  # a bad spec is named, not skipped
    return _depth_sources(calibration, image_topic, depth_topic) or plain


def int8_accuracy(int8: str | Path, fp32: str | Path, sources: Sequence[BagSource | ImageFolder],
                  max_frames: int = INT8_COMPARE_FRAMES) -> Int8Accuracy:
    """What quantisation costs, measured on real frames through the node's own path (DepthEstimator, on the CPU).

    At most ``max_frames`` of ``sources`` (see :func:`accuracy_sources`), spread evenly. AbsRel is
    :mod:`depth_kd.metrics`' over the model's depth range, as ``depth-kd eval`` computes it.
    """
    estimators = DepthEstimator(int8, device="cpu"), DepthEstimator(fp32, device="cpu")
    return _compare(*estimators, _frames(sources, max_frames))


def _compare(int8: DepthEstimator, fp32: DepthEstimator, frames: Iterator[dict]) -> Int8Accuracy:
    """Both models on each frame (with its fx, as the node gets it); AbsRel only if every frame has depth."""
    info = fp32.info
    acc = {name: DepthMetricAccumulator(info.min_depth, info.max_depth) for name in ("int8", "fp32")}
    count, diff_sum, diff_pixels, with_depth = 0, 0.0, 0, True
    for frame in frames:
        fx = frame["fx"] if math.isfinite(frame["fx"]) else None
        pred = {"int8": int8.predict(frame["rgb"], fx=fx), "fp32": fp32.predict(frame["rgb"], fx=fx)}
        both = np.isfinite(pred["int8"]) & np.isfinite(pred["fp32"])
        diff_sum += float((np.abs(pred["int8"] - pred["fp32"])[both] / pred["fp32"][both]).sum(dtype=np.float64))
        diff_pixels += int(both.sum())
        with_depth = with_depth and "depth" in frame
        if with_depth:
            for name, depth in pred.items():
                acc[name].update(torch.from_numpy(depth), torch.from_numpy(frame["depth"]))
        count += 1
    mean_diff = diff_sum / diff_pixels if diff_pixels else float("nan")
    if not (with_depth and count and acc["fp32"].count):
        return Int8Accuracy(count, mean_diff)
    return Int8Accuracy(count, mean_diff, acc["fp32"].compute()["abs_rel"], acc["int8"].compute()["abs_rel"])
