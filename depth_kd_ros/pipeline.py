"""One frame, camera to outputs: plain functions, chained by FramePath with the node's parameters and rules.
The node (live) and ``depth-kd infer`` (bag to bag) both run frames through a FramePath, so the two cannot
diverge.

    header, rgb = decode_image(raw, compressed, max_pixels)            # CDR bytes of an Image/CompressedImage
    info, intrinsics = fit_camera_info(camera_info, header, width, height)
    depth = estimate_depth(estimator, rgb, fx)
    scale = anchor.update(depth, intrinsics, decode_depth(...))        # scale.ScaleAnchor; 1.0 without one
    depth = finish_depth(depth, scale, limits)                         # metres, NaN = invalid (REP 118)
    depth_image(header, depth, "32FC1"), cloud(...), colored(...)      # CDR bytes, ready to publish or record
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from depth_kd_ros.camera_info import IntrinsicsError, camera_info_for_image
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
from depth_kd_ros.params import NodeParams, depth_limits
from depth_kd_ros.pointcloud import cloud_fields, depth_to_cloud
from depth_kd_ros.scale import ScaleAnchor
from depth_kd_ros.serialized import (
    MessageParseError,
    camera_info_cdr,
    cloud_cdr,
    depth_image_cdr,
    image_cdr,
    parse_cdr,
)

__all__ = ["DEPTH_ENCODINGS", "OUTPUTS", "Frame", "FramePath", "cloud", "colored", "decode_image", "depth_image",
           "estimate_depth", "finish_depth", "fit_camera_info"]

DEPTH_ENCODINGS = ("32FC1", "16UC1")  # metres (NaN invalid) | millimetres (0 invalid), REP 118
OUTPUTS = ("image", "camera_info", "points", "colored")  # depth/<name>


@dataclass
class Frame:
    """A camera frame after FramePath.estimate: what its outputs are made from."""

    header: Header
    rgb: np.ndarray
    depth: np.ndarray  # metres at the image's size, NaN = invalid; anchored and limited
    camera_info: CameraInfo | None  # fitted to the image, stamped with its header; None: no usable one
    intrinsics: tuple[float, float, float, float] | None  # (fx, fy, cx, cy) of camera_info
    scale: float  # the metric anchor's scale (1.0 without anchoring)
    decoded_at: float  # time.perf_counter() once decoded and the CameraInfo fitted (the node times stages)


class FramePath:
    """The per-frame path with the node's parameters and rules, for depth_node (live) and ``depth-kd infer``
    (a recording): ``estimate`` (decode, fit CameraInfo, infer, anchor, limit), then ``outputs`` (encode).

    ``params`` is read at every frame (the node changes it at run time). A problem goes to
    ``report(kind, message)``: a bad image or an undecodable one skips the frame (None); an unusable CameraInfo
    costs the frame its points, camera_info and metric rescale; bad metric depth, that frame's anchoring.
    """

    def __init__(self, estimator: DepthEstimator, params: NodeParams, report: Callable[[str, str], None]) -> None:
        self.estimator, self.params, self.report = estimator, params, report
        self.anchor = (ScaleAnchor(params.scale_source, params.camera_height, params.camera_pitch)
                       if params.scale_source != "none" else None)

    def near_far(self) -> tuple[float, float]:
        """The depth range in effect: the parameters' limits within the model's range."""
        return depth_limits(self.params, (self.estimator.info.min_depth, self.estimator.info.max_depth))

    def estimate(self, raw: bytes, compressed: bool, camera_info: CameraInfo | None, where: str,
                 metric_depths: Sequence[tuple[int, bytes]] = ()) -> Frame | None:
        """One frame from its CDR bytes; ``where`` names it in reports (e.g. "on /camera/image_raw");
        ``metric_depths``: (stamp ns, CDR) of recent metric depth messages, for ``scale_source: depth``."""
        p = self.params
        try:
            header, rgb = decode_image(raw, compressed, p.max_image_pixels)
        except ImageDecodeError as error:
            self.report("image", f"bad image {where}: {error}")
            return None
        height, width = rgb.shape[:2]
        fitted, intrinsics = None, None
        if camera_info is not None:
            try:
                fitted, intrinsics = fit_camera_info(camera_info, header, width, height)
            except IntrinsicsError as error:
                self.report("camera_info", f"unusable CameraInfo for the image {where}: {error}")
        decoded_at = time.perf_counter()
        depth = estimate_depth(self.estimator, rgb, intrinsics[0] if (intrinsics and p.metric_rescale) else None)
        scale = 1.0
        if self.anchor is not None:
            metric = self._metric_depth(header, metric_depths, where) if self.anchor.source == "depth" else None
            scale = self.anchor.update(depth, intrinsics, metric)
        depth = finish_depth(depth, scale, self.near_far() if (p.min_depth or p.max_depth) else None)
        return Frame(header, rgb, depth, fitted, intrinsics, scale, decoded_at)

    def _metric_depth(self, header: Header, metric_depths: Sequence[tuple[int, bytes]],
                      where: str) -> np.ndarray | None:
        """The metric depth (metres) stamped nearest this frame within the tolerance, or None."""
        p = self.params
        raw = nearest_by_stamp(metric_depths, header.stamp, p.metric_depth_tolerance)
        if raw is None:
            return None
        try:
            return decode_depth(raw, p.metric_depth_transport == "compressedDepth", p.max_image_pixels)
        except ImageDecodeError as error:
            self.report("metric_depth", f"bad metric depth for the image {where}: {error}")
            return None

    def outputs(self, frame: Frame, wanted: Container[str] = OUTPUTS) -> dict[str, bytes]:
        """The frame's messages as CDR bytes by output name (OUTPUTS), those in ``wanted`` that the frame has:
        camera_info and points need a usable CameraInfo."""
        p, header, depth = self.params, frame.header, frame.depth
        outputs = {}
        if "image" in wanted:
            outputs["image"] = depth_image(header, depth, p.depth_encoding)
        if frame.camera_info is not None and "camera_info" in wanted:
            outputs["camera_info"] = camera_info_cdr(frame.camera_info)
        if frame.intrinsics is not None and "points" in wanted:
            outputs["points"] = cloud(header, depth, frame.rgb, frame.intrinsics, p.points_rgb, p.points_decimation)
        if "colored" in wanted:
            outputs["colored"] = colored(header, depth, *self.near_far())
        return outputs


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
