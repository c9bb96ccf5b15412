"""Distillation losses on depth maps (N x 1 x H x W, metres).

* `depth_grad_normal_loss` -- the loss of Hu et al. (JunjH's code): log(|d - t| + 0.5) on depth and on its
  Sobel x / y gradients, plus 1 - cos between the surface normals (-dx, -dy, 1) of prediction and target.
* `scale_invariant_loss` -- Eigen et al.'s scale-invariant log loss (SILog).

Target pixels that are NaN, infinite or <= 0 are invalid, and so is any pixel where the optional `mask` is
False. They are excluded from every term: a gradient pixel counts only if its whole 3 x 3 Sobel window is
valid, so a hole in the target never shows up as a fake edge. Both losses return a `LossResult`: the total to
back-propagate and its components (detached) for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.t().contiguous()


@dataclass
class LossResult:
    """`total` carries the gradient; `terms` holds its components, detached, for logging."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def valid_mask(target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of usable target pixels: finite, > 0 and (if given) `mask`."""
    valid = torch.isfinite(target) & (target > 0)
    if mask is not None:
        valid = valid & mask.to(torch.bool)
    return valid


def sobel(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised Sobel x (rightwards) and y (downwards) gradients, N x 1 x (H-2) x (W-2), no padding."""
    kernels = torch.stack([_SOBEL_X, _SOBEL_Y]).unsqueeze(1).to(depth)
    grads = F.conv2d(depth, kernels)
    return grads[:, :1], grads[:, 1:]


def _interior_valid(valid: torch.Tensor) -> torch.Tensor:
    """Pixels of the unpadded Sobel output whose whole 3 x 3 input window is valid."""
    return -F.max_pool2d(-valid.float(), kernel_size=3, stride=1) > 0.5


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over `mask`; an exact zero (still in the graph) when nothing is valid."""
    if not bool(mask.any()):
        return values.sum() * 0.0
    return values[mask].mean()


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.dim() != 4 or pred.shape[1] != 1 or pred.shape != target.shape:
        raise ValueError(f"expected pred and target N x 1 x H x W of equal shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


def depth_grad_normal_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> LossResult:
    """Hu et al.'s depth + gradient + normal loss; terms: depth, grad_x, grad_y, normal."""
    _check(pred, target)
    valid = valid_mask(target, mask)
    # Invalid target values are replaced before any arithmetic so no NaN reaches the graph (0 * NaN = NaN).
    target = torch.where(valid, target, torch.ones_like(target))

    depth_term = _masked_mean(torch.log((pred - target).abs() + 0.5), valid)

    pred_dx, pred_dy = sobel(pred)
    target_dx, target_dy = sobel(target)
    grad_valid = _interior_valid(valid)
    grad_x = _masked_mean(torch.log((pred_dx - target_dx).abs() + 0.5), grad_valid)
    grad_y = _masked_mean(torch.log((pred_dy - target_dy).abs() + 0.5), grad_valid)

    ones = torch.ones_like(pred_dx)
    pred_normal = torch.cat([-pred_dx, -pred_dy, ones], dim=1)
    target_normal = torch.cat([-target_dx, -target_dy, ones], dim=1)
    # Norms are >= 1 (z = 1), so the cosine needs no epsilon.
    cos = F.cosine_similarity(pred_normal, target_normal, dim=1, eps=0.0).unsqueeze(1)
    normal = _masked_mean(1.0 - cos, grad_valid)

    total = depth_term + grad_x + grad_y + normal
    terms = {"depth": depth_term, "grad_x": grad_x, "grad_y": grad_y, "normal": normal}
    return LossResult(total, {k: v.detach() for k, v in terms.items()})


def scale_invariant_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    lam: float = 0.85,
    eps: float = 1e-6,
) -> LossResult:
    """Eigen et al.'s SILog, mean(g^2) - lam * mean(g)^2 with g = log pred - log target, per image.

    Each image's value uses its own valid pixels; the loss is the mean over images that have any (lam = 1
    is fully scale invariant, lam = 0 is plain log-MSE). Predictions are clamped at `eps` before the log.
    Term: silog.
    """
    _check(pred, target)
    valid = valid_mask(target, mask).flatten(1)
    target = torch.where(valid, target.flatten(1), torch.ones_like(target.flatten(1)))
    g = (torch.log(pred.flatten(1).clamp(min=eps)) - torch.log(target)) * valid
    count = valid.sum(dim=1)
    has_pixels = count > 0
    if not bool(has_pixels.any()):
        silog = pred.sum() * 0.0
    else:
        n = count[has_pixels].to(g.dtype)
        mean_sq = (g[has_pixels] ** 2).sum(dim=1) / n
        mean = g[has_pixels].sum(dim=1) / n
        silog = (mean_sq - lam * mean**2).mean()
    return LossResult(silog, {"silog": silog.detach()})


LossFn = Callable[..., LossResult]

LOSSES: dict[str, LossFn] = {
    "grad_normal": depth_grad_normal_loss,
    "silog": scale_invariant_loss,
}


def build_loss(name: str) -> LossFn:
    """Look a loss up by its config name (see `LOSSES`)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
