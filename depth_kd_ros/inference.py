"""Run a depth model on RGB images: ``DepthEstimator(path).predict(rgb, fx) -> depth in metres``.

The pre- and post-processing live here, in numpy and OpenCV, around whichever backend runs the network
(:mod:`depth_kd_ros.backends`): the same code for torch and ONNX Runtime, and no torch import for the latter.
"""
from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import cv2
import numpy as np

from depth_kd_ros.backends import Backend, open_backend
from depth_kd_ros.model_info import ModelInfo

logger = logging.getLogger(__name__)


def to_network_input(rgb: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 H x W x 3 RGB -> normalised 1 x 3 x h x w float32 at the model's processing size.

    Area averaging when shrinking, as the training data pipeline resizes (depth_kd.data.dataset).
    """
    size = (info.input_width, info.input_height)
    if rgb.shape[1::-1] != size:
        shrink = rgb.shape[1] > size[0] and rgb.shape[0] > size[1]
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    # (x / 255 - mean) / std == x * a + b, written plane by plane into the network's layout: 6x faster than
    # broadcasting over H x W x 3 and transposing (docs/experiments/profile_outputs.py).
    scale = (1.0 / (255.0 * np.asarray(info.std, np.float32))).astype(np.float32)
    offset = (-np.asarray(info.mean, np.float32) / np.asarray(info.std, np.float32)).astype(np.float32)
    x = np.empty((1, 3, *rgb.shape[:2]), np.float32)
    for channel, plane in enumerate(cv2.split(rgb)):
        np.multiply(plane, scale[channel], out=x[0, channel], dtype=np.float32)
        x[0, channel] += offset[channel]
    return x


class DepthEstimator:
    """A loaded model on one backend. ``predict`` is the whole per-frame API; it is thread-safe.

    ``backend``: auto (by file type: ``.onnx`` -> onnxruntime, ``.safetensors`` -> torch) | torch |
    onnxruntime. ``threads``: CPU threads for the network, 0 = the backend's default.
    """

    def __init__(self, model_path: str | Path, device: str = "auto", fp16: bool = False, backend: str = "auto",
                 threads: int = 0) -> None:
        self.backend: Backend = open_backend(model_path, backend=backend, device=device, fp16=fp16,
                                             threads=threads)
        self.info: ModelInfo = self.backend.info
        self._lock = threading.Lock()
        self._warned_no_focal = False
        logger.info("loaded %s (%s) with %s on %s, processing size %dx%d", model_path, self.info.arch,
                    self.backend.name, self.backend.device, self.info.input_width, self.info.input_height)

    @property
    def device(self) -> str:
        """Where the network runs, in words (e.g. ``cpu (float32)``, ``CPUExecutionProvider``)."""
        return self.backend.device

    def predict(self, rgb: np.ndarray, fx: float | None = None) -> np.ndarray:
        """uint8 H x W x 3 RGB -> float32 H x W depth in metres (NaN where invalid).

        ``fx``: the camera's focal length in pixels at this image's width. When given and the model
        records the focal length its metric scale assumes, depth is rescaled by the ratio of the two,
        so a wider or narrower lens still gets metric depth.
        """
        if not isinstance(rgb, np.ndarray):
            raise ValueError(f"expected a uint8 H x W x 3 RGB numpy array, got {type(rgb).__name__}")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 H x W x 3 RGB array, got {rgb.dtype} of shape {rgb.shape}")
        height, width = rgb.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"expected a non-empty image, got shape {rgb.shape}")
        if fx is not None and not (math.isfinite(fx) and fx > 0):
            raise ValueError(f"fx must be a positive focal length in pixels, got {fx!r}")
        x = to_network_input(rgb, self.info)
        with self._lock:
            depth = self.backend.run(x)[0, 0]
        # Scale and clamp at processing size (bilinear upsampling keeps values inside [min, max]).
        depth = np.multiply(depth, np.float32(self._focal_scale(fx, width)), dtype=np.float32)
        invalid = ~np.isfinite(depth)  # before clamping: inf is no measurement, not max_depth
        np.clip(depth, self.info.min_depth, self.info.max_depth, out=depth)
        depth[invalid] = np.nan
        if depth.shape != (height, width):
            depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR)
        return depth

    def warmup(self) -> None:
        """One dummy run at processing size, so the first real frame does not pay for lazy init."""
        self.predict(np.zeros((self.info.input_height, self.info.input_width, 3), np.uint8))

    def _focal_scale(self, fx: float | None, width: int) -> float:
        if fx is None:
            return 1.0
        if self.info.focal_px is None:
            if not self._warned_no_focal:
                logger.warning("fx given but the model records no focal_px; depth is not rescaled")
                self._warned_no_focal = True
            return 1.0
        return (fx * self.info.input_width / width) / self.info.focal_px
