"""Furniture-like composites made of boxes, cylinders and spheres, defined in their own frame.

Object frame: origin on the floor at the footprint centre, x along the width, y along the depth with the
back at -y (what goes against a wall), z up. :func:`place` yaws and moves a composite into a scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .scene import SceneBuilder
from .textures import Material, random_material


@dataclass
class Composite:
    """Parts in the object frame plus the footprint half extents (hx along x, hy along y)."""

    half_x: float
    half_y: float
    against_wall: bool = False
    parts: list[tuple] = field(default_factory=list)

    def box(self, center: tuple, size: tuple, material: Material) -> None:
        self.parts.append(("box", center, size, material))

    def cylinder(self, base: tuple, radius: float, height: float, material: Material) -> None:
        self.parts.append(("cylinder", base, radius, height, material))

    def sphere(self, center: tuple, radius: float, material: Material) -> None:
        self.parts.append(("sphere", center, radius, material))

    def footprint(self) -> list[tuple[float, float, float]]:
        """Circles (x, y, r) in the object frame that cover the footprint rectangle."""
        long_x = self.half_x >= self.half_y
        a, b = (self.half_x, self.half_y) if long_x else (self.half_y, self.half_x)
        n = max(1, math.ceil(a / b))
        centers = np.linspace(-a + b, a - b, n) if n > 1 else np.zeros(1)
        r = math.hypot(b, (a / n))
        return [(float(c), 0.0, r) if long_x else (0.0, float(c), r) for c in centers]


def place(builder: SceneBuilder, obj: Composite, x: float, y: float, yaw: float, instance: int) -> None:
    """Add ``obj``'s parts to ``builder`` yawed by ``yaw`` about z and moved to (x, y)."""
    c, s = math.cos(yaw), math.sin(yaw)

    def move(p: tuple) -> tuple[float, float, float]:
        return (x + c * p[0] - s * p[1], y + s * p[0] + c * p[1], p[2])

    for kind, *args in obj.parts:
        if kind == "box":
            builder.add_box(move(args[0]), args[1], args[2], yaw=yaw, instance=instance)
        elif kind == "cylinder":
            builder.add_cylinder(move(args[0]), args[1], args[2], args[3], instance=instance)
        else:
            builder.add_sphere(move(args[0]), args[1], args[2], instance=instance)


def _wood(rng: np.random.Generator) -> Material:
    return random_material(
        rng,
        ("stripes", "noise"),
        scale=(0.01, 0.05),
        hue=(0.05, 0.12),
        saturation=(0.3, 0.7),
        value=(0.3, 0.8),
    )


def _any(rng: np.random.Generator) -> Material:
    return random_material(rng, scale=(0.03, 0.25))


def _legs(
    obj: Composite, rng: np.random.Generator, hx: float, hy: float, height: float, mat: Material
) -> None:
    round_legs = rng.random() < 0.5
    w = rng.uniform(0.03, 0.06)
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * (hx - w), sy * (hy - w)
            if round_legs:
                obj.cylinder((lx, ly, 0.0), w / 2, height, mat)
            else:
                obj.box((lx, ly, height / 2), (w, w, height), mat)


def table(rng: np.random.Generator) -> Composite:
    hx, hy, h = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.5), rng.uniform(0.68, 0.78)
    obj, top = Composite(hx, hy), _wood(rng)
    obj.box((0.0, 0.0, h - 0.02), (2 * hx, 2 * hy, 0.04), top)
    _legs(obj, rng, hx, hy, h - 0.04, top if rng.random() < 0.5 else _any(rng))
    if rng.random() < 0.5:  # something on the table
        r = rng.uniform(0.04, 0.1)
        obj.cylinder(
            (rng.uniform(-hx, hx) * 0.6, rng.uniform(-hy, hy) * 0.6, h), r, rng.uniform(0.08, 0.3), _any(rng)
        )
    return obj


def chair(rng: np.random.Generator) -> Composite:
    half, seat = rng.uniform(0.2, 0.26), rng.uniform(0.42, 0.48)
    obj, mat = Composite(half, half), _any(rng)
    obj.box((0.0, 0.0, seat - 0.02), (2 * half, 2 * half, 0.04), mat)
    _legs(obj, rng, half, half, seat - 0.04, mat)
    back = rng.uniform(0.35, 0.5)
    obj.box((0.0, -half + 0.02, seat + back / 2), (2 * half, 0.04, back), mat)
    return obj


