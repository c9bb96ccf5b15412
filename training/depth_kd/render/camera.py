"""Pinhole camera model, per-pixel rays and pose helpers.

Conventions (REP 103): the camera optical frame has z forward, x right, y down. The world frame is z up.
A pose is the 4x4 world-from-camera transform ``T_wc`` (float64 numpy), so a point ``p_c`` in the optical
frame is ``T_wc[:3, :3] @ p_c + T_wc[:3, 3]`` in the world.

Rays have direction ``((u - cx) / fx, (v - cy) / fy, 1)`` in the optical frame for pixel column ``u`` and row
``v`` (integer pixel centres, as depth_image_proc back-projects). Because the z component is 1, the ray
parameter ``t`` of a hit IS the depth along the optical axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Optical axes expressed in a body frame with x forward, y left, z up (columns: x_opt, y_opt, z_opt).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Intrinsics:
    """CameraInfo-style pinhole intrinsics (pixels) for an undistorted image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = 60.0) -> Intrinsics:
        """Square pixels, principal point at the image centre, horizontal field of view ``hfov_deg``."""
        fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls.from_focal(width, height, fx)

    @classmethod
    def from_focal(cls, width: int, height: int, fx: float) -> Intrinsics:
        """Square pixels with focal length ``fx`` and the principal point at the image centre."""
        return cls(
            fx=float(fx),
            fy=float(fx),
            cx=(width - 1) / 2.0,
            cy=(height - 1) / 2.0,
            width=int(width),
            height=int(height),
        )

    @property
    def k(self) -> list[float]:
        """Row-major 3x3 camera matrix K as in sensor_msgs/CameraInfo."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    @property
    def p(self) -> list[float]:
        """Row-major 3x4 projection matrix P (monocular: no baseline)."""
        return [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def ray_directions(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Optical-frame ray directions, float32 (H*W, 3) in row-major pixel order, z component exactly 1."""
        u = torch.arange(self.width, dtype=torch.float64, device=device)
        v = torch.arange(self.height, dtype=torch.float64, device=device)
        x = ((u - self.cx) / self.fx).expand(self.height, self.width)
        y = ((v - self.cy) / self.fy)[:, None].expand(self.height, self.width)
        dirs = torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(-1, 3)
        return dirs.to(torch.float32).contiguous()


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """ROS fixed-axis RPY rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (positive pitch: nose down)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def camera_pose(position: np.ndarray, roll: float = 0.0, pitch: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """World-from-optical 4x4 pose of a camera at ``position`` whose body (x forward, z up) has this RPY."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_rpy(roll, pitch, yaw) @ BODY_FROM_OPTICAL
    pose[:3, 3] = position
    return pose


def pose_to_translation_quaternion(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 4x4 pose into translation (3,) and unit quaternion (x, y, z, w) with w >= 0, for /tf."""
    m = np.asarray(pose, dtype=np.float64)[:3, :3]
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q) / np.linalg.norm(q)
    if quat[3] < 0.0:
        quat = -quat
    return np.asarray(pose, dtype=np.float64)[:3, 3].copy(), quat
