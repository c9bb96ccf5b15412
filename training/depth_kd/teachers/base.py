"""The `Teacher` interface every teacher implements, and helpers they share.

A teacher takes RGB in [0, 1] (N x 3 x H x W float) and returns N x 1 x H x W at the same size on its own
device. It does its own normalisation and resizing. `output_kind` says how to read the numbers:

* "metric": depth in metres;
* "relative_inverse": affine-invariant inverse depth (MiDaS, Depth Anything without a metric head): only
  `scale * out + shift` is inverse depth, with scale and shift unknown (see `teachers.scale`).

`cache_id` names the weights (and any preprocessing the user chose), so cached predictions of one teacher are
never served for another. `focal_norm` is the focal length a metric output assumes, as fx / image width
(NYU's Kinect: 518.8579 / 640 = 0.8107), or None when unknown: metric depth from one image is only right for
a camera with that field of view, so the record of a distillation run keeps it.

`network` is the torch module behind a teacher that runs in torch (checkpoint and transformers teachers), None
for ONNX and TFLite. Data-free distillation needs it: it reads the BatchNorm layers' running statistics and
back-propagates through the teacher to its input with `forward` (the differentiable `predict`).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

OutputKind = Literal["metric", "relative_inverse"]
OUTPUT_KINDS: tuple[str, ...] = ("metric", "relative_inverse")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Teacher(ABC):
    """Base class: validates input, runs `_predict` without autograd (`forward`: with it) and resizes its output
    back."""

    name: str
    cache_id: str
    output_kind: OutputKind
    device: torch.device
    focal_norm: float | None = None  # fx / width that the metric output assumes; None = unknown
    network: nn.Module | None = None  # the torch module `_predict` runs, if it runs in torch

    @torch.no_grad()
    def predict(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], N x 3 x H x W -> float32 N x 1 x H x W on `self.device`."""
        return self.forward(rgb)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """`predict` with autograd: differentiable with respect to `rgb` when `network` is a torch module."""
        if rgb.dim() != 4 or rgb.shape[1] != 3 or not rgb.is_floating_point():
            raise ValueError(f"expected a float N x 3 x H x W RGB tensor, got {rgb.dtype} {tuple(rgb.shape)}")
        height, width = rgb.shape[-2:]
        out = self._predict(rgb.to(self.device, torch.float32))
        if out.dim() == 3:
            out = out.unsqueeze(1)
        return resize_depth(out.float(), (height, width))

    @abstractmethod
    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] on `self.device` -> N x 1 x h x w (any size; `predict` resizes it back)."""

    def __repr__(self) -> str:
        kind = self.output_kind
        return f"{type(self).__name__}(name={self.name!r}, cache_id={self.cache_id!r}, kind={kind})"


def check_output_kind(kind: str) -> OutputKind:
    """Return `kind` if it is one of OUTPUT_KINDS, else raise ValueError."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {kind!r}")
    return kind  # type: ignore[return-value]


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize an image batch to `size` (no-op when equal), antialiased as the node and torchvision do."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def resize_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a prediction to `size` with plain bilinear (as the node does): no blur across depth edges."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=size, mode="bilinear", align_corners=False)


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest positive multiple of `multiple`."""
    return max(multiple, int(round(value / multiple)) * multiple)


def normalise(rgb: torch.Tensor, mean: Iterable[float], std: Iterable[float]) -> torch.Tensor:
    """(rgb - mean) / std per channel."""
    mean_t = torch.tensor(list(mean), dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb - mean_t) / std_t


def digest(paths: Iterable[Path], extra: str = "", length: int = 12) -> str:
    """Short sha256 over the contents of `paths` (in the given order; names do not count) and `extra`."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    h.update(extra.encode())
    return h.hexdigest()[:length]
