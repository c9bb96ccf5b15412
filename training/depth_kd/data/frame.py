"""The sample dict every data source returns, and the error type they raise.

A frame is a plain ``dict`` (typed as :class:`Frame`) with these keys:

=============  =====================  ==========================================================
key            type                   meaning
=============  =====================  ==========================================================
``rgb``        uint8 H x W x 3        the image, RGB order, decoded exactly as the node decodes it
``depth``      float32 H x W          ground-truth depth in metres, NaN = invalid; **absent** when
                                      the source has none for this frame
``instances``  uint16 H x W           per-pixel instance ids (rendered bags' ``/camera/instances``,
                                      16UC1; 0 = structure / background), only when the source was
                                      asked for them (object-wise mixing); otherwise **absent**
``fx``         float                  focal length x in pixels, for this ``rgb`` size; NaN if unknown
``fy``         float                  focal length y in pixels; NaN if unknown
``cx``         float                  principal point x in pixels; NaN if unknown
``cy``         float                  principal point y in pixels; NaN if unknown
``stamp_ns``   int                    capture time in ns (bags: header stamp; folders: see folders.py)
``source``     str                    the bag or folder path the frame came from (absolute)
``topic``      str                    the image topic (bags) or ``""`` (image folders)
``key``        str                    stable id of this frame, e.g. for the teacher cache:
                                      ``"<source>|<topic>|<stamp_ns>"`` for bags, the image file's
                                      absolute path for folders
=============  =====================  ==========================================================
"""

from __future__ import annotations

from typing import Protocol, TypedDict

import numpy as np

NAN = float("nan")


class DataError(ValueError):
    """A data source cannot be read; the message names the path and what is wrong."""


class _FrameRequired(TypedDict):
    rgb: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    stamp_ns: int
    source: str
    topic: str
    key: str


class Frame(_FrameRequired, total=False):
    """One sample; ``depth`` and ``instances`` are optional (see the module docstring)."""

    depth: np.ndarray
    instances: np.ndarray


def make_frame(rgb: np.ndarray, intrinsics: tuple[float, float, float, float], stamp_ns: int, source: str,
               topic: str, key: str, depth: np.ndarray | None = None,
               instances: np.ndarray | None = None) -> Frame:
    """The one place a sample dict is built; ``intrinsics`` is (fx, fy, cx, cy), NaN where unknown."""
    fx, fy, cx, cy = intrinsics
    frame: Frame = {"rgb": rgb, "fx": fx, "fy": fy, "cx": cx, "cy": cy, "stamp_ns": stamp_ns,
                    "source": source, "topic": topic, "key": key}
    if depth is not None:
        frame["depth"] = depth
    if instances is not None:
        frame["instances"] = instances
    return frame


class FrameSource(Protocol):
    """What :class:`depth_kd.data.dataset.FrameDataset` needs from a source (bag or image folder)."""

    def __len__(self) -> int:
        """Number of frames kept after subsampling."""
        ...

    def key(self, index: int) -> str:
        """The frame's stable id, without decoding it."""
        ...

    def load(self, index: int) -> Frame:
        """Read and decode frame ``index``."""
        ...
