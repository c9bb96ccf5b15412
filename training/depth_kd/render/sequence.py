"""A rendered sequence: one random scene of a family, one camera trajectory through it, frame by frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .camera import Intrinsics
from .families import FamilyConfig, family_config
from .renderer import Frame, Renderer
from .scene import Scene
from .trajectory import make_trajectory


@dataclass
class World:
    """A built scene with the poses a camera takes through it."""

    scene: Scene
    poses: np.ndarray  # (frames, 4, 4) world-from-camera


def make_world(
    family: str | FamilyConfig,
    frames: int,
    seed: int,
    trajectory: str = "drive",
    rate_hz: float = 10.0,
    device: torch.device | str = "cpu",
) -> World:
    """Scene and trajectory for ``seed``. The scene depends only on (family, seed), not on ``frames``."""
    cfg = family_config(family)
    scene_rng, path_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    builder = cfg.build(scene_rng)
    poses = make_trajectory(trajectory, builder.layout, frames, rate_hz, path_rng, cfg.motion)
    return World(builder.build(device), poses)


def render_sequence(
    family: str | FamilyConfig,
    frames: int,
    seed: int,
    intrinsics: Intrinsics,
    trajectory: str = "drive",
    rate_hz: float = 10.0,
    device: torch.device | str = "cpu",
) -> Iterator[Frame]:
    """Yield ``frames`` frames (tensors on ``device``); same arguments give byte-identical frames."""
    world = make_world(family, frames, seed, trajectory, rate_hz, device)
    renderer = Renderer(world.scene, intrinsics)
    for pose in world.poses:
        yield renderer.render(pose)
