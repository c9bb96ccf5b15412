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

from .camera import Intrinsics, camera_pose, pose_to_translation_quaternion
from .families import FAMILIES, IndoorConfig, OutdoorConfig, family_config
from .record import RecordingSummary, make_intrinsics, record_sequence
from .renderer import Frame, Renderer
from .scene import Layout, Lights, Scene, SceneBuilder
from .sequence import World, make_world, render_sequence
from .textures import Material
from .trajectory import TRAJECTORIES, MotionConfig, make_trajectory

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
