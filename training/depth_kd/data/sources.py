"""One data path as typed on the command line -> a frame source: a bag or an image folder, whole or in part.

:func:`open_source` is the single entry point the training commands and ``depth-kd eval`` share, so a path
means the same everywhere: ``PATH[#frames=A:B | #time=T0:T1]`` (selection.py), where PATH is a bag
(bags.py: rosbag2 folder, .db3/.mcap, ROS 1 .bag) or a folder of images (folders.py). Topic choice,
fall-backs and their log lines live in :class:`~depth_kd.data.bags.BagSource`, not here.
"""

from __future__ import annotations

from depth_kd.config import DEFAULT_IMAGE_TOPIC

from .bags import BagSource
from .folders import FolderError, ImageFolder, is_image_folder
from .selection import parse_data_spec

__all__ = ["open_source"]


def open_source(
    spec: str,
    *,
    image_topic: str | None = DEFAULT_IMAGE_TOPIC,
    depth_topic: str | None = None,
    camera_info_topic: str | None = "auto",
    stride: int = 1,
    depth_tolerance_s: float = 0.0,
    require_depth: bool = False,
    assumed_fx: float | None = None,
    instances_topic: str | None = None,
) -> BagSource | ImageFolder:
    """The frames named by ``spec``; with ``depth_topic`` (bags) or a sibling ``depth/`` folder, with depth.

    ``require_depth`` keeps only frames that have depth (labeled and evaluation data). For an image folder the
    topics are ignored and depth comes from its ``depth/`` folder when ``depth_topic`` is not None.
    ``instances_topic`` (bags only) adds each frame's instance ids, for object-wise mixing.
    """
    path, selection = parse_data_spec(spec)
    if is_image_folder(path):
        if instances_topic is not None:
            raise FolderError(f"{path}: an image folder has no instance ids ({instances_topic}); object-wise mixing "
                              "needs rendered bags (or datafree.mixing=false)")
        return ImageFolder(path, depth="auto" if depth_topic is not None else None, stride=stride,
                           selection=selection, require_depth=require_depth, assumed_fx=assumed_fx)
    return BagSource(path, image_topic, depth_topic=depth_topic, camera_info_topic=camera_info_topic, stride=stride,
                     depth_tolerance_s=depth_tolerance_s, require_depth=require_depth, selection=selection,
                     assumed_fx=assumed_fx, instances_topic=instances_topic)
