"""Any TFLite depth model run through ai-edge-litert as a `Teacher` (e.g. the int8 FastDepth of OpenMV).

Input size, dtype and quantisation are read from the model: one N x H x W x 3 (NHWC) RGB input of uint8,
int8 or float32, and an N x h x w x 1 (or N x h x w) output, quantised or float. Quantised tensors follow
TFLite's rule real = (q - zero_point) * scale: RGB in [0, 1] is the real-valued input, quantised with the
input's scale / zero point and clamped to its dtype's range (for FastDepth, scale 1/255 and zero point 0, so
q = round(rgb * 255)); the output is dequantised with its own parameters. No mean / std is applied: a model
that wants one has it folded into its input quantisation. What the numbers mean cannot be read from a .tflite
file, so `output_kind` is required.

Resize protocol (whole frame): the whole image is resized to the model's input size, ignoring the aspect
ratio (antialiased bilinear, `base.resize`), and `Teacher.predict` resizes the output back to the image's
size (plain bilinear). No crop: this is not the NYU evaluation protocol (480x640 -> 240x320 -> centre crop
228x304), so scores differ a little from the published ones (see ../shared/models/PROVENANCE.md).

Batches run as one invocation with the interpreter's input resized to the batch: outputs are bit-identical to
one frame at a time, re-allocating for a new batch size takes ~0.1 ms once the arena exists, and on 2 loaded
cores it was as fast or a few per cent faster than a loop (FastDepth, batch 8). A model whose batch cannot be
resized falls back to one frame at a time. `num_threads` defaults to 1: with
more threads than free cores, TFLite's workers spin on a shared core (see ../shared/NOTES.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from .base import OutputKind, Teacher, check_output_kind, digest, resize

logger = logging.getLogger(__name__)

PROTOCOL = "whole-frame-v1"  # part of cache_id: a change of preprocessing must not reuse old predictions
MAX_BATCH = 16  # frames per invocation (bounds the interpreter's arena)
_INPUT_TYPES = (np.uint8, np.int8, np.float32)
_TFLITE_ID = b"TFL3"  # FlatBuffer file identifier, bytes 4..8 of every .tflite file


class TfliteTeacher(Teacher):
    """A .tflite depth model. `device` is where predictions are returned; the interpreter runs on the CPU.

    `focal_px` / `focal_width`: the focal length (pixels) the model's metric output assumes and the image width
    it refers to (FastDepth, NYU: 518.8579 at 640); both or neither.
    """

    def __init__(
        self,
        model_path: str | Path,
        output_kind: OutputKind,
        device: torch.device | str = "cpu",
        num_threads: int = 1,
        focal_px: float | None = None,
        focal_width: int | None = None,
    ) -> None:
        path = Path(model_path)
        self.output_kind = check_output_kind(output_kind)
        self.device = torch.device(device)
        self.focal_norm = focal_norm(focal_px, focal_width, path)
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.path, self.num_threads = path, num_threads
        self.interpreter = _open_interpreter(path, num_threads)
        inp, out = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(f"{path}: expected one input and one output, got {len(inp)} and {len(out)}")
        self.input, self.output = inp[0], out[0]
        self.input_size = _check_input(self.input, path)
        self.batch = int(self.input["shape"][0])
        self.resizable = True
        self.name = f"tflite:{path.name}"
        self.cache_id = f"tflite-{digest([path], extra=json.dumps([PROTOCOL, self.output_kind]))}"
        logger.info("teacher %s (%s, %s), input %s %s %s, output %s %s %s, %d thread(s)", self.name,
                    self.cache_id, self.output_kind, self.input["shape"].tolist(), self.input["dtype"].__name__,
                    self.input["quantization"], self.output["shape"].tolist(), self.output["dtype"].__name__,
                    self.output["quantization"], num_threads)

    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        x = quantise(resize(rgb, self.input_size).permute(0, 2, 3, 1).cpu().numpy(), self.input)
        chunks = [self._run(x[i : i + MAX_BATCH]) for i in range(0, len(x), MAX_BATCH)]
        out = torch.from_numpy(np.concatenate(chunks))
        return out.to(self.device)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Model input batch (NHWC, model dtype) -> real-valued N x 1 x h x w float32."""
        if len(x) != self.batch and self.resizable:
            self._resize_batch(len(x))
        if len(x) == self.batch:
            return self._invoke(x)
        return np.concatenate([self._invoke(x[i : i + self.batch]) for i in range(0, len(x), self.batch)])

    def _resize_batch(self, n: int) -> None:
        """Make the interpreter take `n` frames at once; on failure remember to loop instead."""
        shape = [n, *self.input["shape"][1:].tolist()]
        try:
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as err:
            logger.info("%s: batch cannot be resized to %d (%s); running %d frame(s) at a time", self.name, n,
                        err, self.batch)
            self.resizable = False
            self.interpreter.resize_tensor_input(self.input["index"], self.input["shape"].tolist())
            self.interpreter.allocate_tensors()
            return
        self.batch = n

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        q = self.interpreter.get_tensor(self.output["index"])
        out = dequantise(q, self.output)
        if out.ndim == 4 and out.shape[-1] == 1:
            out = out[..., 0]
        if out.ndim != 3 or out.shape[0] != len(x):
            raise ValueError(f"{self.name}: expected an N x h x w x 1 or N x h x w output, got {q.shape}")
        return out[:, None]


def focal_norm(focal_px: float | None, focal_width: int | None, source: object = "teacher") -> float | None:
    """fx / image width (None when neither is given); `source` names the model in the error."""
    if focal_px is None and focal_width is None:
        return None
    if focal_px is None or focal_width is None or not focal_px > 0 or not focal_width > 0:
        raise ValueError(f"{source}: focal_px and focal_width must both be positive or both None, got "
                         f"{focal_px} and {focal_width}")
    return float(focal_px) / float(focal_width)


def quantise(real: np.ndarray, detail: dict) -> np.ndarray:
    """Real values -> the tensor's dtype: q = round(real / scale + zero_point), clamped (float: cast only)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return real.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(real / scale + zero_point), info.min, info.max).astype(dtype)


def dequantise(q: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's values as float32 reals: (q - zero_point) * scale when quantised, else as they are."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or scale == 0:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _open_interpreter(path: Path, num_threads: int) -> object:
    """The allocated interpreter, or an error naming `path` if it is missing or not a TFLite model."""
    if not path.is_file():
        raise FileNotFoundError(f"no TFLite model at {path}")
    with open(path, "rb") as f:
        header = f.read(8)
    if header[4:8] != _TFLITE_ID:
        raise ValueError(f"{path}: not a TFLite model (no {_TFLITE_ID.decode()} identifier in its header)")
    from ai_edge_litert.interpreter import Interpreter  # imported here: only TFLite teachers need it

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: cannot load this TFLite model: {err}") from err
    return interpreter


def _check_input(detail: dict, path: Path) -> tuple[int, int]:
    """(height, width) of an N x H x W x 3 uint8 / int8 / float32 input; ValueError naming `path` otherwise."""
    shape, dtype = [int(v) for v in detail["shape"]], np.dtype(detail["dtype"])
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise ValueError(f"{path}: expected an N x H x W x 3 (NHWC RGB) input, got shape {shape}")
    if dtype not in _INPUT_TYPES:
        raise ValueError(f"{path}: input dtype {dtype} is not one of uint8, int8, float32")
    if dtype.kind != "f" and detail["quantization"][0] == 0:
        raise ValueError(f"{path}: {dtype} input has no quantisation scale, so RGB cannot be mapped onto it")
    return shape[1], shape[2]
