"""Vectorised ray caster: nearest analytic hit per pixel, then deferred texturing and shading.

Per frame:

1. rotate the camera's precomputed optical-frame rays into the world;
2. for each primitive type, project every primitive's bounding corners to get a screen rectangle, expand
   the rectangles into flat (primitive, pixel) pairs and intersect all pairs in one batch;
3. keep the nearest hit per pixel with one ``scatter_reduce(amin)`` on a packed int64 key
   ``float32 bits of t << 16 | primitive index`` (positive floats order like their bit patterns), so depth
   stays the exact float32 ray parameter and the winner's index comes with it;
4. shade only the winning hits: normals and surface coordinates per type, procedural albedo, Lambert, fog.

No Python loop runs over pixels or primitives; loops run over the four primitive types and the patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import Intrinsics
from .scene import Scene
from .shading import LightTensors, fog, lambert, sky, to_rgb8
from .shapes import NEAR, dot
from .textures import SKY_ID, albedo

_INF_BITS = 0x7F800000  # float32 +inf; every finite positive t packs below it
_MISS_KEY = (_INF_BITS << 16) | 0xFFFF


@dataclass
class Frame:
    """One rendered view. Tensors on the render device (or numpy arrays after :meth:`numpy`).

    rgb: (H, W, 3) uint8. depth: (H, W) float32 metres along the optical axis, NaN where no surface.
    instances: (H, W) int32 on device / uint16 in numpy; 0 = structure, see scene.py. pose: (4, 4) float64
    world-from-camera (optical frame).
    """

    rgb: torch.Tensor | np.ndarray
    depth: torch.Tensor | np.ndarray
    instances: torch.Tensor | np.ndarray
    pose: np.ndarray

    def numpy(self) -> Frame:
        """The same frame as numpy arrays on the host (instances as uint16)."""
        if isinstance(self.rgb, np.ndarray):
            return self
        return Frame(
            self.rgb.cpu().numpy(),
            self.depth.cpu().numpy(),
            self.instances.cpu().numpy().astype(np.uint16),
            self.pose,
        )


class Renderer:
    """Renders one :class:`Scene` through one camera from any pose. Tensors are prepared once here."""

    def __init__(self, scene: Scene, intrinsics: Intrinsics) -> None:
        self.scene = scene
        self.intrinsics = intrinsics
        self.device = scene.device
        rays = intrinsics.ray_directions(self.device)
        self._x, self._y = rays[:, 0:1].contiguous(), rays[:, 1:2].contiguous()
        self._light = LightTensors.from_lights(scene.lights, self.device)

    @torch.no_grad()
    def render(self, pose: np.ndarray) -> Frame:
        """Render the view from world-from-camera ``pose`` (4x4)."""
        pose = np.asarray(pose, dtype=np.float64)
        rot = torch.tensor(pose[:3, :3], dtype=torch.float32, device=self.device)
        origin = torch.tensor(pose[:3, 3], dtype=torch.float32, device=self.device)
        dirs = self._x * rot[:, 0] + self._y * rot[:, 1] + rot[:, 2]  # (N, 3) world, camera z component 1

        best = torch.full((dirs.shape[0],), _MISS_KEY, dtype=torch.int64, device=self.device)
        for offset, shape in self.scene.shapes_with_offsets():
            prim, pix = self._screen_pairs(shape.corners, rot, origin)
            if prim.numel() == 0:
                continue
            t = shape.intersect(shape.prepare(origin), prim, dirs.index_select(0, pix))
            key = (t.view(torch.int32).to(torch.int64) << 16) | (prim + offset)
            best.scatter_reduce_(0, pix, key, reduce="amin")

        depth = (best >> 16).to(torch.int32).view(torch.float32)
        hit = torch.isfinite(depth)
        every = bool(hit.all())
        idx = None if every else torch.nonzero(hit).squeeze(1)
        gid = best & 0xFFFF
        gid_h, t_h, d_h = (
            (gid, depth, dirs)
            if every
            else (gid.index_select(0, idx), depth.index_select(0, idx), dirs.index_select(0, idx))
        )
        color, inst = self._shade(gid_h, t_h, d_h, origin)

        h, w = self.intrinsics.height, self.intrinsics.width
        if every:
            rgb, instances = color, inst
        else:
            rgb = self._light.background.expand(dirs.shape[0], 3).clone()
            rgb.index_copy_(0, idx, color)
            instances = torch.zeros(dirs.shape[0], dtype=torch.int32, device=self.device)
            instances.index_copy_(0, idx, inst)
            depth = torch.where(hit, depth, torch.nan)
        return Frame(to_rgb8(rgb).view(h, w, 3), depth.view(h, w), instances.view(h, w), pose)

    def _screen_pairs(
        self, corners: torch.Tensor, rot: torch.Tensor, origin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat (primitive, pixel) pairs covering each primitive's conservative screen rectangle.

        The rectangle bounds the projection of the part of the corners' convex hull in front of the near
        plane: the corners in front plus every point where a segment from a corner in front to a corner
        behind crosses the plane (those points' projections lie far out, on the correct side of the image).
        """
        cam = (corners - origin) @ rot  # (N, 8, 3) optical frame
        z = cam[..., 2]
        front = z > NEAR
        crosses = front[:, :, None] & ~front[:, None, :]  # (N, 8, 8): segment i (front) -> j (behind)
        frac = ((NEAR - z[:, :, None]) / (z[:, None, :] - z[:, :, None])).nan_to_num(0.0)
        cross = cam[:, :, None, :] + frac[..., None] * (cam[:, None, :, :] - cam[:, :, None, :])
        n = cam.shape[0]
        points = torch.cat([cam, cross.reshape(n, 64, 3)], dim=1)
        valid = torch.cat([front, crosses.reshape(n, 64)], dim=1)
        k = self.intrinsics
        w, h = k.width, k.height
        zs = points[..., 2].clamp(min=NEAR)
        u = points[..., 0] / zs * k.fx + k.cx
        v = points[..., 1] / zs * k.fy + k.cy
        u0 = torch.floor(torch.where(valid, u, torch.inf).amin(dim=1)).clamp(0, w).to(torch.int64)
        u1 = (torch.ceil(torch.where(valid, u, -torch.inf).amax(dim=1)) + 1).clamp(0, w).to(torch.int64)
        v0 = torch.floor(torch.where(valid, v, torch.inf).amin(dim=1)).clamp(0, h).to(torch.int64)
        v1 = (torch.ceil(torch.where(valid, v, -torch.inf).amax(dim=1)) + 1).clamp(0, h).to(torch.int64)
        width = (u1 - u0).clamp(min=0)
        count = width * (v1 - v0).clamp(min=0)
        total = int(count.sum())
        prim = torch.repeat_interleave(torch.arange(n, device=self.device), count, output_size=total)
        first_pix = v0 * w + u0
        local = torch.arange(total, device=self.device) - (torch.cumsum(count, 0) - count).index_select(
            0, prim
        )
        pw = width.index_select(0, prim)
        row = torch.div(local, pw, rounding_mode="floor")
        pix = first_pix.index_select(0, prim) + row * (w - pw) + local
        return prim, pix

    def _shade(
        self, gid: torch.Tensor, t: torch.Tensor, dirs: torch.Tensor, origin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear colour (P, 3) and instance id (P,) for P winning hits."""
        scene = self.scene
        points = origin + t[:, None] * dirs
        normal = torch.empty_like(points)
        uv = torch.empty((points.shape[0], 2), dtype=points.dtype, device=self.device)
        face = torch.empty_like(gid)
        for offset, shape in scene.shapes_with_offsets():
            sel = torch.nonzero((gid >= offset) & (gid < offset + len(shape))).squeeze(1)
            if sel.numel():
                n, st, f = shape.surface(points.index_select(0, sel), gid.index_select(0, sel) - offset)
                normal.index_copy_(0, sel, n)
                uv.index_copy_(0, sel, st)
                face.index_copy_(0, sel, f)
        normal = torch.where((dot(normal, dirs) > 0)[:, None], -normal, normal)
        material = scene.face_material.view(-1).index_select(0, gid * 6 + face)
        color = lambert(albedo(scene.materials, material, uv), normal, points, self._light)
        color = fog(color, t, dirs, self._light)
        is_sky = scene.materials.pattern.index_select(0, material) == SKY_ID
        if bool(is_sky.any()):
            sel = torch.nonzero(is_sky).squeeze(1)
            params = scene.materials.params.index_select(0, material.index_select(0, sel))
            color.index_copy_(0, sel, sky(dirs.index_select(0, sel), params[:, 0:3], params[:, 3:6]))
        return color, scene.instance.index_select(0, gid)
