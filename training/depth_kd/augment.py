"""Random views of a training batch: zoom-crops, flips and colour jitter, vectorised over the batch in torch.

Why here and not in the DataLoader: the teacher has to see *the same* view as the student when it labels
views on the fly ("patient and consistent" distillation, Beyer et al., CVPR 2022), and the random numbers
come from torch's global generator in the training process, whose state the training state saves, so a
resumed run draws exactly the views it would have drawn.

Geometry. A view zooms by ``s`` in [1, ``scale_max``] (a window of 1/s of the frame, placed uniformly,
resized back to the full size) and may mirror left-right. Intrinsics follow the pixels: fx, fy grow by
``s`` and the principal point moves with the window (a mirrored image is a camera with cx mirrored).
Depth is sampled with nearest neighbour, so invalid (NaN) ground truth never blends with valid pixels;
teacher maps with bilinear.

Colour (student input, and the teacher's in on-the-fly mode; never depth): brightness and contrast
factors in [1 - c, 1 + c] and a saturation factor in [1 - c, 1 + c], on RGB in [0, 1].

Mixing frames (CutMix, for rows the teacher alone labels): a box of another frame of the batch pasted in, a
tenth to a half of the frame's area. It shows the teacher inputs no recording holds ("function matching",
Beyer et al.); the teacher labels the collage itself on the fly, and cached targets are pasted alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Mix", "Views", "jitter_colour", "paste", "random_views", "sample_mix", "sample_views", "views_intrinsics",
           "warp"]

_GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


@dataclass
class Views:
    """Per-sample view parameters (each a tensor of length N): zoom, window centre in [-1, 1], mirror, colour."""

    scale: torch.Tensor
    centre_x: torch.Tensor
    centre_y: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor

    def rows(self, start: int, stop: int) -> Views:
        """The views of batch rows ``start:stop``."""
        return Views(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))

    @property
    def geometric(self) -> bool:
        """Whether any sample's pixels move (zoom or mirror)."""
        return bool((self.scale != 1).any() or self.flip.any())


def sample_views(n: int, scale_max: float = 1.0, flip: float = 0.0, colour: float = 0.0) -> Views:
    """Draw ``n`` views from torch's global generator (identity when every argument is at its default)."""
    scale = 1 + torch.rand(n) * (scale_max - 1)
    room = 1 - 1 / scale  # how far the window's centre may move, in normalised coordinates
    centre_x = (torch.rand(n) * 2 - 1) * room
    centre_y = (torch.rand(n) * 2 - 1) * room
    mirror = torch.rand(n) < flip
    jitter = (torch.rand(3, n) * 2 - 1) * colour + 1
    return Views(scale, centre_x, centre_y, mirror, jitter[0], jitter[1], jitter[2])


def random_views(rgb: torch.Tensor, scale_max: float = 1.0, flip: float = 0.0,
                 colour: float = 0.0) -> tuple[torch.Tensor, Views]:
    """A random view of each image of ``rgb`` (zoom-crop and mirror, then colour) and the views drawn."""
    views = sample_views(len(rgb), scale_max, flip, colour)
    out = warp(rgb, views)
    return (jitter_colour(out, views) if colour else out), views


def warp(images: torch.Tensor, views: Views, mode: str = "bilinear") -> torch.Tensor:
    """Resample N x C x H x W ``images`` to the views (``mode`` ``nearest`` for ground-truth depth)."""
    if not views.geometric:
        return images
    n = images.shape[0]
    sign = 1 - 2 * views.flip.to(images.dtype)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = sign / views.scale
    theta[:, 0, 2] = views.centre_x
    theta[:, 1, 1] = 1 / views.scale
    theta[:, 1, 2] = views.centre_y
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


def views_intrinsics(intrinsics: torch.Tensor, views: Views, height: int, width: int) -> torch.Tensor:
    """[fx, fy, cx, cy] per sample (N x 4, pixels) of the warped images; NaN stays NaN."""
    # Output pixel u' sees input pixel u = (u' + 0.5 - W/2) * a + W/2 * (1 + t) - 0.5 with a = +-1/s and t the
    # window centre (affine_grid with align_corners=False); solving u = fx X/Z + cx for u' gives the below.
    fx, fy, cx, cy = intrinsics.unbind(1)
    s, sign = views.scale.to(intrinsics), 1 - 2 * views.flip.to(intrinsics)
    new_cx = sign * s * (cx + 0.5 - width / 2 * (1 + views.centre_x.to(intrinsics))) + width / 2 - 0.5
    new_cy = s * (cy + 0.5 - height / 2 * (1 + views.centre_y.to(intrinsics))) + height / 2 - 0.5
    return torch.stack([fx * s, fy * s, new_cx, new_cy], dim=1)


def jitter_colour(rgb: torch.Tensor, views: Views) -> torch.Tensor:
    """Brightness, contrast and saturation of N x 3 x H x W RGB in [0, 1], per sample; result clamped."""
    def per_sample(values: torch.Tensor) -> torch.Tensor:
        return values.to(rgb).view(-1, 1, 1, 1)

    grey = (rgb * torch.tensor(_GREY, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    out = grey + (rgb - grey) * per_sample(views.saturation)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    out = mean + (out - mean) * per_sample(views.contrast)
    return (out * per_sample(views.brightness)).clamp(0.0, 1.0)


@dataclass
class Mix:
    """Per-sample boxes pasted from another row (each a tensor of length N): row i takes rows ``top:bottom`` and
    columns ``left:right`` of row ``source[i]`` where ``mixed[i]``."""

    source: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    bottom: torch.Tensor
    right: torch.Tensor
    mixed: torch.Tensor


def sample_mix(n: int, height: int, width: int, prob: float, area: tuple[float, float] = (0.1, 0.5)) -> Mix:
    """Draw ``n`` boxes of the frame's aspect ratio, each from another row, from torch's global generator."""
    source = (torch.arange(n) + torch.randint(1, max(n, 2), (n,))) % n  # never the row itself (for n > 1)
    side = (area[0] + torch.rand(n) * (area[1] - area[0])).sqrt()
    box_h, box_w = (side * height).round().long(), (side * width).round().long()
    top = (torch.rand(n) * (height - box_h + 1)).long()
    left = (torch.rand(n) * (width - box_w + 1)).long()
    return Mix(source, top, left, top + box_h, left + box_w, (torch.rand(n) < prob) & (n > 1))


def paste(images: torch.Tensor, mix: Mix) -> torch.Tensor:
    """N x C x H x W ``images`` with each mixed row's box replaced by its source row's pixels there."""
    height, width = images.shape[-2:]
    def per_sample(values: torch.Tensor) -> torch.Tensor:
        return values.to(images.device).view(-1, 1, 1, 1)

    rows = torch.arange(height, device=images.device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, 1, -1)
    inside = ((rows >= per_sample(mix.top)) & (rows < per_sample(mix.bottom)) & (cols >= per_sample(mix.left))
              & (cols < per_sample(mix.right)) & per_sample(mix.mixed))
    return torch.where(inside, images[mix.source.to(images.device)], images)
