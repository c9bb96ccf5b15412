"""Run a depth checkpoint on RGB images: ``DepthEstimator(path).predict(rgb) -> depth in metres``."""
from __future__ import annotations

import logging
import math
import re
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depth_kd_ros.checkpoint import ModelInfo, load_checkpoint

logger = logging.getLogger(__name__)

_DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` -> torch.device.

    ``auto`` picks CUDA when available, else CPU (with a warning). Asking for CUDA on a machine without
    it raises RuntimeError; a malformed spec raises ValueError.
    """
    if not isinstance(spec, str) or not _DEVICE_SPEC.fullmatch(spec.strip()):
        raise ValueError(f"bad device {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    spec = spec.strip()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        logger.warning("device 'auto': CUDA is not available, running on the CPU (slow)")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} requested but CUDA is not available "
                               f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                               "use device 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {spec!r} requested but only {torch.cuda.device_count()} "
                               "CUDA device(s) are visible")
    return device


class DepthEstimator:
    """A loaded checkpoint on one device. ``predict`` is the whole per-frame API; it is thread-safe."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", fp16: bool = False) -> None:
        self.device: torch.device = resolve_device(device)
        model, info = load_checkpoint(checkpoint, map_location=self.device)
        self.info: ModelInfo = info
        on_cuda = self.device.type == "cuda"
        if fp16 and not on_cuda:
            logger.warning("fp16 ignored: half precision is only used on CUDA; running float32 on %s",
                           self.device)
        self.dtype = torch.float16 if fp16 and on_cuda else torch.float32
        if on_cuda:
            model = model.to(dtype=self.dtype, memory_format=torch.channels_last)
        self.model = model.eval()
        self._mean = torch.tensor(self.info.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.info.std, device=self.device).view(1, 3, 1, 1)
        self._pinned: torch.Tensor | None = None  # reused host staging buffer for CUDA uploads
        self._lock = threading.Lock()
        self._warned_no_focal = False
        logger.info("loaded %s (%s) on %s, %s, processing size %dx%d", checkpoint, self.info.arch,
                    self.device, self.dtype, self.info.input_width, self.info.input_height)

    def predict(self, rgb: np.ndarray, fx: float | None = None) -> np.ndarray:
        """uint8 H x W x 3 RGB -> float32 H x W depth in metres (NaN where invalid).

        ``fx``: the camera's focal length in pixels at this image's width. When given and the checkpoint
        records the focal length its metric scale assumes, depth is rescaled by the ratio of the two
        (at processing resolution), so a wider or narrower lens still gets metric depth.
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
        info = self.info
        with self._lock, torch.inference_mode():
            x = self._upload(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
            if (height, width) != (info.input_height, info.input_width):
                x = F.interpolate(x, size=(info.input_height, info.input_width), mode="bilinear",
                                  align_corners=False, antialias=True)
            x = (x - self._mean) / self._std
            if self.device.type == "cuda":
                x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
            depth = self.model(x).float()
            if depth.shape[-2:] != (height, width):
                depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False)
            depth = depth * self._focal_scale(fx, width)
            valid = torch.isfinite(depth)
            depth = torch.where(valid, depth.clamp(info.min_depth, info.max_depth), torch.nan)
            return np.ascontiguousarray(depth[0, 0].cpu().numpy(), dtype=np.float32)

    def warmup(self) -> None:
        """One dummy run at processing size, so the first real frame does not pay for lazy init."""
        self.predict(np.zeros((self.info.input_height, self.info.input_width, 3), np.uint8))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _upload(self, rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 numpy -> tensor on the device (via a pinned buffer and an async copy on CUDA)."""
        host = torch.from_numpy(np.ascontiguousarray(rgb))
        if self.device.type != "cuda":
            return host
        if self._pinned is None or self._pinned.shape != host.shape:
            self._pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
        # Safe to reuse: the previous predict() ended with a blocking device-to-host copy.
        self._pinned.copy_(host)
        return self._pinned.to(self.device, non_blocking=True)

    def _focal_scale(self, fx: float | None, width: int) -> float:
        if fx is None:
            return 1.0
        if self.info.focal_px is None:
            if not self._warned_no_focal:
                logger.warning("fx given but the checkpoint records no focal_px; depth is not rescaled")
                self._warned_no_focal = True
            return 1.0
        return (fx * self.info.input_width / width) / self.info.focal_px
