"""pointcloud: depth_image_proc geometry on known planes, decimation, PCL rgb packing, invalid depth."""

import numpy as np
import pytest

from depth_kd_ros.pointcloud import cloud_fields, depth_to_cloud, point_step

# A small camera: 4 rows x 6 columns, principal point not at a pixel centre on purpose.
H, W = 4, 6
FX, FY, CX, CY = 2.0, 4.0, 2.5, 1.5


def test_field_layout_matches_depth_image_proc():
    assert point_step(False) == 16 and point_step(True) == 32
    assert cloud_fields(False) == [("x", 0), ("y", 4), ("z", 8)]
    assert cloud_fields(True) == [("x", 0), ("y", 4), ("z", 8), ("rgb", 16)]


def test_fronto_parallel_plane():
    cloud = depth_to_cloud(np.full((H, W), 2.0, np.float32), FX, FY, CX, CY)
    assert cloud.shape == (H, W, 4) and cloud.dtype == np.float32 and cloud.flags.c_contiguous
    # (u, v) = (5, 0): X = (5 - 2.5) * 2 / 2 = 2.5, Y = (0 - 1.5) * 2 / 4 = -0.75
    np.testing.assert_array_equal(cloud[0, 5], [2.5, -0.75, 2.0, 0.0])
    # (u, v) = (0, 3): X = -2.5 * 2 / 2 = -2.5, Y = 1.5 * 2 / 4 = 0.75
    np.testing.assert_array_equal(cloud[3, 0], [-2.5, 0.75, 2.0, 0.0])
    np.testing.assert_array_equal(cloud[..., 2], 2.0)


def test_tilted_plane_x_plus_2z_equals_6():
    # Plane X + 2Z = 6 seen along ray (r, *, 1) with r = (u - cx) / fx has depth Z = 6 / (r + 2).
    fx, cx = 2.0, 2.0
    r = (np.arange(W) - cx) / fx
    depth = np.tile(6.0 / (r + 2.0), (H, 1)).astype(np.float32)
    cloud = depth_to_cloud(depth, fx, FY, cx, CY)
    # u = 4: r = 1 -> Z = 2, X = 2; u = 0: r = -1 -> Z = 6, X = -6; row v = 3: Y = (3 - 1.5) Z / 4
    np.testing.assert_array_equal(cloud[3, 4, :3], [2.0, 0.75, 2.0])
    np.testing.assert_array_equal(cloud[0, 0, :3], [-6.0, -2.25, 6.0])
    np.testing.assert_allclose(cloud[..., 0] + 2 * cloud[..., 2], 6.0, rtol=1e-6)


def test_invalid_depth_gives_nan_xyz_and_zero_padding():
    depth = np.full((H, W), 1.0, np.float32)
    depth[0, 0], depth[1, 2], depth[2, 3], depth[3, 4] = np.nan, np.inf, 0.0, -3.0
    cloud = depth_to_cloud(depth, FX, FY, CX, CY)
    for v, u in [(0, 0), (1, 2), (2, 3), (3, 4)]:
        assert np.isnan(cloud[v, u, :3]).all(), (v, u)
    assert np.isfinite(cloud[..., :3]).sum() == 3 * (H * W - 4)
    np.testing.assert_array_equal(cloud[..., 3], 0.0)


def test_decimation_keeps_original_pixel_coordinates():
    depth = np.arange(1, 5 * 7 + 1, dtype=np.float32).reshape(5, 7)  # Z = 1 + v * 7 + u
    cloud = depth_to_cloud(depth, FX, FY, CX, CY, decimation=2)
    assert cloud.shape == (3, 4, 4)  # rows 0, 2, 4 and columns 0, 2, 4, 6
    # cloud[1, 3] is pixel (u, v) = (6, 2): Z = 1 + 14 + 6 = 21, X = 3.5 * 21 / 2, Y = 0.5 * 21 / 4
    np.testing.assert_allclose(cloud[1, 3], [36.75, 2.625, 21.0, 0.0], rtol=1e-7)


