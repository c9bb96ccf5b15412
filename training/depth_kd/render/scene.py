"""A scene: primitives with materials and instance ids, lights, and the free space cameras may move in.

Build one with :class:`SceneBuilder` (plain Python lists, any number of ``add_*`` calls), then call
:meth:`SceneBuilder.build` once to get a :class:`Scene` whose tensors live on the render device.

Instance ids (uint16 range): 0 is structure (room shell, ground, sky dome) and 1, 2, ... are objects; all
parts of one composite object (a table's top and legs) share its id. Use :meth:`SceneBuilder.new_instance`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .shapes import Boxes, Cylinders, Quads, Spheres
from .textures import Material, MaterialTable

MAX_PRIMITIVES = 0xFFFF  # the renderer packs a primitive index into 16 bits
MAX_INSTANCE = 0xFFFF

Vec3 = Sequence[float]


@dataclass(frozen=True)
class Lights:
    """Directional sun, one point light, ambient, optional distance fog and the colour of empty pixels."""

    sun_direction: tuple[float, float, float] = (0.3, 0.2, 1.0)  # towards the light, world frame
    sun_intensity: float = 0.6
    point_position: tuple[float, float, float] = (0.0, 0.0, 2.5)
    point_intensity: float = 0.0
    point_range: float = 3.0  # distance (m) at which the point light's intensity has halved
    ambient: float = 0.3
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fog_distance: float = math.inf  # metres; e-folding distance of exponential fog
    fog_color: tuple[float, float, float] = (0.7, 0.75, 0.8)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Layout:
    """Where a camera may go: a rectangle on the floor (x0, x1, y0, y1) minus circles (x, y, radius)."""

    floor_z: float
    bounds: tuple[float, float, float, float]
    obstacles: np.ndarray  # (K, 3) float64

    def clearance(self, x: float, y: float) -> float:
        """Distance from (x, y) to the nearest wall or obstacle footprint (negative inside one)."""
        x0, x1, y0, y1 = self.bounds
        d = min(x - x0, x1 - x, y - y0, y1 - y)
        if len(self.obstacles):
            ox, oy, r = self.obstacles.T
            d = min(d, float(np.min(np.hypot(ox - x, oy - y) - r)))
        return d


def _face_materials(
    material: Material | Sequence[Material], faces: dict[int, int] | None = None
) -> list[Material]:
    """Six per-face materials from one material or a sequence indexed as ``faces`` maps it to face ids."""
    if isinstance(material, Material):
        return [material] * 6
    materials = list(material)
    if faces is None:
        if len(materials) != 6:
            raise ValueError(f"expected 1 or 6 materials, got {len(materials)}")
        return materials
    out = [materials[0]] * 6
    for face, i in faces.items():
        out[face] = materials[i]
    return out


@dataclass
class SceneBuilder:
    """Collects primitives as plain numbers; :meth:`build` turns them into tensors once."""

    lights: Lights = field(default_factory=Lights)
    layout: Layout | None = None
    _boxes: list = field(default_factory=list)
    _spheres: list = field(default_factory=list)
    _cylinders: list = field(default_factory=list)
    _quads: list = field(default_factory=list)
    _next_instance: int = 1

    def new_instance(self) -> int:
        """A fresh object instance id (1, 2, ...)."""
        if self._next_instance > MAX_INSTANCE:
            raise ValueError("more than 65535 instances")
        self._next_instance += 1
        return self._next_instance - 1

    def add_box(
        self,
        center: Vec3,
        size: Vec3,
        material: Material | Sequence[Material],
        yaw: float = 0.0,
        instance: int = 0,
    ) -> None:
        """Box of full extents ``size`` about ``center``, yawed about z; 1 material or 6 (shapes.py faces)."""
        self._boxes.append(
            (
                tuple(center),
                tuple(0.5 * float(s) for s in size),
                float(yaw),
                _face_materials(material),
                instance,
            )
        )

    def add_sphere(self, center: Vec3, radius: float, material: Material, instance: int = 0) -> None:
        self._spheres.append((tuple(center), float(radius), _face_materials(material), instance))

    def add_cylinder(
        self,
        base: Vec3,
        radius: float,
        height: float,
        material: Material | Sequence[Material],
        instance: int = 0,
    ) -> None:
        """Vertical cylinder standing on ``base``; 1 material or (side, bottom, top)."""
        mats = material if isinstance(material, Material) else _face_materials(material, {0: 0, 4: 1, 5: 2})
        self._cylinders.append((tuple(base), float(radius), float(height), _face_materials(mats), instance))

    def add_quad(
        self,
        center: Vec3,
        e1: Vec3,
        e2: Vec3,
        size: tuple[float, float],
        material: Material,
        instance: int = 0,
    ) -> None:
        """Rectangle of full extents ``size`` along in-plane directions e1, e2 (made orthonormal here)."""
        a = np.asarray(e1, dtype=np.float64)
        a = a / np.linalg.norm(a)
        b = np.asarray(e2, dtype=np.float64)
        b = b - a * (a @ b)
        b = b / np.linalg.norm(b)
        self._quads.append(
            (
                tuple(center),
                tuple(a),
                tuple(b),
                (0.5 * size[0], 0.5 * size[1]),
                _face_materials(material),
                instance,
            )
        )

    @property
    def primitive_count(self) -> int:
        return len(self._boxes) + len(self._spheres) + len(self._cylinders) + len(self._quads)

    def build(self, device: torch.device | str = "cpu") -> Scene:
        """Tensors for rendering on ``device``; raises ValueError on an empty or oversized scene."""
        if not 0 < self.primitive_count <= MAX_PRIMITIVES:
            raise ValueError(f"a scene needs 1..{MAX_PRIMITIVES} primitives, got {self.primitive_count}")
        entries = [*self._boxes, *self._spheres, *self._cylinders, *self._quads]
        materials: list[Material] = []
        index: dict[Material, int] = {}
        face_material = []
        for entry in entries:
            row = []
            for m in entry[-2]:
                if m not in index:
                    index[m] = len(materials)
                    materials.append(m)
                row.append(index[m])
            face_material.append(row)
        shapes = []
        if self._boxes:
            c, h, y, _, _ = zip(*self._boxes, strict=True)
            shapes.append(Boxes(list(c), list(h), list(y), device))
        if self._spheres:
            c, r, _, _ = zip(*self._spheres, strict=True)
            shapes.append(Spheres(list(c), list(r), device))
        if self._cylinders:
            b, r, h, _, _ = zip(*self._cylinders, strict=True)
            shapes.append(Cylinders(list(b), list(r), list(h), device))
        if self._quads:
            c, a, b, h, _, _ = zip(*self._quads, strict=True)
            shapes.append(Quads(list(c), list(a), list(b), list(h), device))
        return Scene(
            shapes=shapes,
            face_material=torch.tensor(face_material, dtype=torch.int64, device=device),
            instance=torch.tensor([e[-1] for e in entries], dtype=torch.int32, device=device),
            materials=MaterialTable.from_materials(materials, device),
            lights=self.lights,
            layout=self.layout,
            device=torch.device(device),
        )


@dataclass
class Scene:
    """Render-ready scene. Global primitive index = position in ``shapes`` order, then within the type."""

    shapes: list  # Boxes / Spheres / Cylinders / Quads, each non-empty, in that order
    face_material: torch.Tensor  # (N, 6) int64 material index per primitive and face id
    instance: torch.Tensor  # (N,) int32
    materials: MaterialTable
    lights: Lights
    layout: Layout | None
    device: torch.device

    def shapes_with_offsets(self) -> list[tuple[int, object]]:
        """(first global primitive index, shape batch) per primitive type."""
        out, offset = [], 0
        for shape in self.shapes:
            out.append((offset, shape))
            offset += len(shape)
        return out
