"""Every parameter of depth_node, declared once: name, default, description, range, read-only.

config/depth.yaml mirrors these defaults (a test keeps the two in step).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from depth_kd_ros.backends import backend_for

# threads: 0 (auto) picks these, measured on 2 cores with one kept busy by another process (README, "A busy
# robot"): ONNX Runtime's non-spinning pool is 1.3-1.7x faster with 2 threads and its p95 under load stays
# within 2x of that (1.3-2.0x); torch's spinning OpenMP workers collapse on a shared core (p95 2.6-3.1x), so 1.
AUTO_THREADS = {"onnxruntime": 2, "torch": 1}


@dataclass
class NodeParams:
    """Current parameter values; the node reads these, never the parameter server, on its hot path."""

    model_path: str = ""
    backend: str = "auto"
    device: str = "auto"
    threads: int = 0
    fp16: bool = False
    image_transport: str = "raw"
    max_image_pixels: int = 8_388_608
    input_reliability: str = "best_effort"
    min_depth: float = 0.0
    max_depth: float = 0.0
    metric_rescale: bool = True
    depth_encoding: str = "32FC1"
    scale_source: str = "none"
    metric_depth_transport: str = "raw"
    metric_depth_tolerance: float = 0.05
    camera_height: float = 0.0
    camera_pitch: float = 0.0
    publish_colored: bool = True
    points_rgb: bool = False
    points_decimation: int = 1
    diagnostics_period: float = 1.0


# name -> (description, read_only, range as (lo, hi, step) or allowed strings)
_SPECS: dict[str, tuple[str, bool, object]] = {
    "model_path": ("Student model: .onnx (ONNX Runtime) or .safetensors (torch); empty = the package's default "
                   "weights for the backend.", True, None),
    "backend": ("auto | torch | onnxruntime. auto: by model_path's type; with the default weights, onnxruntime "
                "when installed.", True, ("auto", "torch", "onnxruntime")),
    "device": ("auto | cpu | cuda | cuda:N. auto uses CUDA when present, else CPU with a warning.", True, None),
    "fp16": ("Half precision on the GPU (torch on CUDA, ONNX Runtime with TensorRT); ignored on CPU.", True, None),
    "threads": ("CPU threads for the network; 0 = auto: 2 for ONNX Runtime, 1 for torch (measured: torch's "
                "spinning workers stall on a core that another process holds), at most the CPUs available.",
                True, (0, 256, 1)),
    "image_transport": ("raw: subscribe image_raw (Image); compressed: image_raw/compressed.", True,
                        ("raw", "compressed")),
    "max_image_pixels": ("Larger images (by the size their header declares) are refused before decoding: a "
                         "60 KB PNG can declare 8000x8000 pixels. Default 8 MP: 4K UHD (3840x2160) fits.", False,
                         (1, 1 << 30, 1)),
    "input_reliability": ("QoS reliability of the image and camera_info subscriptions.", True,
                          ("best_effort", "reliable")),
    "min_depth": ("Near limit in metres, inside the model's range (nearer = invalid); 0 = the model's own.",
                  False, (0.0, 1000.0, 0.0)),
    "max_depth": ("Far limit in metres, inside the model's range (farther = invalid); 0 = the model's own.",
                  False, (0.0, 1000.0, 0.0)),
    "metric_rescale": ("Scale depth by fx_camera / fx_model when CameraInfo is known.", False, None),
    "depth_encoding": ("depth/image as 32FC1 (metres, NaN = invalid) or 16UC1 (millimetres, 0 = invalid), "
                       "REP 118; 16UC1 is what depthimage_to_laserscan, depth_image_proc and rtabmap take.",
                       False, ("32FC1", "16UC1")),
    "scale_source": ("Metric anchoring at run time: none | depth (a registered metric depth topic, metric_depth, "
                     "any resolution, sparse allowed) | ground (a flat floor camera_height below the camera).", True,
                     ("none", "depth", "ground")),
    "metric_depth_transport": ("raw: metric_depth (Image, 16UC1 or 32FC1) | compressedDepth: "
                               "metric_depth/compressedDepth.", True, ("raw", "compressedDepth")),
    "metric_depth_tolerance": ("Seconds between an image's stamp and the metric depth it is matched with.", False,
                               (0.0, 10.0, 0.0)),
    "camera_height": ("scale_source ground: the camera's height above the floor in metres.", False,
                      (0.0, 100.0, 0.0)),
    "camera_pitch": ("scale_source ground: how far the camera looks down, radians (0 = level).", False,
                     (-1.5, 1.5, 0.0)),
    "publish_colored": ("Advertise depth/colored, a bgr8 colour map for viewing.", True, None),
    "points_rgb": ("Add packed rgb to depth/points (point_step 32 instead of 16).", False, None),
    "points_decimation": ("Keep every N-th row and column in depth/points.", False, (1, 16, 1)),
    "diagnostics_period": ("Seconds between /diagnostics messages.", True, (0.1, 60.0, 0.0)),
}


def _descriptor(name: str) -> ParameterDescriptor:
    description, read_only, allowed = _SPECS[name]
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if isinstance(allowed, tuple) and allowed and isinstance(allowed[0], str):
        descriptor.additional_constraints = "one of: " + ", ".join(allowed)
    elif isinstance(allowed, tuple) and isinstance(allowed[0], float):
        descriptor.floating_point_range = [FloatingPointRange(from_value=allowed[0], to_value=allowed[1],
                                                              step=allowed[2])]
    elif isinstance(allowed, tuple):
        descriptor.integer_range = [IntegerRange(from_value=allowed[0], to_value=allowed[1], step=allowed[2])]
    return descriptor


def _check(values: NodeParams) -> str | None:
    """Why these values are unacceptable, or None. Ranges are enforced by rclpy from the descriptors."""
    for name, (_, _, allowed) in _SPECS.items():
        value = getattr(values, name)
        if isinstance(allowed, tuple) and isinstance(allowed[0], str) and value not in allowed:
            return f"{name} must be one of {', '.join(allowed)}, got '{value}'"
    if values.scale_source == "ground" and values.camera_height <= 0:
        return "scale_source ground needs camera_height (metres above the floor) > 0"
    if values.min_depth > 0 and values.max_depth > 0 and values.min_depth >= values.max_depth:
        return f"min_depth ({values.min_depth}) must be below max_depth ({values.max_depth})"
    return None


def validate(values: NodeParams) -> None:
    """Raise ValueError saying why start-up ``values`` are unacceptable (runtime changes are checked by the
    callback of ``declare_parameters``)."""
    problem = _check(values)
    if problem:
        raise ValueError(problem)


def depth_limits(values: NodeParams, model_range: tuple[float, float]) -> tuple[float, float]:
    """(near, far) metres the node publishes: the user's min_depth/max_depth (0 = unset) within the model's
    range. Raises ValueError when they leave nothing the model can produce (e.g. min_depth 50 for a 10 m model).
    """
    model_min, model_max = model_range
    near = max(values.min_depth, model_min) if values.min_depth else model_min
    far = min(values.max_depth, model_max) if values.max_depth else model_max
    if near >= far:
        raise ValueError(f"min_depth={values.min_depth:g} and max_depth={values.max_depth:g} leave nothing of the "
                         f"model's range, {model_min:g} to {model_max:g} m (0 = the model's own limit)")
    return near, far


def network_threads(threads: int, model_path: str | Path) -> int:
    """``threads``, or for 0 (auto) AUTO_THREADS of the backend that runs ``model_path``, at most the CPUs this
    process may run on."""
    if threads:
        return threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(AUTO_THREADS[backend_for(model_path)], cpus)


def declare_parameters(node: Node, checks: list[Callable[[NodeParams], object]] | None = None) -> NodeParams:
    """Declare all parameters on `node`, validate them, and keep the returned values current.

    Runtime changes that fail validation are rejected with the reason; read-only ones are rejected by rclpy.
    ``checks``: more validation for runtime changes (each raises ValueError), e.g. against the model, which
    loads after the parameters; the list may grow after this call. The start-up values are checked by
    ``validate`` when the node configures (a managed node reports bad ones as a failed transition).
    """
    values = NodeParams()
    for field in fields(NodeParams):
        declared = node.declare_parameter(field.name, getattr(values, field.name), _descriptor(field.name))
        setattr(values, field.name, declared.value)

    def on_set(changes: list[Parameter]) -> SetParametersResult:
        candidate = NodeParams(**vars(values))
        for change in changes:
            if change.name in _SPECS:
                setattr(candidate, change.name, change.value)
        reason = _check(candidate)
        for check in checks or ():
            try:
                check(candidate)
            except ValueError as error:
                reason = reason or str(error)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        for change in changes:
            if change.name in _SPECS:
                setattr(values, change.name, change.value)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values
