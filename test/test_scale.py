"""scale: per-frame metric scale from a sparse depth sensor or the floor, and its temporal filter."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time

from depth_kd_ros.pipeline import nearest_by_stamp
from depth_kd_ros.scale import (
    ScaleAnchor,
    ScaleEstimate,
    ScaleFilter,
    scale_from_depth,
    scale_from_ground,
    up_from_pitch,
)

INTRINSICS = (300.0, 300.0, 160.0, 120.0)  # 320 x 240


def floor_depth(height: float, pitch: float, size=(240, 320), intrinsics=INTRINSICS) -> np.ndarray:
    """Ground-truth depth of a flat floor ``height`` below a camera pitched down by ``pitch``; NaN above it."""
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:size[0], 0:size[1]].astype(np.float64)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
    along_up = rays @ up_from_pitch(pitch)
    with np.errstate(divide="ignore"):
        depth = np.where(along_up < -1e-6, -height / along_up, np.nan)
    return np.where(depth < 30, depth, np.nan).astype(np.float32)


def test_up_from_pitch_in_the_optical_frame():
    np.testing.assert_allclose(up_from_pitch(0.0), [0, -1, 0], atol=1e-12)  # level: up is -y
    np.testing.assert_allclose(up_from_pitch(np.pi / 2), [0, 0, -1], atol=1e-12)  # looking straight down


def test_scale_from_sparse_depth_of_another_resolution():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 8.0, (240, 320)).astype(np.float32)
    truth = np.repeat(np.repeat(truth[::4, ::4], 4, 0), 4, 1)  # piecewise constant, so resampling is exact
    predicted = truth / 1.5
    sensor = np.full((120, 160), np.nan, np.float32)  # half resolution, about 1% of pixels measured
    picks = rng.choice(sensor.size, 200, replace=False)
    sensor.reshape(-1)[picks] = truth[::2, ::2].reshape(-1)[picks] * rng.normal(1, 0.02, 200)
    estimate = scale_from_depth(predicted, sensor)
    assert estimate.scale == pytest.approx(1.5, rel=0.01) and estimate.support == 200
    assert 0.005 < estimate.residual < 0.03
    assert scale_from_depth(predicted, np.full((120, 160), np.nan, np.float32)) is None


@pytest.mark.parametrize("height, pitch", [(1.2, 0.2), (0.45, 0.0), (1.5, 0.5)])
def test_scale_from_ground_recovers_a_wrong_scale(height, pitch):
    truth = floor_depth(height, pitch)
    predicted = truth * 1.5  # a model 1.5x too far
    rng = np.random.default_rng(1)
    predicted *= rng.normal(1, 0.01, predicted.shape).astype(np.float32)
    predicted[200:, 100:180] = 0.4 * 1.5  # a box on the floor, nearer than the floor: not an inlier
    estimate = scale_from_ground(predicted, INTRINSICS, height, up_from_pitch(pitch))
    assert estimate.scale == pytest.approx(1 / 1.5, rel=0.03)
    assert estimate.support > 1000 and estimate.residual < 0.02


def test_scale_from_ground_needs_a_floor():
    wall = np.full((240, 320), 3.0, np.float32)  # a fronto-parallel wall: its normal is not up
    assert scale_from_ground(wall, INTRINSICS, 1.0, up_from_pitch(0.0)) is None
    assert scale_from_ground(np.full((240, 320), np.nan, np.float32), INTRINSICS, 1.0, up_from_pitch(0.0)) is None


def test_scale_from_ground_is_deterministic():
    depth = floor_depth(1.0, 0.3) * np.random.default_rng(2).normal(1, 0.03, (240, 320)).astype(np.float32)
    first = scale_from_ground(depth, INTRINSICS, 1.0, up_from_pitch(0.3))
    assert first == scale_from_ground(depth, INTRINSICS, 1.0, up_from_pitch(0.3))


def _est(scale: float) -> ScaleEstimate:
    return ScaleEstimate(scale=scale, support=100, residual=0.01)


def test_filter_keeps_the_last_scale_smooths_and_rejects_an_outlier():
    f = ScaleFilter(smoothing=0.5, outlier_ratio=1.25, reset_after=3)
    assert f.update(None) == 1.0  # nothing yet
    assert f.update(_est(2.0)) == 2.0
    assert f.update(None) == 2.0  # a frame without support keeps it
    assert f.update(_est(2.0 * 1.1)) == pytest.approx(2.0 * 1.1 ** 0.5)  # half way in log space
    before = f.scale
    assert f.update(_est(10.0)) == before and f.rejected == 1  # one wild frame changes nothing
    assert f.update(_est(before * 1.05)) == pytest.approx(before * 1.05 ** 0.5)


def test_filter_follows_a_real_change_after_a_few_frames():
    f = ScaleFilter(outlier_ratio=1.25, reset_after=3)
    f.update(_est(1.0))
    assert f.update(_est(3.0)) == 1.0 and f.update(_est(3.1)) == 1.0
    assert f.update(_est(2.9)) == pytest.approx(3.0)  # three in a row agree: the scene changed


def test_anchor_on_depth_counts_frames_without_support_and_keeps_the_scale():
    anchor = ScaleAnchor("depth")
    depth = np.full((48, 64), 2.0, np.float32)
    assert anchor.update(depth, None, metric=None) == 1.0  # nothing matched yet
    assert anchor.update(depth, None, metric=np.full((12, 16), 3.0, np.float32)) == pytest.approx(1.5)
    assert anchor.update(depth, None, metric=np.full((12, 16), np.nan, np.float32)) == pytest.approx(1.5)
    diagnostics = anchor.diagnostics()
    assert diagnostics["scale: frames without support"] == "2" and diagnostics["scale"] == "1.5000"
    assert int(diagnostics["scale support (last)"]) == 12 * 16


def test_anchor_on_the_ground_needs_intrinsics():
    anchor = ScaleAnchor("ground", camera_height=1.2, camera_pitch=0.3)
    truth = floor_depth(1.2, 0.3)
    assert anchor.update(truth / 2, None) == 1.0 and anchor.frames_without_support == 1
    assert anchor.update(truth / 2, INTRINSICS) == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError, match="depth or ground"):
        ScaleAnchor("none")


def test_metric_depth_is_matched_by_the_nearest_stamp_within_the_tolerance():
    candidates = [(10_000_000_000, b"a"), (10_050_000_000, b"b"), (10_200_000_000, b"c")]
    assert nearest_by_stamp(candidates, Time(sec=10, nanosec=60_000_000), 0.05) == b"b"
    assert nearest_by_stamp(candidates, Time(sec=10, nanosec=120_000_000), 0.05) is None  # 70 ms from either
    assert nearest_by_stamp([], Time(sec=10), 1.0) is None