def test_rgb_is_packed_as_in_pcl():
    depth = np.full((H, W), 1.0, np.float32)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0, 0] = (255, 128, 1)
    rgb[1, 1] = (0, 0, 1)  # tiny uint32 -> a denormal float32; its bits must survive
    rgb[3, 5] = (255, 255, 255)
    cloud = depth_to_cloud(depth, FX, FY, CX, CY, rgb=rgb)
    assert cloud.shape == (H, W, 8)
    packed = cloud[..., 4].copy().view(np.uint32)
    assert packed[0, 0] == (255 << 16) | (128 << 8) | 1
    assert packed[1, 1] == 1
    assert packed[3, 5] == 0xFFFFFF
    unpacked = np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=2)
    np.testing.assert_array_equal(unpacked, rgb)
    np.testing.assert_array_equal(cloud[..., 3], 0.0)
    np.testing.assert_array_equal(cloud[..., 5:], 0.0)
    # On the wire (little-endian) the rgb field at byte 16 of the point holds b, g, r, 0.
    assert cloud.tobytes()[16:20] == bytes([1, 128, 255, 0])


def test_rgb_follows_decimation():
    depth = np.ones((5, 7), np.float32)
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[4, 6] = (10, 20, 30)
    cloud = depth_to_cloud(depth, FX, FY, CX, CY, rgb=rgb, decimation=2)
    assert cloud[2, 3, 4:5].view(np.uint32)[0] == (10 << 16) | (20 << 8) | 30


@pytest.mark.parametrize("with_rgb", [False, True])
def test_buffer_size_is_h_w_point_step(with_rgb):
    depth = np.ones((H, W), np.float32)
    rgb = np.zeros((H, W, 3), np.uint8) if with_rgb else None
    data = depth_to_cloud(depth, FX, FY, CX, CY, rgb=rgb).tobytes()
    assert len(data) == H * W * point_step(with_rgb)
    # The point at (u, v) = (1, 2) starts at v * row_step + u * point_step; its z sits at +8.
    start = 2 * W * point_step(with_rgb) + 1 * point_step(with_rgb)
    assert np.frombuffer(data, np.float32, count=3, offset=start)[2] == 1.0


def test_cached_rays_follow_new_intrinsics_and_shapes():
    depth = np.full((H, W), 2.0, np.float32)
    first = depth_to_cloud(depth, FX, FY, CX, CY)
    second = depth_to_cloud(depth, 2 * FX, FY, CX, CY)
    np.testing.assert_array_equal(second[..., 0], first[..., 0] / 2)
    bigger = depth_to_cloud(np.full((H + 2, W + 2), 2.0, np.float32), FX, FY, CX, CY)
    np.testing.assert_array_equal(bigger[:H, :W], first)


@pytest.mark.parametrize(
    "intrinsics, fragment",
    [
        ((0.0, FY, CX, CY), "fx=0.0"),
        ((FX, -1.0, CX, CY), "fy=-1.0"),
        ((float("nan"), FY, CX, CY), "fx=nan"),
        ((FX, FY, float("inf"), CY), "cx=inf"),
        ((FX, FY, CX, float("nan")), "cy=nan"),
    ],
)
def test_bad_intrinsics_raise(intrinsics, fragment):
    with pytest.raises(ValueError, match=fragment):
        depth_to_cloud(np.ones((H, W), np.float32), *intrinsics)


def test_bad_arguments_raise():
    depth = np.ones((H, W), np.float32)
    with pytest.raises(ValueError, match="decimation"):
        depth_to_cloud(depth, FX, FY, CX, CY, decimation=0)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        depth_to_cloud(depth, FX, FY, CX, CY, rgb=np.zeros((H, W + 1, 3), np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        depth_to_cloud(depth[..., None], FX, FY, CX, CY)
