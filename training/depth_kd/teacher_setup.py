"""The run's teacher: built from ``distill.teacher``, made metric if it is relative, wired to its cache.

:func:`open_teacher` is what the trainer calls; :func:`load_teacher` builds a teacher from a path (node
checkpoint, transformers folder, ONNX or TFLite model) and :func:`make_metric` fits a relative teacher's global
scale/shift against the labeled bags' metric depth.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depth_kd.config import ConfigError, DistillConfig, TrainConfig
from depth_kd.data import FrameDataset
from depth_kd.teachers import MffTeacher, ScaledTeacher, Teacher, TeacherCache, fit_global_scale_shift
from depth_kd.train_data import open_sources

logger = logging.getLogger(__name__)


def open_teacher(config: TrainConfig, device: torch.device,
                 x_data: FrameDataset) -> tuple[Teacher | None, dict[str, Any] | None, TeacherCache | None]:
    """The run's metric teacher, its provenance record and its prediction cache (all None when supervised)."""
    k = config.distill
    if k.mode == "supervised":
        return None, None, None
    teacher, record = load_teacher(k, device)
    if teacher.output_kind == "relative_inverse":
        teacher, fit = make_metric(teacher, config, x_data)
        record.update(fit)
    cache = TeacherCache(config.cache_dir, teacher.cache_id)
    record["cache_id"] = teacher.cache_id
    return teacher, record, cache


def teacher_kind(path: Path, kind: str) -> str:
    """``auto`` -> ``hf`` for a folder, ``onnx`` / ``tflite`` by suffix, else ``mff`` (a node checkpoint)."""
    if kind != "auto":
        return kind
    if path.is_dir():
        return "hf"
    return {".onnx": "onnx", ".tflite": "tflite"}.get(path.suffix.lower(), "mff")


def load_teacher(k: DistillConfig, device: torch.device) -> tuple[Teacher, dict[str, Any]]:
    """The teacher named by ``distill.teacher`` and a provenance record of it."""
    path = Path(k.teacher or "")
    if not path.exists():
        raise ConfigError(f"teacher not found: {path}")
    kind = teacher_kind(path, k.teacher_kind)
    output = None if k.teacher_output == "auto" else k.teacher_output
    if kind == "mff":
        if output == "relative_inverse":
            raise ConfigError(f"{path}: a node checkpoint teacher is metric; teacher_output cannot be {output}")
        teacher: Teacher = MffTeacher(path, device)
    elif kind == "hf":
        from depth_kd.teachers.hf import HfTeacher  # transformers is slow to import

        teacher = HfTeacher(path, device, output_kind=output)
    elif kind == "tflite":
        teacher = _tflite_teacher(path, output, k, device)
    else:
        teacher = _onnx_teacher(path, output, device)
    if k.teacher_focal_px is not None and kind != "tflite":
        teacher.focal_norm = k.teacher_focal_px / k.teacher_focal_width
    record = {"path": str(path), "kind": kind, "name": teacher.name, "output_kind": teacher.output_kind,
              "metric": "native" if teacher.output_kind == "metric" else "fitted", "focal_norm": teacher.focal_norm}
    return teacher, record


def _tflite_teacher(path: Path, output: str | None, k: DistillConfig, device: torch.device) -> Teacher:
    """A TFLite teacher; the file cannot say what its numbers mean, so ``teacher_output`` must."""
    from depth_kd.teachers.tflite import TfliteTeacher  # ai-edge-litert: only TFLite teachers need it

    if output is None:
        raise ConfigError(f"{path}: a TFLite model cannot say whether it outputs metric or relative inverse depth; "
                          "pass --teacher-output metric|relative_inverse")
    try:
        return TfliteTeacher(path, output, device=device, focal_px=k.teacher_focal_px,
                             focal_width=k.teacher_focal_width)
    except ValueError as err:
        raise ConfigError(f"distill.teacher: {err}") from err


def _onnx_teacher(path: Path, output: str | None, device: torch.device) -> Teacher:
    """An ONNX teacher; a model written by ``depth-kd export`` brings its own ModelInfo (metric, mean/std, size)."""
    import onnxruntime as ort

    from depth_kd.export import onnx_model_info
    from depth_kd.teachers.onnx import OnnxTeacher

    info = onnx_model_info(path)
    if output is None and info is None:
        raise ConfigError(f"{path}: cannot tell whether this ONNX model outputs metric or relative inverse depth; "
                          "pass --teacher-output metric|relative_inverse")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    if info is None:
        return OnnxTeacher(path, output, device=device, providers=providers)
    return OnnxTeacher(path, output or "metric", device=device, providers=providers, mean=info.mean, std=info.std,
                       input_size=(info.input_height, info.input_width))


def make_metric(teacher: Teacher, config: TrainConfig, x_data: FrameDataset) -> tuple[Teacher, dict[str, Any]]:
    """Fit scale/shift of a relative teacher against X's metric depth (``distill.scale_depth_topic``)."""
    k, d = config.distill, config.data
    if not d.train:
        raise ConfigError(f"teacher {teacher.name} outputs relative inverse depth; fitting it to metres needs "
                          "labeled bags X with a metric depth topic (--data)")
    topic = k.scale_depth_topic or d.depth_topic
    data = x_data if topic == d.depth_topic else FrameDataset(open_sources(d.train, config, topic), x_data.transform)
    if len(data) == 0:
        raise ConfigError(f"no frames with depth on {topic} in {d.train} to fit the teacher's scale")
    picks = sorted({int(i) for i in np.linspace(0, len(data) - 1, min(k.scale_fit_frames, len(data)))})
    pairs = []
    for start in range(0, len(picks), config.optim.batch_size):
        samples = [data[i] for i in picks[start : start + config.optim.batch_size]]
        rel = teacher.predict(torch.stack([s["rgb"] for s in samples]).to(teacher.device)).cpu()
        pairs += [(rel[j, 0], s["depth"][0]) for j, s in enumerate(samples)]
    fit = fit_global_scale_shift(pairs, seed=config.run.seed)
    logger.info("teacher %s made metric: depth = 1 / (%.6g * out + %.6g), %d of %d samples kept, RMS %.4g 1/m",
                teacher.name, fit.scale, fit.shift, fit.n_inliers, fit.n_samples, fit.rms_inverse)
    scaled = ScaledTeacher(teacher, fit, max_depth=config.model.max_depth)
    return scaled, {"scale_shift": fit.to_record(), "fit_frames": len(picks), "fit_topic": topic}
