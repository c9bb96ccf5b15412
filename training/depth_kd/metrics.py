"""Standard monocular depth metrics (Eigen et al.), exact over a whole dataset.

Metrics are pooled over pixels: every valid pixel of every image weighs the same. `DepthMetricAccumulator`
keeps float64 sums of the per-pixel terms, so adding batches one by one (or merging DDP ranks) gives exactly
the metric of the whole set, not a mean of batch means.

Valid pixels: finite ground truth with min_depth < gt <= max_depth (and `mask`, if given); predictions are
clamped to [min_depth, max_depth] first, as the usual NYU / KITTI evaluation does, and a NaN prediction counts
as min_depth (a miss, so abstaining never improves a score). The defaults are the NYU-v2 range that Hu et al.
report on.
"""

from __future__ import annotations

import math

import torch

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "d1", "d2", "d3")
# Per-pixel sums kept by the accumulator, in the order of `state()`.
_SUMS = ("count", "abs_rel", "sq_rel", "sq_err", "sq_log_err", "abs_log10", "d1", "d2", "d3")


class DepthMetricAccumulator:
    """Sums per-pixel metric terms over batches; `compute()` gives the dataset-level metrics."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.sums = torch.zeros(len(_SUMS), dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch; pred and gt of equal shape (e.g. N x 1 x H x W), metres."""
        if pred.shape != gt.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
        gt = gt.detach().to(torch.float64)
        valid = torch.isfinite(gt) & (gt > self.min_depth) & (gt <= self.max_depth)
        if mask is not None:
            valid &= mask.to(device=gt.device, dtype=torch.bool)
        g = gt[valid]
        p = pred.detach().to(device=gt.device, dtype=torch.float64)[valid]
        p = p.nan_to_num(nan=self.min_depth).clamp(self.min_depth, self.max_depth)

        err = p - g
        log_err = torch.log(p) - torch.log(g)
        ratio = torch.maximum(p / g, g / p)
        batch = torch.stack([
            torch.tensor(float(g.numel()), dtype=torch.float64, device=g.device),
            (err.abs() / g).sum(),
            (err**2 / g).sum(),
            (err**2).sum(),
            (log_err**2).sum(),
            (log_err.abs() / torch.log(torch.tensor(10.0, dtype=torch.float64))).sum(),
            (ratio < 1.25).sum().to(torch.float64),
            (ratio < 1.25**2).sum().to(torch.float64),
            (ratio < 1.25**3).sum().to(torch.float64),
        ])
        self.sums += batch.cpu()

    def compute(self) -> dict[str, float]:
        """The metrics over everything added so far (NaN when no valid pixel was seen)."""
        s = dict(zip(_SUMS, self.sums.tolist(), strict=True))
        n = s["count"]
        if n == 0:
            return dict.fromkeys(METRIC_NAMES, float("nan"))
        return {
            "abs_rel": s["abs_rel"] / n,
            "sq_rel": s["sq_rel"] / n,
            "rmse": (s["sq_err"] / n) ** 0.5,
            "rmse_log": (s["sq_log_err"] / n) ** 0.5,
            "log10": s["abs_log10"] / n,
            "d1": s["d1"] / n,
            "d2": s["d2"] / n,
            "d3": s["d3"] / n,
        }

    @property
    def count(self) -> int:
        """Number of valid pixels seen."""
        return int(self.sums[0].item())

    def state(self) -> torch.Tensor:
        """The sums as one float64 vector: all-reduce (SUM) it across ranks, then `load_state`."""
        return self.sums.clone()

    def load_state(self, state: torch.Tensor) -> None:
        """Replace the sums with `state` (e.g. the all-reduced result of `state()`)."""
        if state.shape != self.sums.shape:
            raise ValueError(f"state must have shape {tuple(self.sums.shape)}, got {tuple(state.shape)}")
        self.sums = state.detach().to("cpu", torch.float64).clone()

    def merge(self, other: DepthMetricAccumulator) -> None:
        """Add another accumulator's sums (same depth range) into this one."""
        if (other.min_depth, other.max_depth) != (self.min_depth, self.max_depth):
            raise ValueError("cannot merge accumulators with different depth ranges")
        self.sums += other.sums

    def reset(self) -> None:
        self.sums.zero_()


def depth_metrics(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
) -> dict[str, float]:
    """AbsRel, SqRel, RMSE, RMSE log, log10 and d1..d3 of one batch, pooled over its valid pixels."""
    acc = DepthMetricAccumulator(min_depth, max_depth)
    acc.update(pred, gt, mask)
    return acc.compute()


def json_metrics(metrics: dict[str, float] | None) -> dict[str, float | None] | None:
    """Metrics with NaN as None, so they fit in JSON."""
    return None if metrics is None else {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
