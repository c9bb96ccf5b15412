"""The node's outputs serialised with rosbags read back in rclpy as exactly the message rclpy would have sent
(same length as rclpy's own serialisation; only alignment padding, which rclpy leaves uninitialised, may differ)."""
import struct

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

from depth_kd_ros.pointcloud import cloud_fields, depth_to_cloud
from depth_kd_ros.serialized import camera_info_cdr, cloud_cdr, depth_image_cdr, image_cdr


def same_message(raw: bytes, expected) -> None:
    assert isinstance(raw, bytes) and len(raw) == len(serialize_message(expected))
    back = deserialize_message(raw, type(expected))
    assert back == expected  # rclpy compares every field; NaN payload bytes compare as bytes


@pytest.fixture
def header() -> Header:
    header = Header(frame_id="cam_left_optical")  # odd length: the fields after it need alignment padding
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
    return header


def test_depth_image_matches_rclpy(header):
    depth = np.array([[1.0, 2.5, np.nan], [0.25, 4.0, 8.0]], dtype=np.float32)
    expected = Image(header=header, height=2, width=3, encoding="32FC1", is_bigendian=0, step=12,
                     data=depth.tobytes())
    raw = depth_image_cdr(header, depth)
    same_message(raw, expected)
    assert bytes(deserialize_message(raw, Image).data)[:12] == struct.pack("<3f", 1.0, 2.5, float("nan"))


def test_depth_image_converts_float64_and_rejects_3d(header):
    back = deserialize_message(depth_image_cdr(header, np.array([[0.5]], dtype=np.float64)), Image)
    assert (back.encoding, back.step, bytes(back.data)) == ("32FC1", 4, struct.pack("<f", 0.5))
    with pytest.raises(ValueError, match="2-D"):
        depth_image_cdr(header, np.zeros((2, 2, 1), np.float32))


def test_bgr_image_matches_rclpy(header):
    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = Image(header=header, height=5, width=7, encoding="bgr8", is_bigendian=0, step=21, data=bgr.tobytes())
    same_message(image_cdr(header, "bgr8", bgr), expected)


@pytest.mark.parametrize("with_rgb", [False, True])
def test_cloud_matches_rclpy(header, with_rgb):
    depth = np.array([[1.0, np.nan, 2.0], [0.5, 3.0, 4.0]], dtype=np.float32)
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    points = depth_to_cloud(depth, 2.0, 2.0, 1.0, 0.5, rgb=rgb if with_rgb else None)
    step = points.shape[2] * 4
    expected = PointCloud2(
        header=header, height=2, width=3,
        fields=[PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1) for n, o in cloud_fields(with_rgb)],
        is_bigendian=False, point_step=step, row_step=3 * step, data=points.tobytes(), is_dense=False)
    same_message(cloud_cdr(header, points, cloud_fields(with_rgb)), expected)


def test_camera_info_matches_rclpy(header):
    info = CameraInfo(header=header, height=480, width=640, distortion_model="plumb_bob",
                      d=[0.1, -0.2, 0.001, 0.002, 0.0], k=[525.0, 0, 319.5, 0, 526.0, 239.5, 0, 0, 1],
                      r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1], p=[525.0, 0, 319.5, 0, 0, 526.0, 239.5, 0, 0, 0, 1, 0],
                      binning_x=2, binning_y=1,
                      roi=RegionOfInterest(x_offset=3, y_offset=4, height=100, width=200, do_rectify=True))
    raw = camera_info_cdr(info)
    same_message(raw, info)
    assert raw == camera_info_cdr(info)  # padding is zeroed: the same message, the same bytes
