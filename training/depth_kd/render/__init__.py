"""Synthetic camera world: analytic scenes, a vectorised torch ray caster, trajectories and rosbag2 output.

Typical use::

    from depth_kd.render import Intrinsics, render_sequence, record_sequence
    for frame in render_sequence("indoor", frames=100, seed=0, intrinsics=Intrinsics.from_fov(640, 480)):
        f = frame.numpy()  # f.rgb uint8 HxWx3, f.depth float32 HxW metres, f.instances uint16, f.pose 4x4
    record_sequence("out_bag", "indoor", frames=100, seed=0, width=640, height=480)

Modules: camera (intrinsics, rays, poses), shapes (primitive batches), scene (builder, lights, layout),
textures, shading, furniture, families (scene distributions and presets), trajectory, renderer, sequence,
record (rosbag2).
"""

import importlib

# Loaded on first use (PEP 562): most of the renderer needs torch, and `depth_kd.render.names` must not.
_EXPORTS = {
    "Intrinsics": "camera",
    "camera_pose": "camera",
    "pose_to_translation_quaternion": "camera",
    "FAMILIES": "families",
    "IndoorConfig": "families",
    "OutdoorConfig": "families",
    "family_config": "families",
    "RecordingSummary": "record",
    "make_intrinsics": "record",
    "record_sequence": "record",
    "Frame": "renderer",
    "Renderer": "renderer",
    "Layout": "scene",
    "Lights": "scene",
    "Scene": "scene",
    "SceneBuilder": "scene",
    "World": "sequence",
    "make_world": "sequence",
    "render_sequence": "sequence",
    "Material": "textures",
    "TRAJECTORIES": "trajectory",
    "MotionConfig": "trajectory",
    "make_trajectory": "trajectory",
}

__all__ = [
    "FAMILIES",
    "TRAJECTORIES",
    "Frame",
    "IndoorConfig",
    "Intrinsics",
    "Layout",
    "Lights",
    "Material",
    "MotionConfig",
    "OutdoorConfig",
    "RecordingSummary",
    "Renderer",
    "Scene",
    "SceneBuilder",
    "World",
    "camera_pose",
    "family_config",
    "make_intrinsics",
    "make_trajectory",
    "make_world",
    "pose_to_translation_quaternion",
    "record_sequence",
    "render_sequence",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
