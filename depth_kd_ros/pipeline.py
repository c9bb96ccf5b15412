"""One frame, camera to outputs, as plain functions: the node (live) and ``depth-kd infer`` (bag to bag) both
call these, so the two cannot diverge.

    header, rgb = decode_image(raw, compressed, max_pixels)            # CDR bytes of an Image/CompressedImage
    info, intrinsics = fit_camera_info(camera_info, header, width, height)
    depth = estimate_depth(estimator, rgb, fx)
    scale = anchor.update(depth, intrinsics, decode_depth(...))        # scale.ScaleAnchor; 1.0 without one
    depth = finish_depth(depth, scale, limits)                         # metres, NaN = invalid (REP 118)
    depth_image(header, depth, "32FC1"), cloud(...), colored(...)      # CDR bytes, ready to publish or record
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from depth_kd_ros.camera_info import camera_info_for_image
from depth_kd_ros.image_codec import (
    ImageDecodeError,
    colorize_depth,
    compressed_depth_to_metres,
    compressed_to_rgb,
    depth_image_to_metres,
    depth_to_16uc1,
    image_to_rgb,
)
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.pointcloud import cloud_fields, depth_to_cloud
from depth_kd_ros.serialized import MessageParseError, cloud_cdr, depth_image_cdr, image_cdr, parse_cdr

__all__ = ["DEPTH_ENCODINGS", "cloud", "colored", "decode_image", "depth_image", "estimate_depth", "finish_depth",
           "fit_camera_info"]

DEPTH_ENCODINGS = ("32FC1", "16UC1")  # metres (NaN invalid) | millimetres (0 invalid), REP 118


def decode_image(raw: bytes, compressed: bool, max_pixels: int) -> tuple[Header, np.ndarray]:
    """(header, uint8 RGB) from a serialised sensor_msgs/Image or CompressedImage.

    Raises ImageDecodeError for anything undecodable, including images over ``max_pixels`` (checked from the
    declared size, before decoding) and bytes that are no valid message. An rgb8 result is a read-only view
    of ``raw``.
    """
    try:
        if compressed:
            msg = parse_cdr(raw, "sensor_msgs/msg/CompressedImage")
            rgb = compressed_to_rgb(msg.format, msg.data, max_pixels=max_pixels)
        else:
            msg = parse_cdr(raw, "sensor_msgs/msg/Image")
            rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian),
                               max_pixels=max_pixels, copy=False)
    except MessageParseError as error:
        raise ImageDecodeError(str(error)) from error
    stamp = Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec)
    return Header(stamp=stamp, frame_id=msg.header.frame_id), rgb


def decode_depth(raw: bytes, compressed: bool, max_pixels: int) -> np.ndarray:
    """float32 metres (NaN invalid) from a serialised depth Image (16UC1, 32FC1) or compressedDepth
    CompressedImage. Raises ImageDecodeError, as decode_image does."""
    try:
        if compressed:
            msg = parse_cdr(raw, "sensor_msgs/msg/CompressedImage")
            return compressed_depth_to_metres(msg.format, msg.data, max_pixels=max_pixels)
        msg = parse_cdr(raw, "sensor_msgs/msg/Image")
        return depth_image_to_metres(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian),
                                     max_pixels=max_pixels)
    except MessageParseError as error:
        raise ImageDecodeError(str(error)) from error


def nearest_by_stamp(candidates: Sequence[tuple[int, bytes]], stamp: Time, tolerance_s: float) -> bytes | None:
    """Of (stamp in ns, CDR bytes) pairs, the one stamped nearest ``stamp`` if within ``tolerance_s``, else None."""
    stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
    gap, raw = min(((abs(s - stamp_ns), r) for s, r in candidates), default=(None, None), key=lambda c: c[0])
    return raw if raw is not None and gap <= tolerance_s * 1e9 else None


def fit_camera_info(info: CameraInfo, header: Header, width: int,
                    height: int) -> tuple[CameraInfo, tuple[float, float, float, float]]:
    """``info`` for this frame: scaled to width x height, stamped with the frame's header; and (fx, fy, cx, cy).

    Raises IntrinsicsError when it does not fit the image (see camera_info_for_image): then the frame gets no
    points and no metric rescale.
    """
    fitted, intrinsics = camera_info_for_image(info, width, height)
    fitted.header = header
    return fitted, intrinsics


def estimate_depth(estimator: DepthEstimator, rgb: np.ndarray, fx: float | None) -> np.ndarray:
    """Depth in metres at the image's size; ``fx`` (pixels) rescales it to this camera."""
    return estimator.predict(rgb, fx=fx)


def finish_depth(depth: np.ndarray, scale: float = 1.0, limits: tuple[float, float] | None = None) -> np.ndarray:
    """In place: multiply by the metric ``scale`` (scale.py), then depth outside ``limits`` (near, far) becomes
    NaN (REP 118: no measurement)."""
    if scale != 1.0:
        depth *= np.float32(scale)
    if limits is not None:
        with np.errstate(invalid="ignore"):
            depth[(depth < limits[0]) | (depth > limits[1])] = np.nan
    return depth


def depth_image(header: Header, depth: np.ndarray, encoding: str = "32FC1") -> bytes:
    """sensor_msgs/Image as CDR: 32FC1 metres (NaN invalid) or 16UC1 millimetres (0 invalid)."""
    if encoding == "16UC1":
        return image_cdr(header, "16UC1", depth_to_16uc1(depth))
    if encoding != "32FC1":
        raise ValueError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)}, got {encoding!r}")
    return depth_image_cdr(header, depth)


def cloud(header: Header, depth: np.ndarray, rgb: np.ndarray, intrinsics: tuple[float, float, float, float],
          with_rgb: bool = False, decimation: int = 1) -> bytes:
    """Organized sensor_msgs/PointCloud2 as CDR (depth_image_proc conventions, see pointcloud.py)."""
    points = depth_to_cloud(depth, *intrinsics, rgb=rgb if with_rgb else None, decimation=decimation)
    return cloud_cdr(header, points, cloud_fields(with_rgb))


def colored(header: Header, depth: np.ndarray, near: float, far: float) -> bytes:
    """bgr8 colour map of depth between near and far as a sensor_msgs/Image CDR, for viewing."""
    return image_cdr(header, "bgr8", colorize_depth(depth, near, far))
