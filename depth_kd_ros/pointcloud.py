"""Depth image (+ RGB) -> organized sensor_msgs/PointCloud2 payload, following depth_image_proc.

Written by hand because sensor_msgs_py is not available without a full ROS distro. The cloud is organized
(height x width, is_dense false): each pixel becomes one point, X = (u - cx) Z / fx, Y = (v - cy) Z / fy,
Z = depth in the camera optical frame (z forward, x right, y down), and invalid depth gives x, y, z = NaN.

Point layout (all FLOAT32, count 1, native byte order, i.e. little-endian; set is_bigendian False):
    x @ 0, y @ 4, z @ 8, pad @ 12                       point_step 16
    ... + rgb @ 16 (PCL packing), pad @ 20..31          point_step 32
``depth_to_cloud(...).tobytes()`` is the message data, with row_step = width * point_step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["cloud_fields", "depth_to_cloud", "point_step"]


def point_step(with_rgb: bool) -> int:
    """Bytes per point: 16 for x y z, 32 with the packed rgb field."""
    return 32 if with_rgb else 16


def cloud_fields(with_rgb: bool) -> list[tuple[str, int]]:
    """(name, byte offset) of each PointField; every field is FLOAT32 with count 1."""
    fields = [("x", 0), ("y", 4), ("z", 8)]
    if with_rgb:
        fields.append(("rgb", 16))
    return fields


def _check_intrinsics(fx: float, fy: float, cx: float, cy: float) -> None:
    for name, value in (("fx", fx), ("fy", fy)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite focal length > 0 pixels, got {name}={value}")
    for name, value in (("cx", cx), ("cy", cy)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {name}={value}")


@lru_cache(maxsize=8)
def _rays(
    height: int, width: int, fx: float, fy: float, cx: float, cy: float, decimation: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (u - cx) / fx and per-row (v - cy) / fy for the kept pixels; cached across frames."""
    x_ray = ((np.arange(0, width, decimation) - cx) / fx).astype(np.float32)
    y_ray = ((np.arange(0, height, decimation) - cy) / fy).astype(np.float32)
    x_ray.flags.writeable = False  # shared by every caller through the cache
    y_ray.flags.writeable = False
    return x_ray, y_ray[:, None]


def depth_to_cloud(
    depth: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    rgb: np.ndarray | None = None,
    decimation: int = 1,
) -> np.ndarray:
    """Project a (H, W) depth image in metres to an organized cloud.

    Returns C-contiguous float32 of shape (h, w, 4), or (h, w, 8) with ``rgb``, where h, w = the rows and
    columns 0, d, 2d, ... of the original image for decimation d (u, v stay original pixel coordinates, so
    the intrinsics are those of the full-size depth image). ``rgb`` is uint8 (H, W, 3) RGB at the depth's
    full size, packed as in PCL: the uint32 (r << 16) | (g << 8) | b stored bit-for-bit in a float32.
    NaN, inf and <= 0 depth give NaN x, y, z; padding is zero.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D (height, width) array, got shape {depth.shape}")
    if int(decimation) != decimation or decimation < 1:
        raise ValueError(f"decimation must be an integer >= 1, got {decimation!r}")
    decimation = int(decimation)
    _check_intrinsics(fx, fy, cx, cy)
    if rgb is not None and (rgb.shape != (*depth.shape, 3) or rgb.dtype != np.uint8):
        raise ValueError(
            f"rgb must be uint8 of shape {(*depth.shape, 3)} to match depth, got {rgb.dtype} {rgb.shape}"
        )

    height, width = depth.shape
    x_ray, y_ray = _rays(height, width, float(fx), float(fy), float(cx), float(cy), decimation)
    z = np.asarray(depth[::decimation, ::decimation], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        z = np.where(np.isfinite(z) & (z > 0), z, np.float32(np.nan))

    cloud = np.zeros((*z.shape, 4 if rgb is None else 8), dtype=np.float32)  # padding stays zero
    np.multiply(x_ray, z, out=cloud[..., 0])
    np.multiply(y_ray, z, out=cloud[..., 1])
    cloud[..., 2] = z
    if rgb is not None:
        small = rgb[::decimation, ::decimation].astype(np.uint32)
        packed = (small[..., 0] << 16) | (small[..., 1] << 8) | small[..., 2]
        cloud[..., 4] = packed.view(np.float32)  # a same-dtype copy keeps the bits, denormals included
    return cloud
