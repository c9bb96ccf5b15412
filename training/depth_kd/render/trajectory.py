"""Camera paths like a robot's: ``drive`` (ground robot) and ``handheld`` (a walking person).

Both steer a point through the scene's :class:`~depth_kd.render.scene.Layout` with a smooth wandering yaw
rate, turn away from walls and obstacles seen by three look-ahead probes, and never accept a step that
ends closer than ``MotionConfig.clearance`` to a wall or an obstacle footprint (it then turns in place).
Per frame the step is at most ``speed / rate_hz`` metres and the heading changes by at most
``max_yaw_rate / rate_hz`` radians; ``handheld`` adds small smooth bob, roll, pitch and yaw sway on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import camera_pose
from .names import TRAJECTORIES
from .scene import Layout


@dataclass(frozen=True)
class MotionConfig:
    """How the camera moves in one scene family (metres, seconds, radians; positive pitch looks down)."""

    drive_height: float = 0.45
    drive_speed: float = 0.5
    drive_pitch: float = 0.0
    handheld_height: float = 1.5
    walk_speed: float = 0.9
    handheld_pitch: float = 0.15
    max_yaw_rate: float = 0.6
    clearance: float = 0.35
    sway: float = 1.0  # scale of the handheld sway amplitudes


def _start(layout: Layout, rng: np.random.Generator, clearance: float) -> tuple[float, float, float]:
    """A start point with room around it and the heading with the longest free run from it."""
    x0, x1, y0, y1 = layout.bounds
    best, best_c = (0.5 * (x0 + x1), 0.5 * (y0 + y1)), -math.inf
    for _ in range(400):
        p = (rng.uniform(x0, x1), rng.uniform(y0, y1))
        c = layout.clearance(*p)
        if c > best_c:
            best, best_c = p, c
        if c > 3.0 * clearance:
            break
    headings = np.linspace(0.0, 2.0 * math.pi, 16, endpoint=False) + rng.uniform(0.0, 0.4)
    runs = [_free_run(layout, best, h, clearance) for h in headings]
    return best[0], best[1], float(headings[int(np.argmax(runs))])


def _free_run(
    layout: Layout,
    p: tuple[float, float],
    heading: float,
    clearance: float,
    step: float = 0.25,
    limit: float = 10.0,
) -> float:
    dist = 0.0
    while dist < limit:
        q = (p[0] + (dist + step) * math.cos(heading), p[1] + (dist + step) * math.sin(heading))
        if layout.clearance(*q) < clearance:
            break
        dist += step
    return dist


def _wander(rng: np.random.Generator, amplitude: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three slow sinusoids (frequency Hz, phase, amplitude) that sum to a smooth yaw rate."""
    return (
        rng.uniform(0.03, 0.15, 3),
        rng.uniform(0.0, 2.0 * math.pi, 3),
        amplitude * rng.uniform(0.2, 0.5, 3),
    )


def make_trajectory(
    kind: str,
    layout: Layout,
    frames: int,
    rate_hz: float,
    rng: np.random.Generator,
    motion: MotionConfig | None = None,
) -> np.ndarray:
    """World-from-camera poses (frames, 4, 4) for ``kind`` in ``TRAJECTORIES``, sampled at ``rate_hz``."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {kind!r}; known: {', '.join(TRAJECTORIES)}")
    m = motion or MotionConfig()
    handheld = kind == "handheld"
    speed = m.walk_speed if handheld else m.drive_speed
    dt = 1.0 / rate_hz
    look = max(0.8, 1.5 * speed)
    x, y, yaw = _start(layout, rng, m.clearance)
    freq, phase, amp = _wander(rng, m.max_yaw_rate)
    turn_dir = 1.0 if rng.random() < 0.5 else -1.0
    sway_phase = rng.uniform(0.0, 2.0 * math.pi, 5)
    step_hz = rng.uniform(1.6, 2.0)
    omega, v = 0.0, 0.0
    smooth = min(1.0, dt / 0.5)
    poses = np.empty((frames, 4, 4))
    for i in range(frames):
        t = i * dt
        poses[i] = _pose(m, handheld, x, y, yaw, t, step_hz, sway_phase)
        probes = [
            layout.clearance(x + look * math.cos(yaw + a), y + look * math.sin(yaw + a))
            for a in (0.5, 0.0, -0.5)
        ]
        target = float(np.sum(amp * np.sin(2.0 * math.pi * freq * t + phase)))
        if min(probes) < look:
            target += 2.0 * (probes[0] - probes[2]) / look
        blocked = probes[1] < m.clearance
        if blocked:
            target = turn_dir * m.max_yaw_rate
        omega += (np.clip(target, -m.max_yaw_rate, m.max_yaw_rate) - omega) * smooth
        v_target = 0.0 if blocked else speed * float(np.clip(probes[1] / look, 0.0, 1.0))
        v += (v_target - v) * smooth
        yaw += omega * dt
        nx, ny = x + v * dt * math.cos(yaw), y + v * dt * math.sin(yaw)
        if layout.clearance(nx, ny) >= m.clearance:
            x, y = nx, ny
        else:
            v = 0.0
    return poses


def _pose(
    m: MotionConfig, handheld: bool, x: float, y: float, yaw: float, t: float, step_hz: float, ph: np.ndarray
) -> np.ndarray:
    if not handheld:
        return camera_pose(np.array([x, y, m.drive_height]), 0.0, m.drive_pitch, yaw)
    w = 2.0 * math.pi * step_hz * t
    s = m.sway
    lateral = 0.015 * s * math.sin(0.5 * w + ph[0])
    position = np.array(
        [
            x - lateral * math.sin(yaw),
            y + lateral * math.cos(yaw),
            m.handheld_height + 0.02 * s * math.sin(w + ph[1]),
        ]
    )
    roll = 0.03 * s * math.sin(0.5 * w + ph[2])
    pitch = m.handheld_pitch + 0.02 * s * math.sin(w + ph[3]) + 0.05 * s * math.sin(0.1 * w + ph[4])
    return camera_pose(position, roll, pitch, yaw + 0.03 * s * math.sin(0.5 * w + ph[0] + 1.0))