def shelf(rng: np.random.Generator) -> Composite:
    hx, hy, h = rng.uniform(0.3, 0.8), rng.uniform(0.14, 0.2), rng.uniform(1.0, 2.0)
    obj, mat, t = Composite(hx, hy, against_wall=True), _wood(rng), 0.02
    obj.box((-hx + t / 2, 0.0, h / 2), (t, 2 * hy, h), mat)
    obj.box((hx - t / 2, 0.0, h / 2), (t, 2 * hy, h), mat)
    obj.box((0.0, -hy + t / 2, h / 2), (2 * hx, t, h), mat)
    boards = int(rng.integers(3, 6))
    for i in range(boards):
        z = t / 2 + i * (h - t) / (boards - 1)
        obj.box((0.0, 0.0, z), (2 * hx, 2 * hy, t), mat)
        if i < boards - 1 and rng.random() < 0.6:  # a row of "books"
            bw, bh = rng.uniform(0.15, 0.5) * hx, rng.uniform(0.5, 0.8) * (h - t) / (boards - 1)
            bx = rng.uniform(-hx + bw + t, hx - bw - t)
            obj.box((bx, 0.0, z + t / 2 + bh / 2), (2 * bw, 1.6 * hy, bh), _any(rng))
    return obj


def cabinet(rng: np.random.Generator) -> Composite:
    hx, hy, h = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.3), rng.uniform(0.5, 1.1)
    obj = Composite(hx, hy, against_wall=True)
    obj.box((0.0, 0.0, h / 2), (2 * hx, 2 * hy, h), _any(rng))
    if rng.random() < 0.5:
        obj.sphere((rng.uniform(-0.5, 0.5) * hx, 0.0, h + 0.1), 0.1, _any(rng))
    return obj


def sofa(rng: np.random.Generator) -> Composite:
    hx, hy = rng.uniform(0.7, 1.1), rng.uniform(0.4, 0.48)
    obj, mat = (
        Composite(hx, hy, against_wall=True),
        random_material(rng, ("noise", "checker"), scale=(0.02, 0.1)),
    )
    obj.box((0.0, 0.0, 0.21), (2 * hx, 2 * hy, 0.42), mat)
    obj.box((0.0, -hy + 0.09, 0.62), (2 * hx, 0.18, 0.4), mat)
    for sx in (-1, 1):
        obj.box((sx * (hx - 0.09), 0.0, 0.52), (0.18, 2 * hy, 0.2), mat)
    return obj


def lamp(rng: np.random.Generator) -> Composite:
    base, pole = rng.uniform(0.12, 0.18), rng.uniform(1.2, 1.6)
    obj, metal = Composite(base, base), _any(rng)
    obj.cylinder((0.0, 0.0, 0.0), base, 0.03, metal)
    obj.cylinder((0.0, 0.0, 0.03), rng.uniform(0.012, 0.02), pole, metal)
    shade = random_material(rng, ("noise", "stripes"), value=(0.7, 0.95), saturation=(0.0, 0.3))
    if rng.random() < 0.5:
        obj.sphere((0.0, 0.0, pole + 0.15), rng.uniform(0.12, 0.2), shade)
    else:
        obj.cylinder((0.0, 0.0, pole), rng.uniform(0.15, 0.22), rng.uniform(0.2, 0.3), shade)
    return obj


def ball(rng: np.random.Generator) -> Composite:
    r = rng.uniform(0.1, 0.35)
    obj = Composite(r, r)
    obj.sphere((0.0, 0.0, r), r, random_material(rng, ("checker", "stripes", "noise"), scale=(0.05, 0.2)))
    return obj


def planter(rng: np.random.Generator) -> Composite:
    r, h = rng.uniform(0.12, 0.3), rng.uniform(0.3, 0.8)
    obj = Composite(r, r)
    obj.cylinder((0.0, 0.0, 0.0), r, h, _any(rng))
    if rng.random() < 0.7:
        leaves = random_material(rng, ("noise",), hue=(0.22, 0.4), saturation=(0.4, 0.8), scale=(0.02, 0.06))
        obj.sphere((0.0, 0.0, h + r * 0.8), r * 1.2, leaves)
    return obj


FURNITURE: dict[str, Callable[[np.random.Generator], Composite]] = {
    "table": table,
    "chair": chair,
    "shelf": shelf,
    "cabinet": cabinet,
    "sofa": sofa,
    "lamp": lamp,
    "ball": ball,
    "planter": planter,
}
