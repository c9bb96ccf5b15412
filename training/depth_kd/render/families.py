"""Scene families: one dataclass of distribution parameters per family, and named presets (domains).

- ``IndoorConfig``: a room (walls, floor and ceiling are the inside of one box) furnished with composites
  from furniture.py, posters and rugs. Room size sets the depth range (up to the room diagonal).
- ``OutdoorConfig``: a ground plane, buildings, props (trees, poles, cars, rocks) and a sky dome of finite
  radius, so every pixel has a depth (up to about the dome radius), with distance fog.

Presets: ``indoor`` (the labelled target domain, NYU-like rooms), ``indoor_large`` (an auxiliary domain of
similar kind and scale: halls and offices, more clutter), ``outdoor`` (out of distribution). Define another
domain with ``dataclasses.replace(FAMILIES["indoor"], room_width=(...))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .furniture import FURNITURE, Composite, place
from .scene import Layout, Lights, SceneBuilder
from .textures import Material, random_color, random_material
from .trajectory import MotionConfig

Range = tuple[float, float]


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _count(rng: np.random.Generator, r: tuple[int, int]) -> int:
    return int(rng.integers(r[0], r[1] + 1))


@dataclass(frozen=True)
class IndoorConfig:
    """Distribution of rooms (metres). Counts are inclusive integer ranges."""

    room_width: Range = (3.0, 6.5)
    room_length: Range = (3.5, 8.0)
    room_height: Range = (2.4, 3.0)
    object_count: tuple[int, int] = (4, 9)
    object_weights: tuple[tuple[str, float], ...] = (
        ("table", 2.0),
        ("chair", 2.0),
        ("shelf", 1.5),
        ("cabinet", 1.5),
        ("sofa", 1.0),
        ("lamp", 1.0),
        ("ball", 0.7),
        ("planter", 1.0),
    )
    decor_count: tuple[int, int] = (0, 4)  # posters / doors on walls
    rug_probability: float = 0.5
    texture_scale: Range = (0.05, 0.5)
    motion: MotionConfig = field(default_factory=MotionConfig)

    def build(self, rng: np.random.Generator) -> SceneBuilder:
        return build_indoor(self, rng)


@dataclass(frozen=True)
class OutdoorConfig:
    """Distribution of outdoor blocks (metres)."""

    area_half_size: Range = (20.0, 40.0)  # the camera stays in this square around the origin
    dome_radius: Range = (120.0, 180.0)
    building_count: tuple[int, int] = (8, 16)
    building_footprint: Range = (4.0, 18.0)
    building_height: Range = (3.0, 25.0)
    prop_count: tuple[int, int] = (10, 25)
    fog_distance: Range = (60.0, 160.0)
    texture_scale: Range = (0.2, 2.0)
    motion: MotionConfig = field(
        default_factory=lambda: MotionConfig(
            drive_height=0.7, drive_speed=1.5, handheld_height=1.6, walk_speed=1.3, clearance=1.0
        )
    )

    def build(self, rng: np.random.Generator) -> SceneBuilder:
        return build_outdoor(self, rng)


FamilyConfig = IndoorConfig | OutdoorConfig

FAMILIES: dict[str, FamilyConfig] = {
    "indoor": IndoorConfig(),
    "indoor_large": IndoorConfig(
        room_width=(6.0, 12.0),
        room_length=(7.0, 16.0),
        room_height=(2.8, 4.5),
        object_count=(8, 16),
        decor_count=(2, 6),
        texture_scale=(0.05, 0.8),
    ),
    "outdoor": OutdoorConfig(),
}


def family_config(family: str | FamilyConfig) -> FamilyConfig:
    """The preset called ``family`` (or ``family`` itself if it already is a config)."""
    if isinstance(family, str):
        if family not in FAMILIES:
            raise KeyError(f"unknown scene family {family!r}; known: {', '.join(sorted(FAMILIES))}")
        return FAMILIES[family]
    return family


def _fits(
    circles: list[tuple[float, float, float]],
    taken: list[tuple[float, float, float]],
    bounds: tuple[float, float, float, float],
) -> bool:
    x0, x1, y0, y1 = bounds
    for x, y, r in circles:  # covering circles overshoot the footprint: only half of r must be inside
        if x - r / 2 < x0 or x + r / 2 > x1 or y - r / 2 < y0 or y + r / 2 > y1:
            return False
        if any(math.hypot(x - tx, y - ty) < r + tr for tx, ty, tr in taken):
            return False
    return True


def _world_circles(obj: Composite, x: float, y: float, yaw: float) -> list[tuple[float, float, float]]:
    c, s = math.cos(yaw), math.sin(yaw)
    return [(x + c * cx - s * cy, y + s * cx + c * cy, r) for cx, cy, r in obj.footprint()]


def _placement(
    rng: np.random.Generator, obj: Composite, width: float, length: float
) -> tuple[float, float, float]:
    """A random pose for ``obj``: back against a random wall if it belongs there, else anywhere."""
    if not obj.against_wall:
        return rng.uniform(0.0, width), rng.uniform(0.0, length), rng.uniform(0.0, 2.0 * math.pi)
    wall = int(rng.integers(4))
    outward = [(-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0)][wall]
    yaw = math.atan2(outward[0], -outward[1])  # object -y (its back) points out of the room
    gap = obj.half_y + 0.03
    along = rng.uniform(obj.half_x, (length if wall < 2 else width) - obj.half_x)
    if wall < 2:
        return (gap if wall == 0 else width - gap), along, yaw
    return along, (gap if wall == 2 else length - gap), yaw


def build_indoor(cfg: IndoorConfig, rng: np.random.Generator) -> SceneBuilder:
    """One random room from ``cfg``: the room spans [0, W] x [0, L] x [0, H]."""
    width, length, height = (
        _uniform(rng, cfg.room_width),
        _uniform(rng, cfg.room_length),
        _uniform(rng, cfg.room_height),
    )
    scale = cfg.texture_scale
    wall = random_material(
        rng, ("noise", "stripes", "tiles"), scale=scale, saturation=(0.0, 0.4), value=(0.5, 0.95)
    )
    walls = [
        wall
        if rng.random() < 0.6
        else random_material(
            rng, ("noise", "stripes", "tiles"), scale=scale, saturation=(0.0, 0.4), value=(0.5, 0.95)
        )
        for _ in range(4)
    ]
    floor = random_material(
        rng, ("tiles", "checker", "stripes", "noise"), scale=(0.1, 0.5), value=(0.25, 0.8)
    )
    ceiling = random_material(
        rng,
        ("noise", "tiles"),
        scale=(0.3, 0.8),
        saturation=(0.0, 0.1),
        value=(0.75, 0.95),
        contrast=(0.05, 0.2),
    )
    lights = Lights(
        sun_direction=(rng.normal(), rng.normal(), rng.uniform(0.3, 1.0)),
        sun_intensity=_uniform(rng, (0.2, 0.5)),
        point_position=(rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * length, height - 0.2),
        point_intensity=_uniform(rng, (0.5, 1.0)),
        point_range=_uniform(rng, (2.0, 4.0)),
        ambient=_uniform(rng, (0.25, 0.4)),
        color=tuple(1.0 - 0.15 * np.asarray(random_color(rng, (0.0, 1.0), (0.0, 1.0)))),
    )
    builder = SceneBuilder(lights=lights)
    builder.add_box((width / 2, length / 2, height / 2), (width, length, height), [*walls, floor, ceiling])

    names, weights = zip(*cfg.object_weights, strict=True)
    p = np.asarray(weights) / np.sum(weights)
    taken: list[tuple[float, float, float]] = []
    for _ in range(_count(rng, cfg.object_count)):
        obj = FURNITURE[names[int(rng.choice(len(names), p=p))]](rng)
        for _ in range(30):
            x, y, yaw = _placement(rng, obj, width, length)
            circles = _world_circles(obj, x, y, yaw)
            if _fits(circles, taken, (0.0, width, 0.0, length)):
                place(builder, obj, x, y, yaw, builder.new_instance())
                taken.extend(circles)
                break
    _decorate(builder, rng, cfg, width, length, height)
    builder.layout = Layout(
        0.0, (0.0, width, 0.0, length), np.asarray(taken, dtype=np.float64).reshape(-1, 3)
    )
    return builder


def _decorate(
    builder: SceneBuilder,
    rng: np.random.Generator,
    cfg: IndoorConfig,
    width: float,
    length: float,
    height: float,
) -> None:
    """Posters and doors flat on the walls, a rug on the floor (not obstacles)."""
    up = (0.0, 0.0, 1.0)
    for _ in range(_count(rng, cfg.decor_count)):
        door = rng.random() < 0.3
        w, h = (0.9, 2.0) if door else (rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0))
        z = h / 2 if door else rng.uniform(1.1, min(1.9, height - h / 2 - 0.1))
        wall = int(rng.integers(4))
        span = length if wall < 2 else width
        along = rng.uniform(w / 2 + 0.05, span - w / 2 - 0.05)
        eps = 0.01
        center, e1 = [
            ((eps, along, z), (0.0, 1.0, 0.0)),
            ((width - eps, along, z), (0.0, 1.0, 0.0)),
            ((along, eps, z), (1.0, 0.0, 0.0)),
            ((along, length - eps, z), (1.0, 0.0, 0.0)),
        ][wall]
        mat = (
            random_material(rng, ("stripes", "noise"), scale=(0.05, 0.2), value=(0.3, 0.8))
            if door
            else random_material(rng, scale=(0.02, 0.2))
        )
        builder.add_quad(center, e1, up, (w, h), mat, instance=builder.new_instance())
    if rng.random() < cfg.rug_probability:
        w, h = rng.uniform(1.0, 0.7 * width), rng.uniform(1.0, 0.7 * length)
        c = (rng.uniform(w / 2, width - w / 2), rng.uniform(h / 2, length - h / 2), 0.005)
        builder.add_quad(
            c,
            (1.0, 0.0, 0.0),
            (0.0, 1.0, 0.0),
            (w, h),
            random_material(rng, ("checker", "stripes", "noise"), scale=(0.05, 0.3)),
            instance=builder.new_instance(),
        )


def _prop(rng: np.random.Generator, scale: Range) -> Composite:
    """A street prop: tree, pole, car, rock or bin."""
    kind = rng.choice(["tree", "pole", "car", "rock", "bin"], p=[0.35, 0.2, 0.2, 0.15, 0.1])
    if kind == "tree":
        r, h = rng.uniform(0.12, 0.3), rng.uniform(1.5, 4.0)
        obj = Composite(r, r)
        obj.cylinder(
            (0.0, 0.0, 0.0),
            r,
            h,
            random_material(rng, ("noise", "stripes"), scale=(0.05, 0.2), hue=(0.05, 0.1), value=(0.2, 0.5)),
        )
        crown = rng.uniform(1.0, 2.5)
        obj.sphere(
            (0.0, 0.0, h + 0.6 * crown),
            crown,
            random_material(
                rng, ("noise",), scale=(0.1, 0.4), hue=(0.2, 0.4), saturation=(0.4, 0.8), value=(0.2, 0.6)
            ),
        )
    elif kind == "pole":
        r = rng.uniform(0.05, 0.15)
        obj = Composite(r, r)
        obj.cylinder((0.0, 0.0, 0.0), r, rng.uniform(3.0, 8.0), random_material(rng, scale=scale))
    elif kind == "car":
        hx, hy = rng.uniform(1.8, 2.4), rng.uniform(0.85, 1.0)
        obj, paint = (
            Composite(hx, hy),
            random_material(rng, ("noise",), scale=(0.2, 0.5), contrast=(0.05, 0.2)),
        )
        obj.box((0.0, 0.0, 0.65), (2 * hx, 2 * hy, 0.8), paint)
        obj.box((-0.2, 0.0, 1.3), (1.1 * hx, 1.8 * hy, 0.55), random_material(rng, scale=(0.1, 0.4)))
    elif kind == "rock":
        r = rng.uniform(0.3, 1.2)
        obj = Composite(r, r)
        obj.sphere(
            (0.0, 0.0, 0.3 * r), r, random_material(rng, ("noise",), scale=(0.05, 0.3), saturation=(0.0, 0.2))
        )
    else:
        r = rng.uniform(0.25, 0.4)
        obj = Composite(r, r)
        obj.cylinder((0.0, 0.0, 0.0), r, rng.uniform(0.8, 1.1), random_material(rng, scale=(0.05, 0.2)))
    return obj


def build_outdoor(cfg: OutdoorConfig, rng: np.random.Generator) -> SceneBuilder:
    """One random outdoor block centred on the origin, enclosed by a sky dome."""
    half, dome = _uniform(rng, cfg.area_half_size), _uniform(rng, cfg.dome_radius)
    horizon = np.asarray(random_color(rng, (0.05, 0.25), (0.75, 0.95), (0.5, 0.7)))
    zenith = np.asarray(random_color(rng, (0.4, 0.8), (0.5, 0.85), (0.55, 0.65)))
    sun_elevation = rng.uniform(0.3, 1.2)
    sun_azimuth = rng.uniform(0.0, 2.0 * math.pi)
    lights = Lights(
        sun_direction=(
            math.cos(sun_elevation) * math.cos(sun_azimuth),
            math.cos(sun_elevation) * math.sin(sun_azimuth),
            math.sin(sun_elevation),
        ),
        sun_intensity=_uniform(rng, (0.6, 0.9)),
        ambient=_uniform(rng, (0.3, 0.45)),
        fog_distance=_uniform(rng, cfg.fog_distance),
        fog_color=tuple(float(c) for c in horizon),
        background=tuple(float(c) for c in horizon),
    )
    builder = SceneBuilder(lights=lights)
    sky = Material("sky", tuple(float(c) for c in horizon), tuple(float(c) for c in zenith), 1.0)
    builder.add_sphere((0.0, 0.0, 0.0), dome, sky)
    ground = random_material(
        rng, ("noise", "tiles", "checker"), scale=(0.3, 2.0), saturation=(0.05, 0.5), value=(0.25, 0.6)
    )
    builder.add_quad((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (2.0 * dome, 2.0 * dome), ground)

    taken: list[tuple[float, float, float]] = []
    reach = 1.8 * half
    for _ in range(_count(rng, cfg.building_count)):
        fx, fy = _uniform(rng, cfg.building_footprint), _uniform(rng, cfg.building_footprint)
        obj = Composite(fx / 2, fy / 2)
        height = _uniform(rng, cfg.building_height)
        obj.box(
            (0.0, 0.0, height / 2),
            (fx, fy, height),
            random_material(
                rng, ("tiles", "checker", "stripes", "noise"), scale=cfg.texture_scale, value=(0.3, 0.9)
            ),
        )
        _scatter(builder, rng, obj, taken, reach)
    for _ in range(_count(rng, cfg.prop_count)):
        _scatter(builder, rng, _prop(rng, cfg.texture_scale), taken, half)
    builder.layout = Layout(
        0.0, (-half, half, -half, half), np.asarray(taken, dtype=np.float64).reshape(-1, 3)
    )
    return builder


def _scatter(
    builder: SceneBuilder,
    rng: np.random.Generator,
    obj: Composite,
    taken: list[tuple[float, float, float]],
    reach: float,
) -> None:
    for _ in range(30):
        x, y, yaw = rng.uniform(-reach, reach), rng.uniform(-reach, reach), rng.uniform(0.0, 2.0 * math.pi)
        circles = _world_circles(obj, x, y, yaw)
        if _fits(circles, taken, (-reach, reach, -reach, reach)):
            place(builder, obj, x, y, yaw, builder.new_instance())
            taken.extend(circles)
            return
