"""Scale and shift that make a relative (affine-invariant inverse depth) teacher metric.

`fit_scale_shift` solves min over (scale, shift) of sum (scale * rel + shift - 1 / depth)^2 in inverse-depth
space against valid metric samples (dense ground truth, or a sparse depth image / points: anything that is
NaN or <= 0 is skipped). It is trimmed least squares: after each fit the worst `trim` fraction of residuals
is dropped and the fit repeated, so a few wrong depth samples do not pull it. `fit_global_scale_shift` does
the same over many frames. The result is a small record of plain floats for the student's provenance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from .base import Teacher, digest

logger = logging.getLogger(__name__)

METHOD = "trimmed_least_squares_inverse_depth"


@dataclass(frozen=True)
class ScaleShift:
    """metric depth = 1 / clamp(scale * rel + shift, 1 / max_depth)."""

    scale: float
    shift: float
    method: str = METHOD
    trim: float = 0.0
    n_samples: int = 0  # valid samples offered
    n_inliers: int = 0  # samples kept by the last fit
    rms_inverse: float = 0.0  # RMS inverse-depth residual (1/m) of the inliers

    def apply(self, rel: torch.Tensor, max_depth: float = 100.0) -> torch.Tensor:
        """Relative inverse depth -> metric depth (metres), at most `max_depth`."""
        return 1.0 / (self.scale * rel + self.shift).clamp(min=1.0 / max_depth)

    def to_record(self) -> dict:
        """Plain JSON-able dict (for ModelInfo.provenance)."""
        return asdict(self)


def valid_samples(
    rel: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat float64 (rel, inverse depth) over pixels with finite rel and finite depth > 0 (and `mask`)."""
    if rel.shape != depth.shape:
        raise ValueError(f"rel {tuple(rel.shape)} and depth {tuple(depth.shape)} differ in shape")
    valid = torch.isfinite(rel) & torch.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask.to(torch.bool)
    return rel[valid].double(), 1.0 / depth[valid].double()


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Closed-form y ~ s x + t (centred, float64)."""
    mx, my = x.mean(), y.mean()
    dx = x - mx
    var = (dx * dx).sum()
    if var <= 1e-12 * max(1.0, float(mx.abs()) ** 2) * len(x):
        raise ValueError("relative values are (nearly) constant over the samples; scale is undetermined")
    s = (dx * (y - my)).sum() / var
    return float(s), float(my - s * mx)


def fit_inverse_affine(
    x: torch.Tensor, y: torch.Tensor, trim: float = 0.2, iterations: int = 5
) -> ScaleShift:
    """Trimmed least squares y ~ scale * x + shift on 1-D samples (x: relative, y: inverse depth)."""
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    n = len(x)
    if n < 3:
        raise ValueError(f"need at least 3 valid samples to fit a scale and shift, got {n}")
    keep = torch.ones(n, dtype=torch.bool, device=x.device)
    n_keep = max(3, math.ceil((1.0 - trim) * n))
    scale, shift = _least_squares(x, y)
    for _ in range(iterations if trim > 0 else 0):
        residual = (scale * x + shift - y).abs()
        threshold = residual.kthvalue(n_keep).values
        new_keep = residual <= threshold
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
        scale, shift = _least_squares(x[keep], y[keep])
    rms = float((scale * x[keep] + shift - y[keep]).pow(2).mean().sqrt())
    if scale <= 0:
        logger.warning("fitted scale %.4g <= 0: relative output does not grow with inverse depth here", scale)
    return ScaleShift(scale, shift, METHOD, trim, n, int(keep.sum()), rms)


def fit_scale_shift(
    rel: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor | None = None,
    trim: float = 0.2,
    iterations: int = 5,
) -> ScaleShift:
    """Per-frame fit: relative map against metric depth of the same shape (NaN / <= 0 = no sample)."""
    return fit_inverse_affine(*valid_samples(rel, depth, mask), trim=trim, iterations=iterations)


def fit_global_scale_shift(
    frames: Iterable[tuple[torch.Tensor, torch.Tensor]],
    trim: float = 0.2,
    iterations: int = 5,
    max_samples_per_frame: int = 20_000,
    seed: int = 0,
) -> ScaleShift:
    """One fit over many (rel, depth) frames; each frame contributes at most `max_samples_per_frame`
    randomly chosen valid samples (seeded), so memory stays bounded and dense frames do not dominate."""
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for rel, depth in frames:
        x, y = valid_samples(rel.cpu(), depth.cpu())
        if len(x) > max_samples_per_frame:
            pick = torch.randperm(len(x), generator=generator)[:max_samples_per_frame]
            x, y = x[pick], y[pick]
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("no frames to fit a scale and shift on")
    return fit_inverse_affine(torch.cat(xs), torch.cat(ys), trim=trim, iterations=iterations)


class ScaledTeacher(Teacher):
    """A relative_inverse teacher made metric with one fixed (global) `ScaleShift`."""

    output_kind = "metric"

    def __init__(self, teacher: Teacher, scale_shift: ScaleShift, max_depth: float = 100.0) -> None:
        if teacher.output_kind != "relative_inverse":
            raise ValueError(f"{teacher.name} is already {teacher.output_kind}; nothing to scale")
        self.teacher, self.scale_shift, self.max_depth = teacher, scale_shift, max_depth
        self.device = teacher.device
        self.network = teacher.network
        self.name = f"{teacher.name}+scale"
        params = repr((scale_shift.scale, scale_shift.shift, max_depth))
        self.cache_id = f"{teacher.cache_id}-{digest([], extra=params, length=8)}"

    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.scale_shift.apply(self.teacher.forward(rgb), self.max_depth)
