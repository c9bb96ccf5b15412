"""Any ONNX depth model run through onnxruntime as a `Teacher`.

The model takes one N x 3 x H x W float image (normalised with the `mean` / `std` given here) and returns
N x 1 x H x W or N x H x W. Input name, batch size and height / width are read from the session: fixed sizes
are used as they are, dynamic ones come from `input_size` or the image size rounded up to `multiple`. What the
numbers mean cannot be read from the file, so `output_kind` is required.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OutputKind,
    Teacher,
    check_output_kind,
    digest,
    normalise,
    resize,
)

logger = logging.getLogger(__name__)

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxTeacher(Teacher):
    """An .onnx depth model. `device` is where predictions are returned; `providers` is where ONNX runs."""

    def __init__(
        self,
        model_path: str | Path,
        output_kind: OutputKind,
        device: torch.device | str = "cpu",
        providers: Sequence[str] = ("CPUExecutionProvider",),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        input_size: tuple[int, int] | None = None,
        multiple: int = 32,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX model at {path}")
        self.output_kind = check_output_kind(output_kind)
        self.device = torch.device(device)
        self.session = ort.InferenceSession(str(path), providers=list(providers))
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.type not in _NUMPY_TYPES:
            raise ValueError(f"{path}: expected one N x 3 x H x W float input, got {inp.type} {inp.shape}")
        self.input_name = inp.name
        self.input_dtype = _NUMPY_TYPES[inp.type]
        batch, _, height, width = inp.shape
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.fixed_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        if self.fixed_size and input_size and tuple(input_size) != self.fixed_size:
            raise ValueError(f"{path}: input_size {input_size} but the model only takes {self.fixed_size}")
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_size = input_size
        self.multiple = multiple
        self.name = f"onnx:{path.name}"
        settings = json.dumps([self.mean, self.std, input_size, multiple])
        self.cache_id = f"onnx-{digest([path], extra=settings)}"
        logger.info("teacher %s (%s, %s), input %s %s", self.name, self.cache_id, self.output_kind,
                    self.input_name, inp.shape)

    def run_size(self, height: int, width: int) -> tuple[int, int]:
        """The height and width the model runs at for an image of this size."""
        if self.fixed_size:
            return self.fixed_size
        if self.input_size:
            return tuple(self.input_size)
        return -(-height // self.multiple) * self.multiple, -(-width // self.multiple) * self.multiple

    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        x = normalise(resize(rgb, self.run_size(*rgb.shape[-2:])), self.mean, self.std)
        x = x.cpu().numpy().astype(self.input_dtype)
        step = self.fixed_batch or len(x)
        chunks = [self.session.run(None, {self.input_name: x[i : i + step]})[0]
                  for i in range(0, len(x), step)]
        out = torch.from_numpy(np.concatenate(chunks).astype(np.float32))
        if out.dim() == 3:
            out = out.unsqueeze(1)
        if out.dim() != 4 or out.shape[1] != 1 or out.shape[0] != len(x):
            shape = tuple(out.shape)
            raise ValueError(f"{self.name}: expected N x 1 x H x W or N x H x W output, got {shape}")
        return out.to(self.device)
