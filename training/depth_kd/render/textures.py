"""Procedural surface textures, evaluated in surface coordinates anchored on each object.

Every hit reports 2-D surface coordinates in metres on the object it hit (a box face's two in-plane axes,
a sphere's arc lengths, a cylinder's unrolled side, a quad's axes). Patterns are functions of those
coordinates, so a texture's apparent density follows perspective: a monocular depth cue.

A pattern yields a weight ``w`` in [0, 1] and the albedo is ``color_a + w * (color_b - color_a)``.
The "sky" pattern is not textured here: shading paints it as an unlit gradient between its two colours.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch

PATTERNS = ("checker", "stripes", "tiles", "noise", "sky")
PATTERN_IDS = {name: i for i, name in enumerate(PATTERNS)}
SKY_ID = PATTERN_IDS["sky"]


@dataclass(frozen=True)
class Material:
    """One surface's look: a pattern, its two colours (linear RGB in [0, 1]), cell size (m) and rotation."""

    pattern: str = "noise"
    color_a: tuple[float, float, float] = (0.6, 0.6, 0.6)
    color_b: tuple[float, float, float] = (0.4, 0.4, 0.4)
    scale: float = 0.25
    angle: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pattern not in PATTERN_IDS:
            raise ValueError(f"unknown pattern {self.pattern!r}; known: {', '.join(PATTERNS)}")
        if not self.scale > 0.0:
            raise ValueError(f"texture scale must be > 0, got {self.scale}")


def random_color(
    rng: np.random.Generator,
    saturation: tuple[float, float] = (0.05, 0.7),
    value: tuple[float, float] = (0.25, 0.9),
    hue: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float, float]:
    """A colour drawn uniformly in an HSV box."""
    h = rng.uniform(*hue) % 1.0
    return colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value))


def random_material(
    rng: np.random.Generator,
    patterns: tuple[str, ...] = ("checker", "stripes", "tiles", "noise"),
    scale: tuple[float, float] = (0.05, 0.4),
    saturation: tuple[float, float] = (0.05, 0.7),
    value: tuple[float, float] = (0.25, 0.9),
    hue: tuple[float, float] = (0.0, 1.0),
    contrast: tuple[float, float] = (0.25, 0.7),
) -> Material:
    """A random material: pattern from ``patterns``, second colour a darker/shifted version of the first."""
    pattern = patterns[int(rng.integers(len(patterns)))]
    a = np.asarray(random_color(rng, saturation, value, hue))
    b = np.clip(a * (1.0 - rng.uniform(*contrast)) + rng.normal(0.0, 0.06, 3), 0.0, 1.0)
    angle = float(rng.choice([0.0, np.pi / 2])) if rng.random() < 0.7 else float(rng.uniform(0.0, np.pi))
    return Material(
        pattern=pattern,
        color_a=tuple(float(x) for x in a),
        color_b=tuple(float(x) for x in b),
        scale=float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1])))),
        angle=angle,
        seed=int(rng.integers(0, 2**20)),
    )


LATTICE_SEED = 0x5EED  # the noise lattice is fixed; a material's seed picks where it samples it


@dataclass
class MaterialTable:
    """All materials of a scene as tensors, plus the 256 x 256 random lattice that noise and tiles sample."""

    pattern: torch.Tensor  # (M,) int64
    params: torch.Tensor  # (M, 11) float32: color_a(3), color_b(3), 1/scale, cos, sin(angle), offset(2)
    lattice: torch.Tensor  # (65536,) float32 in [0, 1)

    @classmethod
    def from_materials(cls, materials: list[Material], device: torch.device | str) -> MaterialTable:
        params = [
            [
                *m.color_a,
                *m.color_b,
                1.0 / m.scale,
                np.cos(m.angle),
                np.sin(m.angle),
                float(m.seed & 255),
                float((m.seed >> 8) & 255),
            ]
            for m in materials
        ]
        lattice = np.random.default_rng(LATTICE_SEED).random(65536, dtype=np.float32)
        return cls(
            pattern=torch.tensor(
                [PATTERN_IDS[m.pattern] for m in materials], dtype=torch.int64, device=device
            ),
            params=torch.tensor(params, dtype=torch.float32, device=device).reshape(-1, 11),
            lattice=torch.from_numpy(lattice).to(device),
        )


def _lattice(table: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Random value in [0, 1) at integer lattice point (i, j): a lookup in a fixed 256 x 256 table."""
    return table.index_select(0, ((i & 255) << 8) | (j & 255))


def _value_noise(table: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Smoothly interpolated lattice noise in [0, 1) with unit cells."""
    fs, ft = torch.floor(s), torch.floor(t)
    i, j = fs.to(torch.int32), ft.to(torch.int32)
    a, b = s - fs, t - ft
    a = a * a * (3.0 - 2.0 * a)
    b = b * b * (3.0 - 2.0 * b)
    n00, n10 = _lattice(table, i, j), _lattice(table, i + 1, j)
    n01, n11 = _lattice(table, i, j + 1), _lattice(table, i + 1, j + 1)
    top = n00 + a * (n10 - n00)
    bottom = n01 + a * (n11 - n01)
    return top + b * (bottom - top)


def _checker(table: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.remainder(torch.floor(s) + torch.floor(t), 2.0)


def _stripes(table: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.remainder(torch.floor(s), 2.0)


def _tiles(table: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Running-bond bricks two cells wide with grout lines (w = 1) and a random shade per brick."""
    row = torch.floor(t)
    sx = 0.5 * s + 0.5 * torch.remainder(row, 2.0)
    col = torch.floor(sx)
    grout = ((sx - col) < 0.04) | ((t - row) < 0.08)
    shade = 0.4 * _lattice(table, col.to(torch.int32), row.to(torch.int32))
    return torch.where(grout, torch.ones_like(shade), shade)


def _noise(table: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    n = 0.65 * _value_noise(table, s, t) + 0.35 * _value_noise(table, 2.03 * s + 7.1, 2.03 * t + 3.7)
    return ((n - 0.5) * 1.8 + 0.5).clamp(0.0, 1.0)


_PATTERN_FNS = {
    PATTERN_IDS["checker"]: _checker,
    PATTERN_IDS["stripes"]: _stripes,
    PATTERN_IDS["tiles"]: _tiles,
    PATTERN_IDS["noise"]: _noise,
}


def albedo(table: MaterialTable, material: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Albedo (P, 3) for P hits with material indices ``material`` (P,) and surface coordinates ``uv`` (P, 2).

    Each pattern is evaluated only on the hits that use it (one batch per pattern, not per object).
    """
    p = table.params.index_select(0, material)
    inv_scale, cos_a, sin_a = p[:, 6], p[:, 7], p[:, 8]
    s = (cos_a * uv[:, 0] + sin_a * uv[:, 1]) * inv_scale + p[:, 9]
    t = (cos_a * uv[:, 1] - sin_a * uv[:, 0]) * inv_scale + p[:, 10]
    pattern = table.pattern.index_select(0, material)
    weight = torch.zeros_like(s)
    for pattern_id, fn in _PATTERN_FNS.items():
        idx = torch.nonzero(pattern == pattern_id).squeeze(1)
        if idx.numel():
            weight.index_copy_(0, idx, fn(table.lattice, s.index_select(0, idx), t.index_select(0, idx)))
    color_a, color_b = p[:, 0:3], p[:, 3:6]
    return color_a + weight[:, None] * (color_b - color_a)
