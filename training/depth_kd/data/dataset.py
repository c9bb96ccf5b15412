"""Many bags and image folders as one torch Dataset, a resumable epoch sampler, and the training transform.

* :class:`FrameDataset` concatenates sources (:class:`~depth_kd.data.bags.BagSource`,
  :class:`~depth_kd.data.folders.ImageFolder`); index ``i`` always maps to the same frame, so an epoch
  is just an order of indices and ``key(i)`` names a frame without decoding it (teacher cache).
* :class:`EpochSampler` gives that order: a permutation fixed by ``(seed, epoch)``, split across DDP
  ranks, which can start part-way through an epoch to resume. DataLoader workers then only fetch.
* :class:`TrainingTransform` resizes and centre-crops a frame to the training size, adjusts the
  intrinsics to match, and returns float tensors (ImageNet-style normalisation is left to the model
  side, whose checkpoint carries mean/std).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .frame import Frame, FrameSource

__all__ = ["EpochSampler", "FrameDataset", "TrainingTransform", "resize_and_crop"]


class FrameDataset(Dataset):
    """The frames of several sources, in source order; ``transform`` is applied to each loaded frame."""

    def __init__(self, sources: Sequence[FrameSource], transform: Callable[[Frame], Any] | None = None) -> None:
        self.sources = list(sources)
        self.transform = transform
        self._ends = list(itertools.accumulate(len(s) for s in self.sources))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def locate(self, index: int) -> tuple[FrameSource, int]:
        """The source holding dataset index ``index`` and the frame's index within it."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} frames")
        which = bisect.bisect_right(self._ends, index)
        start = self._ends[which - 1] if which else 0
        return self.sources[which], index - start

    def key(self, index: int) -> str:
        """Stable id of frame ``index`` (no decoding)."""
        source, local = self.locate(index)
        return source.key(local)

    def __getitem__(self, index: int) -> Any:
        source, local = self.locate(index)
        frame = source.load(local)
        return self.transform(frame) if self.transform else frame


class EpochSampler(Sampler[int]):
    """Deterministic, DDP-aware, resumable order of dataset indices.

    Epoch ``e`` uses the permutation of ``torch.randperm`` seeded with ``seed + e`` (identity when
    ``shuffle=False``), padded by wrapping round to a multiple of ``world_size``; rank ``r`` takes
    every ``world_size``-th index from position ``r``. ``set_epoch(e, start=k)`` skips this rank's first
    ``k`` indices, so resuming after ``k`` samples replays exactly the rest of the epoch.
    """

    def __init__(self, length: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if length < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need length >= 1, 0 <= rank < world_size; got {length}, {rank}, {world_size}")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(length / world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch, and where in this rank's share of it to begin."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start must be in 0..{self.per_rank}, got {start}")
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """This rank's whole share of the current epoch (ignores ``start``)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.length, generator=generator).tolist()
        else:
            indices = list(range(self.length))
        total = self.per_rank * self.world_size
        indices = (indices * math.ceil(total / self.length))[:total]
        return indices[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def resize_and_crop(frame: Frame, height: int, width: int) -> Frame:
    """Scale ``frame`` (keeping aspect) to just cover ``height`` x ``width``, then crop the centre.

    Intrinsics follow image_proc's resize convention (fx, cx times the x scale; fy, cy times the y
    scale) and the crop shifts cx, cy. RGB uses area (shrinking) or bilinear (enlarging) interpolation;
    depth and instance ids use nearest so that invalid (NaN) pixels never mix with valid ones, nor ids blend.
    """
    h, w = frame["rgb"].shape[:2]
    scale = max(height / h, width / w)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    sx, sy = new_w / w, new_h / h
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out: Frame = dict(frame)  # type: ignore[assignment]
    rows, cols = slice(y0, y0 + height), slice(x0, x0 + width)
    out["rgb"] = cv2.resize(frame["rgb"], (new_w, new_h), interpolation=interp)[rows, cols]
    for key in ("depth", "instances"):
        if key in frame:
            out[key] = cv2.resize(frame[key], (new_w, new_h), interpolation=cv2.INTER_NEAREST)[rows, cols]
    out["fx"], out["fy"] = frame["fx"] * sx, frame["fy"] * sy
    out["cx"], out["cy"] = frame["cx"] * sx - x0, frame["cy"] * sy - y0
    return out


class TrainingTransform:
    """Frame -> dict of tensors at ``height`` x ``width``, ready for the default DataLoader collate.

    Keys: ``rgb`` float32 3 x H x W in [0, 1]; ``depth`` float32 1 x H x W metres, all NaN when the
    frame has none; ``has_depth`` bool; ``intrinsics`` float32 [fx, fy, cx, cy] (NaN if unknown);
    ``stamp_ns`` int; ``key``, ``source``, ``topic`` str; and ``instances`` int64 1 x H x W only when the frame
    has instance ids (a source opened with ``instances_topic``).
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def __call__(self, frame: Frame) -> dict[str, Any]:
        frame = resize_and_crop(frame, self.height, self.width)
        rgb = torch.from_numpy(np.ascontiguousarray(frame["rgb"])).permute(2, 0, 1).float().div_(255.0)
        if "depth" in frame:
            depth = torch.from_numpy(np.ascontiguousarray(frame["depth"], dtype=np.float32))[None]
        else:
            depth = torch.full((1, self.height, self.width), float("nan"))
        intrinsics = torch.tensor([frame["fx"], frame["fy"], frame["cx"], frame["cy"]], dtype=torch.float32)
        sample = {
            "rgb": rgb,
            "depth": depth,
            "has_depth": torch.tensor("depth" in frame),
            "intrinsics": intrinsics,
            "stamp_ns": frame["stamp_ns"],
            "key": frame["key"],
            "source": frame["source"],
            "topic": frame["topic"],
        }
        if "instances" in frame:
            sample["instances"] = torch.from_numpy(frame["instances"].astype(np.int64))[None]
        return sample
