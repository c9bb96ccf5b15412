"""The paper's teacher: a depth_kd_ros checkpoint (e.g. resnet34_mff) run as a metric `Teacher`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from depth_kd_ros.checkpoint import ModelInfo, load_checkpoint

from .base import Teacher, digest, normalise, resize

logger = logging.getLogger(__name__)


class MffTeacher(Teacher):
    """Runs a checkpoint the way the node does: resize to its processing size, normalise, clamp to its range.

    `input_size` (height, width; multiples of 32) overrides the checkpoint's processing size. `focal_norm` comes
    from the checkpoint (its `focal_px` at its `input_width`) when it records one.
    """

    output_kind = "metric"

    def __init__(
        self, checkpoint: str | Path, device: torch.device | str, input_size: tuple[int, int] | None = None
    ) -> None:
        self.device = torch.device(device)
        model, info = load_checkpoint(checkpoint, map_location=self.device)
        self.model = model.eval()
        self.network = self.model
        self.info: ModelInfo = info
        self.input_size = input_size or (info.input_height, info.input_width)
        self.focal_norm = None if info.focal_px is None else info.focal_px / info.input_width
        if self.input_size[0] % 32 or self.input_size[1] % 32:
            raise ValueError(f"input_size must be multiples of 32, got {self.input_size}")
        self.name = f"{info.arch}:{Path(checkpoint).name}"
        self.cache_id = f"mff-{digest([Path(checkpoint)], extra=str(self.input_size))}"
        logger.info("teacher %s (%s) on %s at %s", self.name, self.cache_id, self.device, self.input_size)

    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        x = normalise(resize(rgb, self.input_size), self.info.mean, self.info.std)
        depth = self.model(x)
        clamped = depth.clamp(self.info.min_depth, self.info.max_depth)
        return torch.where(torch.isfinite(depth), clamped, torch.nan)
