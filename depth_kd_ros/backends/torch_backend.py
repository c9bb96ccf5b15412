"""PyTorch backend: runs a safetensors checkpoint (:mod:`depth_kd_ros.checkpoint`) on CPU or CUDA."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from depth_kd_ros.backends import check_device_spec
from depth_kd_ros.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

def resolve_device(spec: str) -> torch.device:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` -> torch.device.

    ``auto`` picks CUDA when available, else CPU (with a warning). Asking for CUDA on a machine without
    it raises RuntimeError; a malformed spec raises ValueError.
    """
    spec = check_device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        logger.warning("device 'auto': CUDA is not available, running on the CPU")
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


class TorchBackend:
    """A checkpoint in eval mode on one torch device (float16 + channels_last on CUDA when asked)."""

    name = "torch"

    def __init__(self, model_path: str | Path, device: str = "auto", fp16: bool = False, threads: int = 0) -> None:
        self.torch_device = resolve_device(device)
        if threads > 0:
            # Process-wide in torch. Fewer threads than cores keeps latency steady on a busy robot: OpenMP
            # workers that spin on a core another process holds stall every forward (test/benchmarks).
            torch.set_num_threads(threads)
        model, self.info = load_checkpoint(model_path, map_location=self.torch_device)
        on_cuda = self.torch_device.type == "cuda"
        if fp16 and not on_cuda:
            logger.warning("fp16 ignored: half precision is only used on CUDA; running float32 on %s",
                           self.torch_device)
        self.dtype = torch.float16 if fp16 and on_cuda else torch.float32
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # the processing size never changes: autotune once
            model = model.to(dtype=self.dtype, memory_format=torch.channels_last)
        self.model = model.eval()
        self.device = f"{self.torch_device} ({str(self.dtype).removeprefix('torch.')})"

    @torch.inference_mode()
    def run(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image).to(self.torch_device, self.dtype)
        if self.torch_device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float().cpu().numpy()
