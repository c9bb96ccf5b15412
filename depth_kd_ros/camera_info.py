"""sensor_msgs/CameraInfo helpers: pinhole intrinsics and rescaling to another image size.

Written by hand (no image_geometry without a full ROS distro), following depth_image_proc for the
intrinsics and image_proc's resize for the scaling. Only the sensor_msgs message class is imported.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from sensor_msgs.msg import CameraInfo

__all__ = ["IntrinsicsError", "camera_info_for_image", "intrinsics_from_camera_info", "scale_camera_info"]

# A CameraInfo may describe the same camera at another resolution (binning, image_proc resize): same aspect
# ratio within rounding. A field of view outside these bounds is no pinhole camera a depth network can serve.
ASPECT_TOLERANCE = 0.01
FOV_DEGREES = (1.0, 170.0)


class IntrinsicsError(ValueError):
    """CameraInfo does not describe a usable pinhole camera; the message names the bad value."""


def intrinsics_from_camera_info(info: CameraInfo) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels from P, as depth_image_proc does; from K when P is all zero.

    P describes the rectified image, which is what a depth network sees; uncalibrated drivers often
    leave P zero but fill K.
    """
    p = np.asarray(info.p, dtype=np.float64)
    if np.any(p):
        source, values, indices = "P", (p[0], p[5], p[2], p[6]), (0, 5, 2, 6)
    else:
        k = np.asarray(info.k, dtype=np.float64)
        source, values, indices = "K", (k[0], k[4], k[2], k[5]), (0, 4, 2, 5)
    fx, fy, cx, cy = (float(v) for v in values)
    for name, value, index in zip(("fx", "fy", "cx", "cy"), (fx, fy, cx, cy), indices, strict=True):
        is_focal = name in ("fx", "fy")
        if not math.isfinite(value) or (is_focal and value <= 0):
            need = "finite and > 0" if is_focal else "finite"
            raise IntrinsicsError(
                f"CameraInfo {name} = {source}[{index}] = {value} must be {need} "
                f"(frame '{info.header.frame_id}')"
            )
    return fx, fy, cx, cy


def _scale_span(offset: int, size: int, scale: float) -> tuple[int, int]:
    """Scale an ROI span by its two ends (rounded), so offset + size stays inside the scaled image."""
    start = math.floor(offset * scale + 0.5)
    end = math.floor((offset + size) * scale + 0.5)
    return start, end - start


def scale_camera_info(info: CameraInfo, width: int, height: int) -> CameraInfo:
    """A new CameraInfo for the same camera at width x height, as image_proc's resize computes it.

    sx = width / info.width, sy = height / info.height; K[0], K[2], P[0], P[2], P[3] scale by sx and
    K[4], K[5], P[5], P[6] by sy; the ROI scales with them. A 0 x 0 info (some drivers) is taken to match
    already, so only width/height are set. The input is left untouched.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got width={width}, height={height}")
    out = copy.deepcopy(info)
    out.width, out.height = int(width), int(height)
    if info.width == 0 or info.height == 0 or (info.width == width and info.height == height):
        return out

    sx, sy = width / info.width, height / info.height
    out.k[[0, 2]] *= sx
    out.k[[4, 5]] *= sy
    out.p[[0, 2, 3]] *= sx
    out.p[[5, 6]] *= sy
    out.roi.x_offset, out.roi.width = _scale_span(info.roi.x_offset, info.roi.width, sx)
    out.roi.y_offset, out.roi.height = _scale_span(info.roi.y_offset, info.roi.height, sy)
    return out


def camera_info_for_image(info: CameraInfo, width: int, height: int) -> tuple[CameraInfo, tuple[float, ...]]:
    """``info`` scaled to a width x height image, and its (fx, fy, cx, cy) there; IntrinsicsError if unusable.

    Unusable: an aspect ratio other than the image's (a CameraInfo for another camera or crop, which scaling
    would turn into nonsense), or intrinsics no real camera has at that size (focal lengths outside a 1 to
    170 degree field of view, principal point far outside the image).
    """
    if info.width and info.height:
        declared, actual = info.width / info.height, width / height
        if abs(declared / actual - 1.0) > ASPECT_TOLERANCE:
            raise IntrinsicsError(f"CameraInfo is {info.width}x{info.height} but the image is {width}x{height}: "
                                  f"aspect ratios {declared:.4g} and {actual:.4g} differ (frame "
                                  f"'{info.header.frame_id}')")
    scaled = scale_camera_info(info, width, height)
    fx, fy, cx, cy = intrinsics_from_camera_info(scaled)
    for name, focal, size in (("fx", fx, width), ("fy", fy, height)):
        fov = math.degrees(2.0 * math.atan(size / (2.0 * focal)))
        if not FOV_DEGREES[0] <= fov <= FOV_DEGREES[1]:
            raise IntrinsicsError(f"CameraInfo {name} = {focal:.6g} px gives a {fov:.3g} degree field of view at "
                                  f"{width}x{height}; expected {FOV_DEGREES[0]:g} to {FOV_DEGREES[1]:g}")
    for name, centre, size in (("cx", cx, width), ("cy", cy, height)):
        if not -0.5 * size <= centre <= 1.5 * size:
            raise IntrinsicsError(f"CameraInfo {name} = {centre:.6g} px lies far outside the {width}x{height} image")
    return scaled, (fx, fy, cx, cy)
