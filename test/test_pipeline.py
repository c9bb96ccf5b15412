"""pipeline.FramePath, the per-frame path depth_node and `depth-kd infer` share, on a real (tiny) model without
DDS: what a frame yields, what each bad input costs it, and parameters changed between frames."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message
from ros_harness import make_camera_info
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.params import NodeParams
from depth_kd_ros.pipeline import OUTPUTS, FramePath
from depth_kd_ros.serialized import image_cdr

WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def estimator(tiny_checkpoint) -> DepthEstimator:
    return DepthEstimator(tiny_checkpoint, device="cpu", backend="torch")


@pytest.fixture
def path(estimator):
    reports = []
    return FramePath(estimator, NodeParams(), lambda kind, message: reports.append((kind, message))), reports


def image_bytes(seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return image_cdr(Header(stamp=Time(sec=5, nanosec=7), frame_id="cam"), "rgb8", rgb)


def test_a_good_frame_gives_every_output_stamped_as_its_image(path):
    frames, reports = path
    frame = frames.estimate(image_bytes(), False, make_camera_info(WIDTH, HEIGHT, 50.0), "on test")
    assert frame is not None and not reports
    assert frame.depth.shape == (HEIGHT, WIDTH) and frame.scale == 1.0
    outputs = frames.outputs(frame)
    assert set(outputs) == set(OUTPUTS)
    depth = deserialize_message(outputs["image"], Image)
    info = deserialize_message(outputs["camera_info"], CameraInfo)
    points = deserialize_message(outputs["points"], PointCloud2)
    for msg in (depth, info, points):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (5, 7, "cam")
    assert (depth.width, depth.height, depth.encoding) == (WIDTH, HEIGHT, "32FC1")
    assert (points.width, points.height) == (WIDTH, HEIGHT)
    assert set(frames.outputs(frame, {"image"})) == {"image"}  # only what someone wants is encoded


def test_bad_bytes_skip_the_frame_and_are_reported(path):
    frames, reports = path
    assert frames.estimate(b"\x00\x01\x00\x00garbage", False, None, "on test") is None
    assert [kind for kind, _ in reports] == ["image"] and "bad image on test" in reports[0][1]


def test_an_unusable_camera_info_costs_points_and_camera_info_not_depth(path):
    frames, reports = path
    frame = frames.estimate(image_bytes(), False, make_camera_info(1, 1, 50.0), "on test")  # another aspect ratio
    assert frame is not None and frame.camera_info is None
    assert [kind for kind, _ in reports] == ["camera_info"]
    assert set(frames.outputs(frame)) == {"image", "colored"}


def test_limits_changed_between_frames_apply_to_the_next(path):
    frames, _ = path
    info = make_camera_info(WIDTH, HEIGHT, 50.0)
    depth = frames.estimate(image_bytes(1), False, info, "on test").depth
    assert np.isfinite(depth).all()
    frames.params.max_depth = float(np.median(depth))  # the node's parameters change in place
    limited = frames.estimate(image_bytes(1), False, info, "on test").depth
    assert np.isnan(limited).any() and np.nanmax(limited) <= frames.params.max_depth
    np.testing.assert_array_equal(limited[np.isfinite(limited)], depth[np.isfinite(limited)])
