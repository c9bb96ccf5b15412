"""camera_info: intrinsics as depth_image_proc reads them, and image_proc-style rescaling."""

import copy

import pytest
from sensor_msgs.msg import CameraInfo, RegionOfInterest

from depth_kd_ros.camera_info import (
    IntrinsicsError,
    camera_info_for_image,
    intrinsics_from_camera_info,
    scale_camera_info,
)


def make_info() -> CameraInfo:
    """A 640 x 480 camera whose P differs from K, so tests can tell which one was used."""
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", binning_x=1, binning_y=1)
    info.header.frame_id = "camera_optical"
    info.header.stamp.sec = 42
    info.d = [0.1, -0.2, 0.001, 0.002, 0.0]
    info.k = [500.0, 0.0, 320.0, 0.0, 400.0, 240.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [510.0, 0.0, 330.0, -25.5, 0.0, 410.0, 250.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.roi = RegionOfInterest(x_offset=10, y_offset=20, width=600, height=440, do_rectify=True)
    return info


# --- intrinsics -------------------------------------------------------------------------------------

def test_intrinsics_come_from_p():
    assert intrinsics_from_camera_info(make_info()) == (510.0, 410.0, 330.0, 250.0)


def test_intrinsics_fall_back_to_k_when_p_is_zero():
    info = make_info()
    info.p = [0.0] * 12
    fx, fy, cx, cy = intrinsics_from_camera_info(info)
    assert (fx, fy, cx, cy) == (500.0, 400.0, 320.0, 240.0)
    assert all(type(v) is float for v in (fx, fy, cx, cy))


@pytest.mark.parametrize(
    "field, index, value, fragment",
    [
        ("p", 0, 0.0, "fx = P[0] = 0.0"),
        ("p", 5, -410.0, "fy = P[5] = -410.0"),
        ("p", 2, float("nan"), "cx = P[2] = nan"),
        ("p", 6, float("inf"), "cy = P[6] = inf"),
    ],
)
def test_bad_p_raises_naming_the_value(field, index, value, fragment):
    info = make_info()
    getattr(info, field)[index] = value
    with pytest.raises(IntrinsicsError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        intrinsics_from_camera_info(info)


def test_all_zero_info_raises_on_k():
    with pytest.raises(IntrinsicsError, match=r"fx = K\[0\] = 0.0 must be finite and > 0"):
        intrinsics_from_camera_info(CameraInfo())


def test_negative_focal_in_k_fallback_raises():
    info = make_info()
    info.p = [0.0] * 12
    info.k[4] = -1.0
    with pytest.raises(IntrinsicsError, match=r"fy = K\[4\] = -1.0.*camera_optical"):
        intrinsics_from_camera_info(info)
    assert issubclass(IntrinsicsError, ValueError)


# --- scaling ----------------------------------------------------------------------------------------

def test_scale_by_half_width_and_three_quarters_height():
    info = make_info()
    before = copy.deepcopy(info)
    out = scale_camera_info(info, 320, 360)  # sx = 0.5, sy = 0.75

    assert info == before  # input untouched
    assert (out.width, out.height) == (320, 360)
    assert list(out.k) == [250.0, 0.0, 160.0, 0.0, 300.0, 180.0, 0.0, 0.0, 1.0]
    assert list(out.p) == [255.0, 0.0, 165.0, -12.75, 0.0, 307.5, 187.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    roi = out.roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height, roi.do_rectify) == (5, 15, 300, 330, True)
    # copied unchanged
    assert out.header == info.header and out.header.frame_id == "camera_optical"
    assert list(out.d) == list(info.d) and list(out.r) == list(info.r)
    assert out.distortion_model == "plumb_bob" and (out.binning_x, out.binning_y) == (1, 1)
    # and the new message owns its arrays
    out.k[0] = 1.0
    out.header.frame_id = "changed"
    assert info == before


def test_scaled_intrinsics_feed_back_into_intrinsics_from_camera_info():
    out = scale_camera_info(make_info(), 1280, 960)
    assert intrinsics_from_camera_info(out) == (1020.0, 820.0, 660.0, 500.0)


def test_roi_scales_by_its_corners_and_stays_inside():
    info = make_info()
    info.roi = RegionOfInterest(x_offset=11, y_offset=1, width=629, height=479)
    out = scale_camera_info(info, 320, 240)
    # x: 11 * 0.5 = 5.5 -> 6, (11 + 629) * 0.5 = 320 -> width 314; y: 0.5 -> 1, 240 -> height 239
    assert (out.roi.x_offset, out.roi.width, out.roi.y_offset, out.roi.height) == (6, 314, 1, 239)
    assert out.roi.x_offset + out.roi.width <= out.width


def test_full_image_roi_of_zeros_stays_zero():
    info = make_info()
    info.roi = RegionOfInterest()
    out = scale_camera_info(info, 320, 240)
    assert out.roi == RegionOfInterest()


def test_same_size_returns_an_equal_copy():
    info = make_info()
    out = scale_camera_info(info, 640, 480)
    assert out == info and out is not info
    out.p[0] = 1.0
    assert info.p[0] == 510.0


def test_zero_size_info_is_taken_as_matching():
    info = make_info()
    info.width = info.height = 0
    out = scale_camera_info(info, 320, 240)
    assert (out.width, out.height) == (320, 240)
    assert list(out.k) == list(info.k) and list(out.p) == list(info.p) and out.roi == info.roi
    assert (info.width, info.height) == (0, 0)


def test_bad_target_size_raises():
    with pytest.raises(ValueError, match="width=0, height=240"):
        scale_camera_info(make_info(), 0, 240)


# --- a CameraInfo for this image, or a bad input --------------------------------------------------------

def test_info_for_a_binned_image_is_scaled():
    info, (fx, fy, cx, cy) = camera_info_for_image(make_info(), 320, 240)
    assert (info.width, info.height) == (320, 240)
    assert (fx, fy, cx, cy) == (255.0, 205.0, 165.0, 125.0)


@pytest.mark.parametrize("size", [(1, 1), (65535, 1), (640, 640), (480, 640)])
def test_info_of_another_aspect_ratio_is_refused(size):
    info = make_info()
    info.width, info.height = size
    with pytest.raises(IntrinsicsError, match=rf"CameraInfo is {size[0]}x{size[1]} but the image is 640x480"):
        camera_info_for_image(info, 640, 480)


@pytest.mark.parametrize("index, value, fragment", [
    (0, 1e-300, "fx = 1e-300 px gives a 180 degree field of view"),
    (5, 1e9, "fy = 1e\\+09 px gives a 2.75e-05 degree field of view"),
    (2, 5000.0, "cx = 5000 px lies far outside the 640x480 image"),
    (6, -1000.0, "cy = -1000 px lies far outside"),
])
def test_absurd_intrinsics_are_refused(index, value, fragment):
    info = make_info()
    info.p[index] = value
    with pytest.raises(IntrinsicsError, match=fragment):
        camera_info_for_image(info, 640, 480)


def test_wide_and_narrow_real_lenses_pass():
    info = make_info()
    info.width = info.height = 0  # drivers that leave the size out
    for fx in (180.0, 6000.0):  # 121 and 6 degrees across 640 pixels
        info.p[0] = info.p[5] = fx
        assert camera_info_for_image(info, 640, 480)[1][0] == fx
