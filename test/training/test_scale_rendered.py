"""Metric anchoring on rendered frames, where depth, camera height and pose are known: both scale sources
recover a deliberately wrong scale (x1.5) within 3%."""

from __future__ import annotations

import numpy as np
import pytest

from depth_kd.render import Intrinsics, Renderer, make_world
from depth_kd_ros.scale import scale_from_depth, scale_from_ground


@pytest.fixture(scope="module")
def drive_frames():
    """Two frames of a robot's level camera, 0.45 m above the floor of a rendered room."""
    intrinsics = Intrinsics.from_fov(320, 240)
    world = make_world("indoor", 2, seed=7, trajectory="drive")
    renderer = Renderer(world.scene, intrinsics)
    out = []
    for pose in world.poses:
        frame = renderer.render(pose).numpy()
        up = frame.pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])  # world up in the optical frame
        out.append((frame.depth, (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy),
                    float(frame.pose[2, 3] - world.scene.layout.floor_z), up))
    return out


def test_both_sources_recover_a_wrong_scale(drive_frames):
    rng = np.random.default_rng(0)
    for depth, intrinsics, height, up in drive_frames:
        wrong = depth * np.float32(1.5)
        ground = scale_from_ground(wrong, intrinsics, height, up)
        assert ground.scale == pytest.approx(1 / 1.5, rel=0.03), (height, up)
        sparse = np.where(rng.random(depth.shape) < 0.01, depth, np.nan).astype(np.float32)
        assert scale_from_depth(wrong, sparse).scale == pytest.approx(1 / 1.5, rel=0.03)
