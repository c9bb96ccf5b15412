"""Write a rendered sequence as a rosbag2 recording (MCAP or sqlite3) with the rosbags library.

Topics (all messages of one frame share its stamp; image headers carry ``camera_optical_frame``):

========================================  ============================  ==================================
topic                                     type                          content
========================================  ============================  ==================================
/camera/image_raw                         sensor_msgs/msg/Image         rgb8
/camera/camera_info                       sensor_msgs/msg/CameraInfo    plumb_bob, zero distortion, K, P
/camera/depth/image                       sensor_msgs/msg/Image         32FC1 ground truth, metres
/camera/instances                         sensor_msgs/msg/Image         16UC1 instance ids (0 = structure)
/tf                                       tf2_msgs/msg/TFMessage        world -> camera_optical_frame
/camera/image_raw/compressed (optional)   sensor_msgs/msg/CompressedImage  jpeg
========================================  ============================  ==================================
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from .camera import Intrinsics, pose_to_translation_quaternion
from .families import FamilyConfig, family_config
from .renderer import Frame
from .sequence import render_sequence
from .trajectory import TRAJECTORIES

log = logging.getLogger(__name__)

WORLD_FRAME = "world"
CAMERA_FRAME = "camera_optical_frame"
DEFAULT_START_NS = 1_700_000_000 * 10**9  # fixed, so that recordings are reproducible
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
TOPICS = {
    "image": ("/camera/image_raw", "sensor_msgs/msg/Image"),
    "info": ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
    "depth": ("/camera/depth/image", "sensor_msgs/msg/Image"),
    "instances": ("/camera/instances", "sensor_msgs/msg/Image"),
    "tf": ("/tf", "tf2_msgs/msg/TFMessage"),
    "compressed": ("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
}
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class RecordingSummary:
    """What :func:`record_sequence` wrote."""

    path: Path
    frames: int
    topics: tuple[str, ...]
    intrinsics: Intrinsics
    start_ns: int
    period_ns: int


class _Messages:
    """Builds the serialized messages of one frame."""

    def __init__(self, intrinsics: Intrinsics) -> None:
        t = TYPESTORE.types
        self.t = t
        self.k = intrinsics

    def header(self, stamp_ns: int, frame_id: str = CAMERA_FRAME):
        time = self.t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image(self, stamp_ns: int, array: np.ndarray, encoding: str) -> bytes:
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        msg = self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0 if _LITTLE_ENDIAN or array.itemsize == 1 else 1,
            step=array.strides[0],
            data=array.reshape(-1).view(np.uint8),
        )
        return TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image")

    def camera_info(self, stamp_ns: int) -> bytes:
        k = self.k
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        msg = self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns),
            height=k.height,
            width=k.width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=np.array(k.k),
            r=np.eye(3).reshape(-1),
            p=np.array(k.p),
            binning_x=0,
            binning_y=0,
            roi=roi,
        )
        return TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo")

    def tf(self, stamp_ns: int, pose: np.ndarray) -> bytes:
        xyz, q = pose_to_translation_quaternion(pose)
        t = self.t
        transform = t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            rotation=t["geometry_msgs/msg/Quaternion"](
                x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
            ),
        )
        stamped = t["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, WORLD_FRAME), child_frame_id=CAMERA_FRAME, transform=transform
        )
        return TYPESTORE.serialize_cdr(
            t["tf2_msgs/msg/TFMessage"](transforms=[stamped]), "tf2_msgs/msg/TFMessage"
        )

    def compressed(self, stamp_ns: int, rgb: np.ndarray, quality: int = 90) -> bytes:
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        msg = self.t["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns), format="rgb8; jpeg compressed bgr8", data=jpeg.reshape(-1)
        )
        return TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage")

    def frame(self, stamp_ns: int, frame: Frame, compressed: bool) -> dict[str, bytes]:
        out = {
            "image": self.image(stamp_ns, frame.rgb, "rgb8"),
            "info": self.camera_info(stamp_ns),
            "depth": self.image(stamp_ns, frame.depth.astype(np.float32, copy=False), "32FC1"),
            "instances": self.image(stamp_ns, frame.instances.astype(np.uint16, copy=False), "16UC1"),
            "tf": self.tf(stamp_ns, frame.pose),
        }
        if compressed:
            out["compressed"] = self.compressed(stamp_ns, frame.rgb)
        return out


def make_intrinsics(
    width: int, height: int, fx: float | None = None, fov_deg: float | None = None
) -> Intrinsics:
    """Intrinsics from a focal length in pixels, else a horizontal field of view (default 60 degrees)."""
    if fx is not None and fov_deg is not None:
        raise ValueError("give fx or fov_deg, not both")
    if fx is not None:
        return Intrinsics.from_focal(width, height, fx)
    return Intrinsics.from_fov(width, height, 60.0 if fov_deg is None else fov_deg)


def record_sequence(
    out_path: str | Path,
    family: str | FamilyConfig,
    frames: int,
    seed: int,
    width: int,
    height: int,
    storage: str = "mcap",
    rate_hz: float = 10.0,
    compressed: bool = False,
    fx: float | None = None,
    fov_deg: float | None = None,
    trajectory: str = "drive",
    start_ns: int = DEFAULT_START_NS,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> RecordingSummary:
    """Render ``frames`` frames of a ``family`` scene and write them as a new rosbag2 at ``out_path``.

    Frame i is stamped ``start_ns + round(i * 1e9 / rate_hz)``. The bag must not exist yet. If anything
    fails on the way, the partial bag directory is removed and the error re-raised.
    """
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; known: {', '.join(STORAGES)}")
    if frames <= 0 or rate_hz <= 0:
        raise ValueError("frames and rate_hz must be positive")
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {trajectory!r}; known: {', '.join(TRAJECTORIES)}")
    family = family_config(family)
    out_path = Path(out_path)
    intrinsics = make_intrinsics(width, height, fx, fov_deg)
    names = [n for n in TOPICS if compressed or n != "compressed"]
    messages = _Messages(intrinsics)
    sequence = render_sequence(family, frames, seed, intrinsics, trajectory, rate_hz, device)
    writer = Writer(out_path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    try:
        with writer:
            connections = {n: writer.add_connection(*TOPICS[n], typestore=TYPESTORE) for n in names}
            bar = tqdm(
                sequence, total=frames, desc=f"render {out_path.name}", unit="frame", disable=not progress
            )
            for i, frame in enumerate(bar):
                stamp = start_ns + round(i * 1e9 / rate_hz)
                for name, data in messages.frame(stamp, frame.numpy(), compressed).items():
                    writer.write(connections[name], stamp, data)
    except BaseException:
        shutil.rmtree(out_path, ignore_errors=True)
        raise
    log.info("wrote %d frames (%dx%d, %s) to %s", frames, width, height, storage, out_path)
    return RecordingSummary(
        out_path, frames, tuple(TOPICS[n][0] for n in names), intrinsics, start_ns, round(1e9 / rate_hz)
    )
