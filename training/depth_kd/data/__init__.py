"""Training data: recorded bags and image folders, streamed frame by frame.

* ``frame.py``     -- the sample dict (``Frame``) and its keys, ``DataError``
* ``bags.py``      -- ``BagSource``: one image topic of a rosbag2 (sqlite3/MCAP) or ROS 1 bag, indexed; depth
  as 32FC1/16UC1 Image or compressedDepth; default topics fall back to the bag's only candidate
* ``folders.py``   -- ``ImageFolder``: png/jpg images with optional depth in a sibling folder
* ``selection.py`` -- ``parse_data_spec``: ``PATH#frames=A:B`` / ``PATH#time=T0:T1``, part of a recording
* ``sources.py``   -- ``open_source``: a data path (bag or image folder, with selection) -> its source
* ``dataset.py``   -- ``FrameDataset`` over many sources, ``EpochSampler``, ``TrainingTransform``

Sample keys: ``rgb`` (uint8 H x W x 3), ``depth`` (float32 H x W metres, NaN invalid; absent when
unknown), ``fx fy cx cy`` (float, NaN if unknown), ``stamp_ns`` (int), ``source``, ``topic``, ``key`` (str).

Example::

    sources = [BagSource(p, depth_topic="/camera/depth") for p in find_bags("recordings/")]
    dataset = FrameDataset(sources, transform=TrainingTransform(228, 304))
"""

from .bags import BagError, BagSource, bag_topics, find_bags
from .folders import FolderError, ImageFolder
from .frame import DataError, Frame
from .selection import Selection, parse_data_spec
from .sources import open_source

__all__ = [
    "BagError",
    "BagSource",
    "DataError",
    "EpochSampler",
    "FolderError",
    "Frame",
    "FrameDataset",
    "ImageFolder",
    "Selection",
    "TrainingTransform",
    "bag_topics",
    "find_bags",
    "open_source",
    "parse_data_spec",
    "resize_and_crop",
]

_TORCH_NAMES = ("EpochSampler", "FrameDataset", "TrainingTransform", "resize_and_crop")  # in dataset.py


def __getattr__(name: str) -> object:
    """dataset.py's names on first use: it imports torch, which reading a bag (``depth-kd infer``) never needs."""
    if name in _TORCH_NAMES:
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
