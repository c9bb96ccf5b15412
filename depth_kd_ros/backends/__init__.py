"""Runtime backends: one small interface, one module per backend, chosen once at start-up.

A backend owns a loaded network and runs it: ``run(image)`` takes a normalised 1 x 3 x H x W float32 array at
the model's processing size and returns 1 x 1 x H x W depth in metres. :class:`~depth_kd_ros.inference.
DepthEstimator` does everything around it (resize, normalisation, focal rescaling, limits), so the backends
agree by construction. Each backend imports its framework only when chosen: a robot running ONNX Runtime
never imports torch.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np

from depth_kd_ros.model_info import ModelInfo

BACKENDS = ("torch", "onnxruntime")
_DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")


class Backend(Protocol):
    name: str  # one of BACKENDS
    info: ModelInfo
    device: str  # where it runs, in words, e.g. "cpu", "cuda:0", "TensorrtExecutionProvider (fp16)"

    def run(self, image: np.ndarray) -> np.ndarray:
        """Normalised 1 x 3 x H x W float32 -> 1 x 1 x H x W float32 depth in metres."""


def check_device_spec(spec: str) -> str:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (stripped), or ValueError; what it means is the backend's."""
    if not isinstance(spec, str) or not _DEVICE_SPEC.fullmatch(spec.strip()):
        raise ValueError(f"bad device {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return spec.strip()


def backend_for(model_path: str | Path) -> str:
    """The backend that runs a model file natively: ``.onnx`` -> onnxruntime, anything else -> torch."""
    return "onnxruntime" if Path(model_path).suffix.lower() == ".onnx" else "torch"


def open_backend(model_path: str | Path, backend: str = "auto", device: str = "auto", fp16: bool = False,
                 threads: int = 0) -> Backend:
    """Load ``model_path`` into ``backend`` (``auto``: by file type, see :func:`backend_for`).

    ``threads``: CPU threads for the network (0 = the framework's default). Raises ValueError for an unknown
    backend or a model file the backend cannot run, CheckpointError for a damaged file.
    """
    if backend == "auto":
        backend = backend_for(model_path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected auto, {' or '.join(BACKENDS)}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = the backend's default), got {threads}")
    if backend != backend_for(model_path):
        wanted = "an .onnx model" if backend == "onnxruntime" else "a .safetensors checkpoint"
        raise ValueError(f"backend {backend!r} runs {wanted}, got {model_path}; "
                         "`depth-kd export --model CKPT --onnx OUT.onnx` converts a checkpoint")
    if backend == "torch":
        from depth_kd_ros.backends.torch_backend import TorchBackend

        return TorchBackend(model_path, device=device, fp16=fp16, threads=threads)
    from depth_kd_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model_path, device=device, fp16=fp16, threads=threads)
