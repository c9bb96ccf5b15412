"""Metric scale at run time: a robust per-frame scale from a sparse metric sensor or from the floor, and a
temporal filter that smooths it and rejects outliers.

A monocular network gets the shape of a scene right and its scale wrong on a camera or scene it was not
trained for. Given the predicted depth ``D`` and some metric evidence, each function here returns a
:class:`ScaleEstimate` ``s`` such that ``s * D`` is metric, or None when the frame offers too little support:

* :func:`scale_from_depth`: a registered metric depth image (ToF, stereo, lidar projected into the image),
  any resolution, sparse allowed: the median of metric / predicted over pixels valid in both.
* :func:`scale_from_ground`: the camera's height above a flat floor and the floor's up direction in the
  optical frame (from the camera's pitch): a plane fitted by RANSAC to the lower image's points, whose normal
  must agree with ``up``; scale = height / the plane's distance from the camera.

:class:`ScaleAnchor` puts one source and the filter together, as the node and ``depth-kd infer`` use them.
Pure numpy, vectorised; the node, ``depth-kd infer`` and the offline measurement (docs/scale_anchoring.md) call
the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ScaleAnchor", "ScaleEstimate", "ScaleFilter", "scale_from_depth", "scale_from_ground", "up_from_pitch"]

MIN_SUPPORT = 20  # pixels or floor points a scale needs


@dataclass(frozen=True)
class ScaleEstimate:
    """``scale``: multiply predicted depth by it; ``support``: pixels (or floor points) behind it;
    ``residual``: median relative disagreement among them (0.05 = 5%)."""

    scale: float
    support: int
    residual: float


def scale_from_depth(predicted: np.ndarray, metric: np.ndarray, min_support: int = MIN_SUPPORT
                     ) -> ScaleEstimate | None:
    """Median of ``metric / predicted`` over pixels valid in both; ``metric`` (NaN or <= 0 = no measurement)
    may have any resolution covering the same field of view: each of its pixels reads the prediction at the
    same place (nearest pixel)."""
    ph, pw = predicted.shape
    mh, mw = metric.shape
    rows = np.minimum(((np.arange(mh) + 0.5) * ph / mh).astype(np.int64), ph - 1)
    cols = np.minimum(((np.arange(mw) + 0.5) * pw / mw).astype(np.int64), pw - 1)
    pred = predicted[rows[:, None], cols[None, :]]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(pred) & np.isfinite(metric) & (pred > 0) & (metric > 0)
    if int(valid.sum()) < min_support:
        return None
    log_ratio = np.log(metric[valid].astype(np.float64)) - np.log(pred[valid].astype(np.float64))
    centre = float(np.median(log_ratio))
    residual = float(np.median(np.abs(log_ratio - centre)))
    return ScaleEstimate(scale=math.exp(centre), support=int(valid.sum()), residual=math.expm1(residual))


def up_from_pitch(pitch: float, roll: float = 0.0) -> np.ndarray:
    """The world's up direction in the camera's optical frame (x right, y down, z forward) for a camera pitched
    down by ``pitch`` and rolled by ``roll`` (radians)."""
    cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    return np.array([sr * cp, -cr * cp, -sp])


def scale_from_ground(
    depth: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    camera_height: float,
    up: np.ndarray,
    max_tilt_deg: float = 15.0,
    inlier_tolerance: float = 0.03,
    floor_share: float = 0.25,
    points: int = 3000,
    hypotheses: int = 256,
    seed: int = 0,
    min_support: int = MIN_SUPPORT,
) -> ScaleEstimate | None:
    """Scale from the floor: RANSAC over level planes (normal = ``up``, known from the camera's pitch) through
    one of the lower image's points each; inliers lie within ``inlier_tolerance`` x the plane's distance
    (scale-free, as the prediction's scale is what is unknown). Of the planes with at least ``floor_share`` of
    the best one's inliers, the lowest is the floor; its distance is the median over its inliers, and their own
    least-squares plane must face up within ``max_tilt_deg`` (a floor, not a level band of clutter).
    Deterministic for a given ``seed``."""
    fx, fy, cx, cy = intrinsics
    height, width = depth.shape
    top = max(int(cy), height // 2)  # the floor is below the horizon; the lower half at least
    v, u = np.mgrid[top:height, 0:width]
    z = depth[top:, :]
    valid = np.isfinite(z) & (z > 0)
    if int(valid.sum()) < max(min_support, 3):
        return None
    rng = np.random.default_rng(seed)
    index = np.flatnonzero(valid)
    if index.size > points:
        index = rng.choice(index, points, replace=False)
    zs = z.reshape(-1)[index].astype(np.float64)
    xyz = np.stack([(u.reshape(-1)[index] - cx) * zs / fx, (v.reshape(-1)[index] - cy) * zs / fy, zs], axis=1)

    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    below = -(xyz @ up)  # each point's distance below the camera along up; floor points share one value
    hypotheses_m = below[rng.integers(0, len(below), hypotheses)]
    hypotheses_m = hypotheses_m[hypotheses_m > 0]
    if not hypotheses_m.size:
        return None
    inliers = np.abs(below[:, None] - hypotheses_m[None, :]) < inlier_tolerance * hypotheses_m[None, :]
    # Table tops and beds are level too: of the well-supported levels, the floor is the lowest; then its best fit.
    counts = inliers.sum(axis=0)
    supported = counts >= max(min_support, floor_share * counts.max())
    lowest = hypotheses_m[supported].max()
    floor = supported & (hypotheses_m >= lowest * (1 - 2 * inlier_tolerance))
    chosen = xyz[inliers[:, int(np.argmax(np.where(floor, counts, -1)))]]
    plane_distance = float(np.median(-(chosen @ up)))
    centroid = chosen.mean(axis=0)  # is it a plane facing up, not a level band of clutter?
    normal = np.linalg.svd(chosen - centroid, full_matrices=False)[2][-1]
    if len(chosen) < min_support or abs(normal @ up) < math.cos(math.radians(max_tilt_deg)):
        return None
    residual = float(np.median(np.abs(chosen @ up + plane_distance)) / plane_distance)
    return ScaleEstimate(scale=camera_height / plane_distance, support=len(chosen), residual=residual)


class ScaleFilter:
    """Smooths per-frame scales in log space and rejects outliers.

    ``update(estimate)`` returns the scale to use now: the first estimate is taken as is; later ones that differ
    from the current scale by more than ``outlier_ratio`` are rejected (counted) unless ``reset_after`` of them
    in a row agree that the scale really changed; accepted ones move the scale by ``smoothing`` of the way in
    log space. A frame without an estimate (None) keeps the last good scale. Before any estimate: 1.0.
    """

    def __init__(self, smoothing: float = 0.3, outlier_ratio: float = 1.25, reset_after: int = 5) -> None:
        self.smoothing, self.outlier_ratio, self.reset_after = smoothing, outlier_ratio, reset_after
        self.scale: float | None = None
        self.rejected = 0  # in total
        self._rejected_in_a_row: list[float] = []

    def update(self, estimate: ScaleEstimate | None) -> float:
        if estimate is None or not (math.isfinite(estimate.scale) and estimate.scale > 0):
            return self.current
        if self.scale is None:
            self.scale = estimate.scale
            return self.scale
        step = math.log(estimate.scale) - math.log(self.scale)
        if abs(step) > math.log(self.outlier_ratio):
            self.rejected += 1
            self._rejected_in_a_row.append(estimate.scale)
            if len(self._rejected_in_a_row) < self.reset_after:
                return self.scale
            self.scale = float(np.median(self._rejected_in_a_row))  # the scene really changed
        else:
            self.scale = math.exp(math.log(self.scale) + self.smoothing * step)
        self._rejected_in_a_row.clear()
        return self.scale

    @property
    def current(self) -> float:
        return 1.0 if self.scale is None else self.scale


class ScaleAnchor:
    """One configured source (``"depth"`` or ``"ground"``) and its :class:`ScaleFilter`: ``update`` gives each
    frame's scale, ``diagnostics`` what /diagnostics and ``depth-kd infer``'s summary report."""

    def __init__(self, source: str, camera_height: float = 0.0, camera_pitch: float = 0.0) -> None:
        if source not in ("depth", "ground"):
            raise ValueError(f"scale source must be depth or ground, got {source!r}")
        self.source, self.camera_height, self.up = source, camera_height, up_from_pitch(camera_pitch)
        self.filter = ScaleFilter()
        self.last: ScaleEstimate | None = None  # the last frame's estimate that had support
        self.frames_without_support = 0

    def update(self, depth: np.ndarray, intrinsics: tuple[float, float, float, float] | None,
               metric: np.ndarray | None = None) -> float:
        """The smoothed scale for this frame's predicted ``depth``. ``metric``: the matched metric depth (source
        depth; None when none matched); ``intrinsics`` (source ground; None without usable CameraInfo)."""
        if self.source == "depth":
            estimate = None if metric is None else scale_from_depth(depth, metric)
        else:
            estimate = None if not intrinsics else scale_from_ground(depth, intrinsics, self.camera_height, self.up)
        if estimate is None:
            self.frames_without_support += 1
        else:
            self.last = estimate
        return self.filter.update(estimate)

    def diagnostics(self) -> dict[str, str]:
        last = self.last
        return {"scale source": self.source, "scale": f"{self.filter.current:.4f}",
                "scale support (last)": str(last.support if last else 0),
                "scale residual (last)": f"{last.residual:.4f}" if last else "",
                "scale: frames without support": str(self.frames_without_support),
                "scale: outliers rejected": str(self.filter.rejected)}
