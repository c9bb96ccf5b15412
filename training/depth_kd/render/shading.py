"""Lambertian shading (sun + point light + hemispheric ambient), the sky gradient, fog and 8-bit output.

All colours are linear RGB in [0, 1] until :func:`to_rgb8`, which applies a gamma of 2 (a cheap stand-in
for sRGB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .scene import Lights
from .shapes import dot


@dataclass
class LightTensors:
    """Lights as tensors on the render device (built once per scene)."""

    sun_direction: torch.Tensor  # (3,) unit, towards the sun
    point_position: torch.Tensor  # (3,)
    color: torch.Tensor  # (3,)
    fog_color: torch.Tensor  # (3,)
    background: torch.Tensor  # (3,)
    lights: Lights

    @classmethod
    def from_lights(cls, lights: Lights, device: torch.device | str) -> LightTensors:
        def vec(values: tuple[float, float, float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        sun = vec(lights.sun_direction)
        return cls(
            sun / sun.norm(),
            vec(lights.point_position),
            vec(lights.color),
            vec(lights.fog_color),
            vec(lights.background),
            lights,
        )


def lambert(
    albedo: torch.Tensor, normal: torch.Tensor, points: torch.Tensor, light: LightTensors
) -> torch.Tensor:
    """Diffuse colour (P, 3) for hits with albedo, unit normals facing the camera, and world positions."""
    cfg = light.lights
    sun = (normal @ light.sun_direction).clamp(min=0.0)
    intensity = cfg.ambient * (0.75 + 0.25 * normal[:, 2]) + cfg.sun_intensity * sun
    if cfg.point_intensity > 0.0:
        to_light = light.point_position - points
        dist2 = dot(to_light, to_light)
        facing = (dot(normal, to_light) * torch.rsqrt(dist2)).clamp(min=0.0)
        range2 = cfg.point_range**2
        intensity = intensity + cfg.point_intensity * facing * (range2 / (range2 + dist2))
    return albedo * intensity[:, None] * light.color


def sky(directions: torch.Tensor, horizon: torch.Tensor, zenith: torch.Tensor) -> torch.Tensor:
    """Unlit gradient from the horizon colour to the zenith colour with elevation, per (P, 3) direction."""
    elevation = directions[:, 2] * torch.rsqrt(dot(directions, directions))
    w = torch.sqrt(elevation.clamp(min=0.0, max=1.0))[:, None]
    return horizon + w * (zenith - horizon)


def fog(color: torch.Tensor, t: torch.Tensor, dirs: torch.Tensor, light: LightTensors) -> torch.Tensor:
    """Blend hits at ray parameter t along dirs towards the fog colour with exp(-distance / fog_distance)."""
    if math.isinf(light.lights.fog_distance):
        return color
    keep = torch.exp(-t * torch.sqrt(dot(dirs, dirs)) / light.lights.fog_distance)[:, None]
    return light.fog_color + keep * (color - light.fog_color)


def to_rgb8(color: torch.Tensor) -> torch.Tensor:
    """Linear [0, 1] colour to uint8 with gamma 2."""
    return (torch.sqrt(color.clamp(0.0, 1.0)) * 255.0 + 0.5).to(torch.uint8)
