"""The node's large messages in and out as CDR bytes, (de)serialised with rosbags.

In: images arrive as bytes (a raw subscription) and are parsed on the worker thread, where numpy views the
pixels in place (0.26 ms for a 640x480 rgb8 Image against rclpy's 2.4 ms, which also runs on the executor
thread that must stay free for the next message).

Out: rclpy converts a PointCloud2's 4.7 MiB payload element by element (~22 ms at 640x480); rosbags' CDR
serializer writes the same message from a numpy buffer in ~0.8 ms (docs/experiments/profile_outputs.py;
for Images the saving is small, 0.4 -> 0.2 ms). ``Publisher.publish(bytes)`` sends them as they are.
Subscribers see an ordinary message: test/test_serialized.py checks it against rclpy's own serialisation.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from rosbags.typesys import Stores, get_typestore


@lru_cache(maxsize=1)
def _typestore():
    return get_typestore(Stores.ROS2_JAZZY)  # the message definitions are identical in Humble..Rolling


class MessageParseError(ValueError):
    """The bytes are no valid CDR message of the expected type; the message says which and why."""


def parse_cdr(raw: bytes, msgtype: str) -> object:
    """A rosbags message from CDR bytes (e.g. ``"sensor_msgs/msg/Image"``); arrays view ``raw`` in place."""
    try:
        return _typestore().deserialize_cdr(raw, msgtype)
    except Exception as error:  # noqa: BLE001 - rosbags raises struct/index/unicode errors on damaged data
        raise MessageParseError(f"{len(raw)} bytes are not a valid {msgtype} ({type(error).__name__}: "
                                f"{str(error)[:120]})") from error


def cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp (ns) of a serialised message that starts with a std_msgs/Header, read without parsing it
    (after CDR's 4-byte encapsulation: int32 sec, uint32 nanosec). ``raw`` must hold at least 12 bytes."""
    sec, nanosec = struct.unpack_from("<iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def _header(header) -> object:
    """An rclpy (or rosbags) std_msgs/Header -> the rosbags equivalent (stamp and frame_id copied)."""
    types = _typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=header.frame_id)


def _bytes_view(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def image_cdr(header, encoding: str, pixels: np.ndarray) -> bytes:
    """sensor_msgs/Image for a (height, width[, channels]) little-endian array, rows unpadded."""
    height, width = pixels.shape[:2]
    msg = _typestore().types["sensor_msgs/msg/Image"](
        header=_header(header), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=pixels.itemsize * width * (pixels.shape[2] if pixels.ndim == 3 else 1), data=_bytes_view(pixels))
    return bytes(_typestore().serialize_cdr(msg, "sensor_msgs/msg/Image"))


def depth_image_cdr(header, depth: np.ndarray) -> bytes:
    """sensor_msgs/Image, 32FC1 (REP 118: metres, NaN = no measurement), from (height, width) depth."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D (height, width) array, got shape {depth.shape}")
    return image_cdr(header, "32FC1", depth.astype("<f4", copy=False))


def camera_info_cdr(info) -> bytes:
    """An rclpy (or rosbags) sensor_msgs/CameraInfo as CDR, padding zeroed (rclpy's own serializer leaves
    padding as it finds the memory): the same input gives the same bytes, so a recorded bag is reproducible."""
    t = _typestore().types
    roi = info.roi
    msg = t["sensor_msgs/msg/CameraInfo"](
        header=_header(info.header), height=info.height, width=info.width, distortion_model=info.distortion_model,
        d=np.asarray(info.d, np.float64), k=np.asarray(info.k, np.float64), r=np.asarray(info.r, np.float64),
        p=np.asarray(info.p, np.float64), binning_x=info.binning_x, binning_y=info.binning_y,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=roi.x_offset, y_offset=roi.y_offset, height=roi.height,
                                                  width=roi.width, do_rectify=roi.do_rectify))
    return bytes(_typestore().serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"))


def cloud_cdr(header, points: np.ndarray, fields: Sequence[tuple[str, int]]) -> bytes:
    """sensor_msgs/PointCloud2, organized, from (height, width, floats per point) float32 ``points``;
    ``fields``: (name, byte offset) of each FLOAT32 field, count 1."""
    types = _typestore().types
    point_field = types["sensor_msgs/msg/PointField"]
    height, width, per_point = points.shape
    step = 4 * per_point
    msg = types["sensor_msgs/msg/PointCloud2"](
        header=_header(header), height=height, width=width,
        fields=[point_field(name=n, offset=o, datatype=point_field.FLOAT32, count=1) for n, o in fields],
        is_bigendian=False, point_step=step, row_step=step * width,
        data=_bytes_view(points.astype("<f4", copy=False)), is_dense=False)
    return bytes(_typestore().serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
