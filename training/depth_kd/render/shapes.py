"""Analytic primitives, each type intersected as one batch of (primitive, ray) pairs.

Every primitive type holds its scene's parameters as tensors (built once per scene) and offers:

- ``corners``: (N, 8, 3) world points whose convex hull contains each primitive (for screen-space culling);
- ``prepare(origin)``: per-frame, per-primitive quantities that depend only on the camera centre;
- ``intersect(prep, prim, d)``: ray parameter ``t`` of the nearest hit beyond ``NEAR`` for P pairs
  (primitive index ``prim`` (P,), world direction ``d`` (P, 3)), ``inf`` where the ray misses;
- ``surface(p, prim)``: at P hit points, the outward normal (P, 3), surface coordinates in metres (P, 2) and
  a face id (P,) in 0..5 (boxes: 2 * axis + (side > 0), so 4 is the bottom and 5 the top; cylinders: side 0,
  bottom 4, top 5; spheres and quads: 0) used to give faces their own materials.

A ray that starts inside a box, sphere or cylinder hits its inside: that is how a room (a box) and a sky dome
(a sphere) enclose the camera.
"""

from __future__ import annotations

import numpy as np
import torch

NEAR = 1e-3  # metres: hits closer than this along the optical axis are ignored


def _tensor(values: list, device: torch.device | str, width: int) -> torch.Tensor:
    return torch.tensor(
        np.asarray(values, dtype=np.float64).reshape(-1, width), dtype=torch.float32, device=device
    )


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of (P, 3) tensors (faster on CPU than a reduction over a length-3 axis)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _sorted_roots(q: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Roots (smaller, larger) of a t^2 + 2 b t + c from q = -(b + sign(b) sqrt(disc)), cancellation-free."""
    r1, r2 = q / a, c / q
    return torch.minimum(r1, r2), torch.maximum(r1, r2)


def _stable_q(b: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    return -(b + torch.copysign(sq, b))


class Boxes:
    """Boxes with half extents ``half``, axis-aligned in their own frame, rotated by ``yaw`` about world z."""

    def __init__(self, center: list, half: list, yaw: list, device: torch.device | str) -> None:
        self.center = _tensor(center, device, 3)
        self.half = _tensor(half, device, 3)
        yaw_t = _tensor(yaw, device, 1)[:, 0]
        self.cos, self.sin = torch.cos(yaw_t), torch.sin(yaw_t)
        signs = torch.tensor(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
            dtype=torch.float32,
            device=device,
        )
        local = signs[None] * self.half[:, None]
        self.corners = self._to_world(local) + self.center[:, None]
        self._face_normals = torch.tensor(
            [[-1.0, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], device=device
        )

    def __len__(self) -> int:
        return self.center.shape[0]

    def _to_world(self, v: torch.Tensor) -> torch.Tensor:
        c, s = self.cos.view(-1, *([1] * (v.dim() - 2))), self.sin.view(-1, *([1] * (v.dim() - 2)))
        return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1], v[..., 2]], dim=-1)

    @staticmethod
    def _to_local(v: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.stack([c * v[:, 0] + s * v[:, 1], c * v[:, 1] - s * v[:, 0], v[:, 2]], dim=1)

    def prepare(self, origin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self._to_local(origin[None] - self.center, self.cos, self.sin)
        return -self.half - o, self.half - o

    def intersect(
        self, prep: tuple[torch.Tensor, torch.Tensor], prim: torch.Tensor, d: torch.Tensor
    ) -> torch.Tensor:
        lo, hi = prep
        inv = self._to_local(d, self.cos.index_select(0, prim), self.sin.index_select(0, prim)).reciprocal()
        t1, t2 = lo.index_select(0, prim) * inv, hi.index_select(0, prim) * inv
        t_near = torch.minimum(t1, t2).amax(dim=1)
        t_far = torch.maximum(t1, t2).amin(dim=1)
        t = torch.where(t_near > NEAR, t_near, t_far)
        return torch.where((t_near <= t_far) & (t > NEAR), t, torch.inf)

    def surface(self, p: torch.Tensor, prim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, s = self.cos.index_select(0, prim), self.sin.index_select(0, prim)
        local = self._to_local(p - self.center.index_select(0, prim), c, s)
        axis = (local.abs() / self.half.index_select(0, prim)).argmax(dim=1)
        face = 2 * axis + (local.gather(1, axis[:, None])[:, 0] > 0).to(torch.int64)
        n = self._face_normals.index_select(0, face)
        normal = torch.stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1], n[:, 2]], dim=1)
        x, y, z = local.unbind(dim=1)
        uv = torch.stack([torch.where(axis == 0, y, x), torch.where(axis == 2, y, z)], dim=1)
        return normal, uv, face


class Spheres:
    """Spheres given by centre and radius."""

    def __init__(self, center: list, radius: list, device: torch.device | str) -> None:
        self.center = _tensor(center, device, 3)
        self.radius = _tensor(radius, device, 1)[:, 0]
        signs = torch.tensor(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
            dtype=torch.float32,
            device=device,
        )
        self.corners = self.center[:, None] + signs[None] * self.radius[:, None, None]

    def __len__(self) -> int:
        return self.center.shape[0]

    def prepare(self, origin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        oc = origin[None] - self.center
        return oc, (oc * oc).sum(dim=1) - self.radius**2

    def intersect(
        self, prep: tuple[torch.Tensor, torch.Tensor], prim: torch.Tensor, d: torch.Tensor
    ) -> torch.Tensor:
        oc, cc = prep[0].index_select(0, prim), prep[1].index_select(0, prim)
        a = dot(d, d)
        b = dot(oc, d)
        disc = b * b - a * cc
        t0, t1 = _sorted_roots(_stable_q(b, torch.sqrt(disc.clamp(min=0.0))), a, cc)
        t = torch.where(t0 > NEAR, t0, t1)
        return torch.where((disc >= 0) & (t > NEAR), t, torch.inf)

    def surface(self, p: torch.Tensor, prim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = self.radius.index_select(0, prim)
        normal = (p - self.center.index_select(0, prim)) / r[:, None]
        uv = torch.stack(
            [r * torch.atan2(normal[:, 1], normal[:, 0]), r * torch.asin(normal[:, 2].clamp(-1.0, 1.0))],
            dim=1,
        )
        return normal, uv, torch.zeros_like(prim)


class Cylinders:
    """Vertical (world z) capped cylinders: centre of the bottom cap, radius and height."""

    def __init__(self, base: list, radius: list, height: list, device: torch.device | str) -> None:
        self.base = _tensor(base, device, 3)
        self.radius = _tensor(radius, device, 1)[:, 0]
        self.height = _tensor(height, device, 1)[:, 0]
        r, h = self.radius[:, None], self.height[:, None]
        sx = torch.tensor([-1.0, -1, -1, -1, 1, 1, 1, 1], device=device)
        sy = torch.tensor([-1.0, -1, 1, 1, -1, -1, 1, 1], device=device)
        sz = torch.tensor([0.0, 1, 0, 1, 0, 1, 0, 1], device=device)
        self.corners = self.base[:, None] + torch.stack([sx * r, sy * r, sz * h], dim=-1)

    def __len__(self) -> int:
        return self.base.shape[0]

    def prepare(self, origin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        oc = origin[None] - self.base
        return oc, oc[:, 0] ** 2 + oc[:, 1] ** 2 - self.radius**2

    def intersect(
        self, prep: tuple[torch.Tensor, torch.Tensor], prim: torch.Tensor, d: torch.Tensor
    ) -> torch.Tensor:
        oc, cc = prep[0].index_select(0, prim), prep[1].index_select(0, prim)
        ox, oy, oz = oc.unbind(dim=1)
        dx, dy, dz = d.unbind(dim=1)
        r2, h = self.radius.index_select(0, prim) ** 2, self.height.index_select(0, prim)
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        disc = b * b - a * cc
        side = torch.stack(_sorted_roots(_stable_q(b, torch.sqrt(disc.clamp(min=0.0))), a, cc), dim=1)
        z_side = oz[:, None] + side * dz[:, None]
        side_ok = (disc >= 0)[:, None] & (z_side >= 0) & (z_side <= h[:, None])
        caps = torch.stack([-oz / dz, (h - oz) / dz], dim=1)
        rx, ry = ox[:, None] + caps * dx[:, None], oy[:, None] + caps * dy[:, None]
        caps_ok = rx * rx + ry * ry <= r2[:, None]
        t = torch.cat([torch.where(side_ok, side, torch.inf), torch.where(caps_ok, caps, torch.inf)], dim=1)
        return torch.where(t > NEAR, t, torch.inf).amin(dim=1)

    def surface(self, p: torch.Tensor, prim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        local = p - self.base.index_select(0, prim)
        r, h = self.radius.index_select(0, prim), self.height.index_select(0, prim)
        x, y, z = local.unbind(dim=1)
        radial = torch.sqrt(x * x + y * y).clamp(min=1e-9)
        gaps = torch.stack([(radial - r).abs(), z.abs(), (h - z).abs()], dim=1)
        part = gaps.argmin(dim=1)  # 0 side, 1 bottom, 2 top
        zero = torch.zeros_like(x)
        cap_z = torch.where(part == 2, 1.0, -1.0)
        on_side = (part == 0)[:, None]
        normal = torch.where(
            on_side,
            torch.stack([x / radial, y / radial, zero], dim=1),
            torch.stack([zero, zero, cap_z], dim=1),
        )
        uv = torch.where(on_side, torch.stack([r * torch.atan2(y, x), z], dim=1), torch.stack([x, y], dim=1))
        face = torch.where(part == 0, 0, part + 3)
        return normal, uv, face


class Quads:
    """Flat rectangles: centre, orthonormal in-plane axes e1, e2 and half extents along them."""

    def __init__(self, center: list, e1: list, e2: list, half: list, device: torch.device | str) -> None:
        self.center = _tensor(center, device, 3)
        self.e1 = _tensor(e1, device, 3)
        self.e2 = _tensor(e2, device, 3)
        self.normal = torch.cross(self.e1, self.e2, dim=1)
        self.half = _tensor(half, device, 2)
        self.frame = torch.stack([self.normal, self.e1, self.e2], dim=1)  # (N, 3, 3) rows n, e1, e2
        a, b = self.e1 * self.half[:, :1], self.e2 * self.half[:, 1:]
        corners = torch.stack([-a - b, -a + b, a - b, a + b], dim=1) + self.center[:, None]
        self.corners = torch.cat([corners, corners], dim=1)

    def __len__(self) -> int:
        return self.center.shape[0]

    def prepare(self, origin: torch.Tensor) -> torch.Tensor:
        return (self.frame * (origin[None] - self.center)[:, None, :]).sum(dim=2)  # (N, 3): o.n, o.e1, o.e2

    def intersect(self, prep: torch.Tensor, prim: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        o = prep.index_select(0, prim)
        t = -o[:, 0] / dot(self.normal.index_select(0, prim), d)
        half = self.half.index_select(0, prim)
        a = o[:, 1] + t * dot(self.e1.index_select(0, prim), d)
        b = o[:, 2] + t * dot(self.e2.index_select(0, prim), d)
        inside = (a.abs() <= half[:, 0]) & (b.abs() <= half[:, 1])
        return torch.where(inside & (t > NEAR), t, torch.inf)

    def surface(self, p: torch.Tensor, prim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        local = p - self.center.index_select(0, prim)
        uv = torch.stack(
            [dot(local, self.e1.index_select(0, prim)), dot(local, self.e2.index_select(0, prim))], dim=1
        )
        return self.normal.index_select(0, prim), uv, torch.zeros_like(prim)
