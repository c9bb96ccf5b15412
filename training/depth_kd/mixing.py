"""Object-wise image mixing (Hu et al., "Data-free Dense Depth Distillation", arXiv 2208.12464): objects cut out of
one simulated frame of the batch by their instance ids and pasted into another, so the few rendered scenes
show the teacher more arrangements of objects than they hold.

For each frame of the batch, with probability ``probability``: pick another frame of the batch (the source),
1 to ``max_objects`` of its non-zero instance ids, a scale ``s`` in [``scale_min``, ``scale_max``] and a place
for the objects' bounding box (uniform, so that the box fits when it can). Every destination pixel inside
the scaled box then takes the source pixel it maps to (nearest neighbour: pasted pixels are the source's own
pixels, never blends), where that pixel belongs to a chosen object and is not occluded: where both frames
have depth, the pasted object (moved to depth / s, as an object s times larger in the image is s times
nearer) must be nearer than what the destination shows. Pasted pixels take the source's depth (/ s) and its
instance ids offset by the destination's largest id, so ids stay unique and each pasted object keeps one id.

The random numbers come from :func:`mix_rng`, seeded by the run's seed, step, micro-batch and rank: a
resumed run mixes exactly as the uninterrupted one, with no state to save.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MixSettings", "Mixed", "mix_objects", "mix_rng"]


@dataclass(frozen=True)
class MixSettings:
    """How often and how objects are pasted (the ``datafree.mix_*`` keys)."""

    probability: float = 0.5
    max_objects: int = 3
    scale_min: float = 0.75
    scale_max: float = 1.25


@dataclass
class Mixed:
    """The mixed batch: ``rgb`` N x 3 x H x W, ``instances`` N x 1 x H x W int64, ``depth`` N x 1 x H x W (None
    when the batch had none), ``pasted`` N x 1 x H x W bool (which pixels came from another frame)."""

    rgb: torch.Tensor
    instances: torch.Tensor
    depth: torch.Tensor | None
    pasted: torch.Tensor


def mix_rng(seed: int, step: int, micro: int = 0, rank: int = 0) -> np.random.Generator:
    """The generator for one micro-batch of one rank: a function of its position in the run only."""
    return np.random.default_rng([seed, step, micro, rank])


def mix_objects(rgb: torch.Tensor, instances: torch.Tensor, depth: torch.Tensor | None, settings: MixSettings,
                rng: np.random.Generator) -> Mixed:
    """Paste objects between the frames of a batch (see the module docstring); the inputs are not changed.

    ``rgb`` N x 3 x H x W, ``instances`` N x 1 x H x W integer ids (0 = structure, never pasted), ``depth``
    N x 1 x H x W metres with NaN where unknown, or None.
    """
    n, _, height, width = rgb.shape
    if instances.shape != (n, 1, height, width) or (depth is not None and depth.shape != instances.shape):
        raise ValueError(f"mixing needs instances (and depth) of shape {(n, 1, height, width)}, got "
                         f"{tuple(instances.shape)} and {None if depth is None else tuple(depth.shape)}")
    out_rgb, out_ids = rgb.clone(), instances.long().clone()
    out_depth = None if depth is None else depth.clone()
    pasted = torch.zeros_like(instances, dtype=torch.bool)
    for i in range(n):
        if rng.random() >= settings.probability:
            continue
        j = (i + 1 + int(rng.integers(n - 1))) % n if n > 1 else i
        ids = torch.unique(instances[j])
        ids = ids[ids != 0]
        if len(ids) == 0:
            continue
        count = int(rng.integers(1, min(settings.max_objects, len(ids)) + 1))
        chosen = ids[torch.as_tensor(rng.permutation(len(ids))[:count], device=ids.device)]
        scale = float(rng.uniform(settings.scale_min, settings.scale_max))
        placed = _place(torch.isin(instances[j, 0], chosen), scale, height, width, rng)
        if placed is None:
            continue
        rows, cols, src_rows, src_cols, mask = placed
        window = (slice(None), rows[:, None], cols[None, :])
        source = (slice(None), src_rows[:, None], src_cols[None, :])
        paste = mask
        if depth is not None:
            near = depth[j][source] / scale
            far = out_depth[i][window]
            paste = mask & ~(torch.isfinite(near) & torch.isfinite(far) & (near >= far))
            out_depth[i][window] = torch.where(paste, near, far)
        offset = int(out_ids[i].max())
        out_ids[i][window] = torch.where(paste, instances[j][source].long() + offset, out_ids[i][window])
        out_rgb[i][window] = torch.where(paste, rgb[j][source], out_rgb[i][window])
        pasted[i][window] |= paste
    return Mixed(out_rgb, out_ids, out_depth, pasted)


def _place(mask: torch.Tensor, scale: float, height: int, width: int, rng: np.random.Generator
           ) -> tuple[torch.Tensor, ...] | None:
    """Where the bounding box of ``mask`` (H x W) lands, scaled by ``scale`` at a random place.

    Returns the destination rows and columns inside the image, the source rows and columns they sample
    (nearest neighbour) and ``mask`` at those samples (1 x rows x cols); None when nothing lands in the image.
    """
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, x0 = int(ys.min()), int(xs.min())
    box_h, box_w = int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1
    out_h, out_w = max(1, round(box_h * scale)), max(1, round(box_w * scale))
    top = int(rng.integers(min(0, height - out_h), max(0, height - out_h) + 1))
    left = int(rng.integers(min(0, width - out_w), max(0, width - out_w) + 1))
    device = mask.device
    rows = torch.arange(max(top, 0), min(top + out_h, height), device=device)
    cols = torch.arange(max(left, 0), min(left + out_w, width), device=device)
    if len(rows) == 0 or len(cols) == 0:
        return None
    src_rows = y0 + torch.div((rows - top) * 2 * box_h + box_h, 2 * out_h, rounding_mode="floor")
    src_cols = x0 + torch.div((cols - left) * 2 * box_w + box_w, 2 * out_w, rounding_mode="floor")
    return rows, cols, src_rows, src_cols, mask[src_rows[:, None], src_cols[None, :]][None]
