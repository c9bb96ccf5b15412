"""Small real rosbag2 recordings for the training tests, written with rosbags (no ROS install needed).

``write_bag(path, storage, [(topic, type, receive_ns, message), ...])`` writes the messages in the given
order; ``image_msg``, ``compressed_msg`` and ``info_msg`` build sensor_msgs/Image, CompressedImage and CameraInfo
messages. Imported as
``bag_writer`` (test/conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)
IMAGE, COMPRESSED, INFO = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def _header(stamp_ns: int) -> object:
    stamp = TS.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return TS.types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera")


def image_msg(stamp_ns: int, encoding: str, pixels: np.ndarray) -> object:
    """A sensor_msgs/Image holding ``pixels`` (H x W or H x W x C, uint8/uint16/float32), little-endian."""
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
    return TS.types[IMAGE](
        header=_header(stamp_ns),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=data.size // height,
        data=data,
    )


def compressed_msg(stamp_ns: int, fmt: str, data: bytes) -> object:
    """A sensor_msgs/CompressedImage with ``format`` ``fmt`` holding ``data`` as is."""
    return TS.types[COMPRESSED](header=_header(stamp_ns), format=fmt, data=np.frombuffer(data, dtype=np.uint8))


def info_msg(stamp_ns: int, fx: float, width: int = 32, height: int = 24) -> object:
    """A plumb_bob sensor_msgs/CameraInfo with focal ``fx`` (= fy) and the principal point at the centre."""
    k = np.array([fx, 0, width / 2, 0, fx, height / 2, 0, 0, 1], dtype=np.float64)
    p = np.array([fx, 0, width / 2, 0, 0, fx, height / 2, 0, 0, 0, 1, 0], dtype=np.float64)
    roi = TS.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return TS.types[INFO](
        header=_header(stamp_ns),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k,
        r=np.eye(3).reshape(-1),
        p=p,
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def write_bag(path: Path, storage: str, messages: list[tuple[str, str, int, object]]) -> Path:
    """Write ``(topic, type, receive_ns, message)`` tuples (in the given order) to a rosbag2 at ``path``."""
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        connections = {}
        for topic, msgtype, receive_ns, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(connections[topic], receive_ns, TS.serialize_cdr(msg, msgtype))
    return path
