"""Training data: recorded bags and image folders, streamed frame by frame.

* ``frame.py``   -- the sample dict (``Frame``) and its keys, ``DataError``
* ``bags.py``    -- ``BagSource``: one image topic of a rosbag2 (sqlite3/MCAP) or ROS 1 bag, indexed
* ``folders.py`` -- ``ImageFolder``: png/jpg images with optional depth in a sibling folder
* ``dataset.py`` -- ``FrameDataset`` over many sources, ``EpochSampler``, ``TrainingTransform``

Sample keys: ``rgb`` (uint8 H x W x 3), ``depth`` (float32 H x W metres, NaN invalid; absent when
unknown), ``fx fy cx cy`` (float, NaN if unknown), ``stamp_ns`` (int), ``source``, ``topic``, ``key`` (str).

Example::

    sources = [BagSource(p, depth_topic="/camera/depth") for p in find_bags("recordings/")]
    dataset = FrameDataset(sources, transform=TrainingTransform(228, 304))
"""

from .bags import BagError, BagSource, bag_topics, find_bags
from .dataset import EpochSampler, FrameDataset, TrainingTransform, resize_and_crop
from .folders import FolderError, ImageFolder
from .frame import DataError, Frame

__all__ = [
    "BagError",
    "BagSource",
    "DataError",
    "EpochSampler",
    "FolderError",
    "Frame",
    "FrameDataset",
    "ImageFolder",
    "TrainingTransform",
    "bag_topics",
    "find_bags",
    "resize_and_crop",
]
