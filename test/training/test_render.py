"""The synthetic camera world: exact depth, camera conventions, instance ids, determinism, looks, motion."""

import math

import numpy as np
import pytest
import torch

from depth_kd.render.camera import Intrinsics, camera_pose, pose_to_translation_quaternion
from depth_kd.render.families import FAMILIES
from depth_kd.render.renderer import Renderer
from depth_kd.render.scene import SceneBuilder
from depth_kd.render.sequence import make_world, render_sequence
from depth_kd.render.textures import Material

# Deliberately unequal focal lengths and an off-centre principal point with integer pixel coordinates.
K = Intrinsics(fx=50.0, fy=46.0, cx=30.0, cy=22.0, width=64, height=48)


def _grid(k: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))


def _back_project(depth: np.ndarray, k: Intrinsics, pose: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) from a depth image, as depth_image_proc does, then through the pose."""
    u, v = _grid(k)
    z = depth.astype(np.float64)
    cam = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=-1)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def _sphere_depth(k: Intrinsics, center: np.ndarray, radius: float) -> np.ndarray:
    """Analytic float64 depth of a sphere seen from the origin of the optical frame, NaN off the sphere."""
    u, v = _grid(k)
    d = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)
    a = (d * d).sum(-1)
    b = (d * center).sum(-1)
    disc = b * b - a * (center @ center - radius**2)
    with np.errstate(invalid="ignore"):
        return np.where(disc >= 0, (b - np.sqrt(disc)) / a, np.nan)


def test_fronto_parallel_plane_depth_is_exact():
    builder = SceneBuilder()
    builder.add_quad(
        (0.51, 0.0, 3.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (4.0, 3.0), Material("checker"), instance=7
    )
    frame = Renderer(builder.build(), K).render(np.eye(4)).numpy()  # optical frame = world frame
    hit = np.isfinite(frame.depth)
    assert np.all(frame.depth[hit] == np.float32(3.0))
    assert np.all(frame.instances[hit] == 7) and np.all(frame.instances[~hit] == 0)
    # The quad spans x in [-1.49, 2.51], y in [-1.5, 1.5] at z = 3; it is hit exactly where it projects.
    u, v = _grid(K)
    x, y = (u - K.cx) * 3.0 / K.fx, (v - K.cy) * 3.0 / K.fy
    expected = (x >= -1.49) & (x <= 2.51) & (np.abs(y) <= 1.5)
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(hit, expected)


def test_sphere_depth_matches_analytic_solution():
    center, radius = np.array([0.0, 0.0, 4.0]), 1.2
    builder = SceneBuilder()
    builder.add_sphere(center, radius, Material("noise"), instance=3)
    frame = Renderer(builder.build(), K).render(np.eye(4)).numpy()
    cy, cx = int(K.cy), int(K.cx)
    assert frame.depth[cy, cx] == pytest.approx(4.0 - 1.2, rel=1e-6)
    expected = _sphere_depth(K, center, radius)
    both = np.isfinite(expected) & np.isfinite(frame.depth)
    np.testing.assert_allclose(frame.depth[both], expected[both], rtol=2e-6)
    # Silhouette: the only disagreements allowed are pixels whose ray grazes the sphere.
    disagree = np.isfinite(expected) != np.isfinite(frame.depth)
    assert disagree.sum() <= 2, f"{disagree.sum()} silhouette pixels differ"
    assert np.array_equal(frame.instances == 3, np.isfinite(frame.depth))


def _mixed_scene() -> tuple[SceneBuilder, dict[int, tuple]]:
    b = SceneBuilder()
    shapes = {}
    b.add_box((2.5, 2.0, 1.25), (5.0, 4.0, 2.5), Material("tiles", scale=0.3))  # room, instance 0
    shapes[0] = ("box", np.array([2.5, 2.0, 1.25]), np.array([2.5, 2.0, 1.25]), 0.0)
    i = b.new_instance()
    b.add_sphere((3.5, 2.6, 0.6), 0.5, Material("checker", scale=0.1), instance=i)
    shapes[i] = ("sphere", np.array([3.5, 2.6, 0.6]), 0.5)
    i = b.new_instance()
    b.add_box((3.2, 1.2, 0.4), (0.6, 0.4, 0.8), Material("stripes", scale=0.05), yaw=0.6, instance=i)
    shapes[i] = ("box", np.array([3.2, 1.2, 0.4]), np.array([0.3, 0.2, 0.4]), 0.6)
    i = b.new_instance()
    b.add_cylinder((2.4, 2.2, 0.0), 0.15, 1.5, Material("noise", scale=0.1), instance=i)
    shapes[i] = ("cylinder", np.array([2.4, 2.2, 0.0]), 0.15, 1.5)
    i = b.new_instance()
    b.add_quad(
        (4.99, 1.5, 1.3), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.8), Material("checker"), instance=i
    )
    shapes[i] = ("quad", np.array([4.99, 1.5, 1.3]), np.array([1.0, 0.0, 0.0]))
    return b, shapes


def _residual(shape: tuple, p: np.ndarray) -> np.ndarray:
    """How far points p (M, 3) are from the surface of ``shape`` (metres)."""
    kind = shape[0]
    if kind == "sphere":
        return np.abs(np.linalg.norm(p - shape[1], axis=1) - shape[2])
    if kind == "quad":
        return np.abs((p - shape[1]) @ shape[2])
    if kind == "cylinder":
        local = p - shape[1]
        side = np.abs(np.hypot(local[:, 0], local[:, 1]) - shape[2])
        caps = np.minimum(np.abs(local[:, 2]), np.abs(local[:, 2] - shape[3]))
        return np.minimum(side, caps)
    c, s = math.cos(shape[3]), math.sin(shape[3])
    rel = p - shape[1]
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0], rel[:, 2]], axis=1)
    return np.abs(np.max(np.abs(local) - shape[2], axis=1))


def test_back_projected_depth_lies_on_the_surfaces_of_each_instance():
    builder, shapes = _mixed_scene()
    pose = camera_pose(np.array([0.6, 1.9, 0.9]), roll=0.05, pitch=0.12, yaw=0.1)
    k = Intrinsics.from_fov(96, 72, 75.0)
    frame = Renderer(builder.build(), k).render(pose).numpy()
    assert np.isfinite(frame.depth).all()  # the camera is inside the room
    points = _back_project(frame.depth, k, pose)
    seen = set(np.unique(frame.instances).tolist())
    assert seen == set(shapes), f"instances in view: {seen}"
    for instance, shape in shapes.items():
        mask = frame.instances == instance
        residual = _residual(shape, points[mask])
        assert residual.max() < 2e-4 * (1 + frame.depth[mask].max()), (instance, residual.max())


def test_instance_mask_of_a_sphere_is_its_projection():
    builder = SceneBuilder()
    builder.add_box((0.0, 0.0, 5.0), (20.0, 20.0, 2.0), Material("noise"))  # a wall behind, instance 0
    center, radius = np.array([-0.4, 0.3, 2.5]), 0.45
    builder.add_sphere(center, radius, Material("checker"), instance=builder.new_instance())
    frame = Renderer(builder.build(), K).render(np.eye(4)).numpy()
    expected = np.isfinite(_sphere_depth(K, center, radius))
    assert expected.sum() > 100
    assert (expected != (frame.instances == 1)).sum() <= 2
    assert np.isfinite(frame.depth).all()


def test_rendering_is_deterministic_and_seed_dependent():
    k = Intrinsics.from_fov(64, 48)

    def frames(seed: int) -> list:
        return [f.numpy() for f in render_sequence("indoor", 3, seed, k, trajectory="handheld")]

    a, b, c = frames(5), frames(5), frames(6)
    for fa, fb in zip(a, b, strict=True):
        assert fa.rgb.tobytes() == fb.rgb.tobytes()
        assert fa.depth.tobytes() == fb.depth.tobytes()
        assert fa.instances.tobytes() == fb.instances.tobytes()
        assert np.array_equal(fa.pose, fb.pose)
    assert a[0].rgb.tobytes() != c[0].rgb.tobytes()
    assert a[0].depth.tobytes() != c[0].depth.tobytes()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_fill_every_pixel_with_varied_texture_and_shading(family):
    k = Intrinsics.from_fov(80, 60)
    for frame in render_sequence(family, 2, 11, k):
        f = frame.numpy()
        assert f.rgb.shape == (60, 80, 3) and f.rgb.dtype == np.uint8
        assert f.depth.dtype == np.float32 and f.instances.dtype == np.uint16
        assert np.isfinite(f.depth).all() and (f.depth > 0).all()
        assert f.rgb.std() > 8.0
        assert len(np.unique(f.rgb.reshape(-1, 3), axis=0)) > 100
        # Neighbouring pixels differ (texture), not just large regions (flat colour).
        assert np.abs(np.diff(f.rgb.astype(int), axis=1)).mean() > 1.0


def test_lambert_shading_darkens_towards_the_terminator():
    builder = SceneBuilder()
    builder.add_sphere((0.0, 0.0, 3.0), 1.0, Material("checker", (0.8, 0.8, 0.8), (0.8, 0.8, 0.8)))
    from depth_kd.render.scene import Lights

    builder.lights = Lights(sun_direction=(0.0, 0.0, -1.0), sun_intensity=0.8, ambient=0.1)  # sun at camera
    f = Renderer(builder.build(), K).render(np.eye(4)).numpy()
    centre = f.rgb[int(K.cy), int(K.cx)].astype(int)
    rim = f.rgb[int(K.cy), int(K.cx + 0.95 * K.fx / math.sqrt(8))].astype(int)  # near the silhouette
    assert (centre > rim + 30).all()


@pytest.mark.parametrize("kind", ["drive", "handheld"])
@pytest.mark.parametrize("family", ["indoor", "outdoor"])
def test_trajectories_are_smooth_and_stay_in_free_space(family, kind):
    rate = 10.0
    world = make_world(family, 150, 3, kind, rate)
    motion = FAMILIES[family].motion
    layout = world.scene.layout
    speed = motion.walk_speed if kind == "handheld" else motion.drive_speed
    poses = world.poses
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() <= speed / rate + 0.03
    assert steps.sum() > 0.2 * speed * len(steps) / rate  # it does move
    rel = np.einsum("nji,njk->nik", poses[:-1, :3, :3], poses[1:, :3, :3])
    angles = np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert angles.max() <= motion.max_yaw_rate / rate + 0.05
    for pose in poses:
        assert layout.clearance(pose[0, 3], pose[1, 3]) >= motion.clearance - 0.03
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-9)
    heights = poses[:, 2, 3]
    if kind == "drive":
        assert np.allclose(heights, motion.drive_height)
    else:
        assert np.abs(heights - motion.handheld_height).max() < 0.05 and heights.std() > 1e-3


def test_pose_to_translation_quaternion_round_trip():
    pose = camera_pose(np.array([1.0, -2.0, 0.5]), roll=0.3, pitch=-0.2, yaw=2.5)
    xyz, (x, y, z, w) = pose_to_translation_quaternion(pose)
    assert np.allclose(xyz, [1.0, -2.0, 0.5]) and w >= 0
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    assert np.allclose(rot, pose[:3, :3], atol=1e-12)
    # Optical axes: z forward along the body heading, y down.
    level = camera_pose(np.zeros(3), yaw=math.pi / 2)
    assert np.allclose(level[:3, 2], [0, 1, 0]) and np.allclose(level[:3, 1], [0, 0, -1])


def test_intrinsics_from_fov_and_camera_info_matrices():
    k = Intrinsics.from_fov(640, 480, 90.0)
    assert k.fx == pytest.approx(320.0) and k.fy == k.fx and (k.cx, k.cy) == (319.5, 239.5)
    assert k.k == [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    assert k.p[:3] == [k.fx, 0.0, k.cx] and k.p[5:7] == [k.fy, k.cy]
    rays = k.ray_directions()
    assert rays.shape == (640 * 480, 3) and torch.all(rays[:, 2] == 1.0)


def test_option_names_the_cli_lists_agree_with_the_renderer():
    from depth_kd.render import names
    from depth_kd.render.record import STORAGES

    assert sorted(names.FAMILY_NAMES) == sorted(FAMILIES)
    assert sorted(names.STORAGE_NAMES) == sorted(STORAGES)


def test_the_cli_starts_without_torch():
    """depth-kd infer (ONNX model) and every --help must not wait seconds for torch to load."""
    import subprocess
    import sys

    code = ("import sys; from depth_kd.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
