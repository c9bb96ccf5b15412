"""``depth-kd infer``: a recording through the node's per-frame path, bag to bag, as fast as the CPU allows.

    depth-kd infer --data BAG[#frames=A:B | #time=T0:T1] --out OUT_BAG [--model M] [--points] [--video out.mp4]
                   [--scale-source depth | ground --camera-height H [--camera-pitch P]]

* **Input**: one image topic (Image or CompressedImage) of a rosbag2 (sqlite3, MCAP) or ROS 1 bag, chosen and
  paired with a CameraInfo topic by the rules of :mod:`depth_kd.data.bags` (``--image-topic``, default
  /camera/image_raw, else the bag's only image-like topic; CameraInfo from the image's namespace), read in
  receive order without decoding anything it does not use. A selection suffix (selection.py) runs part of a recording.
* **Per frame**: the node's own per-frame path, ``pipeline.FramePath`` (``DepthNode.process`` runs it too):
  decode_image, fit_camera_info, estimate_depth, the metric scale (``scale_source``: a :class:`ScaleAnchor`),
  finish_depth, then depth_image, camera_info, colored and (``--points``) cloud. With ``scale_source`` depth the
  metric depth is the bag's depth topic (the latest ones received before the image, matched by stamp as live).
  The CameraInfo is the latest one received before the image, as live; frames before the bag's first CameraInfo
  get that first one (as bags.py does: intrinsics rarely change).
* **Output**: a new MCAP rosbag2 with ``/depth/image``, ``/depth/camera_info``, ``/depth/colored`` and
  (``--points``) ``/depth/points``, the topics the node publishes. Each message carries its input image's
  header (stamp and frame_id) unchanged and is logged at the input image's log time, so the output lines up
  with the input in Foxglove or ``ros2 bag play``. ``--video``: an MP4 preview, RGB | depth (colours
  spanning the scene's depth).
* **Bad input** as on the node: a frame the node would refuse (undecodable, over ``max_image_pixels``) is
  skipped, a CameraInfo that does not fit the image costs that frame its camera_info, points and metric
  rescale; each kind is logged once and counted in the summary. An unreadable bag, a missing topic or a run
  without a single usable frame is one error naming the file. On any failure or Ctrl-C the partial bag and
  video are removed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo
from tqdm import tqdm

from depth_kd.config import DEFAULT_IMAGE_TOPIC
from depth_kd.data.bags import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    depth_topic_candidates,
    header_stamp_ns,
    open_bag,
    pick_camera_info_topic,
    pick_image_topic,
    resolve_bag_path,
    ros2_type_name,
    topic_table,
)
from depth_kd.data.selection import Selection, parse_data_spec
from depth_kd_ros import pipeline
from depth_kd_ros.image_codec import colorize_depth
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.node import METRIC_DEPTH_KEPT, bounded_quote, default_model
from depth_kd_ros.params import NodeParams, validate
from depth_kd_ros.serialized import MessageParseError, cdr_stamp_ns, parse_cdr

__all__ = ["OUTPUT_TOPICS", "InferError", "InferSummary", "check_mp4_writer", "infer_bag"]

log = logging.getLogger(__name__)

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
OUTPUT_TOPICS = {  # output -> (topic, type): the node's outputs, in the root namespace as the node publishes them
    "image": ("/depth/image", IMAGE),
    "camera_info": ("/depth/camera_info", CAMERA_INFO),
    "colored": ("/depth/colored", IMAGE),
    "points": ("/depth/points", POINTCLOUD2),
}
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
VIDEO_FOURCC = "mp4v"
VIDEO_FPS_RANGE = (1.0, 120.0)
WRITE_AHEAD = 3  # frames inferred but not yet written, at most, per output thread: they overlap, memory stays bounded
DEFAULT_VIDEO_FPS = 10.0  # when the bag's image rate cannot be told (a single frame)
# What each kind of bad input costs, for the log and the summary (kinds as the node counts them).
BAD_INPUT_EFFECT = {
    "image": "frame skipped",
    "camera_info": "that frame has no depth/camera_info, no points and no metric rescale",
    "camera_info_message": "ignored: the previous CameraInfo stays in use",
    "metric_depth": "that frame keeps the last metric scale",
}


class InferError(ValueError):
    """The run cannot start or cannot produce a bag; the message names the file and the reason."""


@dataclass
class InferSummary:
    """What :func:`infer_bag` wrote."""

    out: Path
    frames: int  # frames written (each with depth/image and depth/colored)
    with_camera_info: int  # of those, with depth/camera_info (and points when asked)
    seconds: float  # processing wall time, from the first frame read to the bag closed
    video: Path | None = None
    bad_inputs: dict[str, int] = field(default_factory=dict)  # kind -> count, as BAD_INPUT_EFFECT
    scale: dict[str, str] = field(default_factory=dict)  # scale_source: the anchor's last figures, as /diagnostics

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def check_mp4_writer() -> None:
    """Raise InferError unless OpenCV can write an MP4 here (its FFmpeg build has the mp4v encoder)."""
    with tempfile.TemporaryDirectory(prefix="depth_kd_mp4_") as tmp:
        probe = Path(tmp) / "probe.mp4"
        writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), 10.0, (32, 16))
        opened = writer.isOpened()
        if opened:
            writer.write(np.zeros((16, 32, 3), np.uint8))
        writer.release()
        if not opened or not probe.is_file() or probe.stat().st_size == 0:
            raise InferError(f"--video: this OpenCV ({cv2.__version__}) cannot write MP4 ({VIDEO_FOURCC!r} encoder "
                             "missing from its video backend); leave out --video or install opencv-python with FFmpeg")


class _Preview:
    """The MP4 preview: RGB | colour-mapped depth side by side, every frame at the first frame's size.

    The depth panel's colour range follows the scene (2nd to 98th percentile, smoothed over frames, written on
    the panel), where depth/colored spans the model's whole range: 0.1 to 10 m would leave a room one colour.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of one panel
        self._range: np.ndarray | None = None  # (near, far) metres of the colour map

    def add(self, rgb: np.ndarray, depth: np.ndarray) -> None:
        if self._writer is None:
            height, width = rgb.shape[:2]
            self._size = (width + width % 2, height + height % 2)  # MPEG-4 wants even sides
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), self.fps,
                                           (2 * self._size[0], self._size[1]))
            if not self._writer.isOpened():
                raise InferError(f"{self.path}: OpenCV cannot open this MP4 for writing")
        near, far = self._colour_range(depth)
        panels = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), colorize_depth(depth, near, far)]
        panels = [p if p.shape[1::-1] == self._size else cv2.resize(p, self._size, interpolation=cv2.INTER_AREA)
                  for p in panels]
        cv2.putText(panels[1], f"{near:.1f}-{far:.1f} m, near = red", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        self._writer.write(np.hstack(panels))

    def _colour_range(self, depth: np.ndarray) -> tuple[float, float]:
        sample = depth[::4, ::4]
        sample = sample[np.isfinite(sample)]
        if sample.size:
            found = np.percentile(sample, (2, 98))
            self._range = found if self._range is None else 0.9 * self._range + 0.1 * found
        near, far = (float(v) for v in (self._range if self._range is not None else (0.0, 1.0)))
        return near, max(far, near + 0.1)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class _Frames(pipeline.FramePath):
    """The node's per-frame path (pipeline.FramePath, the node's parameters and rules) over a recording: bad
    inputs are counted for the summary and the first of each kind is logged."""

    def __init__(self, estimator: DepthEstimator, params: NodeParams, points: bool) -> None:
        super().__init__(estimator, params, self.bad_input)
        self.points = points
        self.bad = Counter()
        self.near_far()  # ValueError now if the depth limits are outside the model's range

    def bad_input(self, kind: str, message: str) -> None:
        """Count it; log the first of each kind (a bounded quote: the bag's strings are the sender's)."""
        self.bad[kind] += 1
        if self.bad[kind] == 1:
            log.warning("%s (%s; further ones are counted in the summary)", bounded_quote(message),
                        BAD_INPUT_EFFECT[kind])


def _as_cdr(reader: AnyReader, raw: bytes, msgtype: str) -> bytes:
    """ROS 2 CDR bytes of a message as read: rosbag2 gives CDR already, ROS 1 bags their own format (same fields)."""
    return bytes(raw) if reader.is2 else bytes(TYPESTORE.ros1_to_cdr(raw, msgtype))


def _first_camera_info(reader: AnyReader, topic: str | None) -> CameraInfo | None:
    """The bag's first usable CameraInfo on ``topic``: what frames received before any CameraInfo get."""
    if topic is None:
        return None
    for connection, _, raw in reader.messages([c for c in reader.connections if c.topic == topic]):
        info = _camera_info(reader, raw, ros2_type_name(connection.msgtype))
        if info is not None:
            return info
    return None


def _camera_info(reader: AnyReader, raw: bytes, msgtype: str) -> CameraInfo | None:
    """An rclpy CameraInfo (what the pipeline takes), None if the bytes are none."""
    try:
        return deserialize_message(_as_cdr(reader, raw, msgtype), CameraInfo)
    except Exception:  # noqa: BLE001 - rclpy and rosbags raise assorted errors on damaged bytes
        return None


def _video_fps(reader: AnyReader, topic: str) -> float:
    """The image topic's mean rate over the bag, so the preview plays in real time."""
    count = reader.topics[topic].msgcount
    seconds = (reader.end_time - reader.start_time) / 1e9
    if count < 2 or seconds <= 0:
        return DEFAULT_VIDEO_FPS
    return float(np.clip((count - 1) / seconds, *VIDEO_FPS_RANGE))


def _planned_frames(count: int, selection: Selection | None) -> int | None:
    """How many image messages the selection keeps, when that is known before reading (for the progress bar)."""
    if selection is None:
        return count
    if selection.kind != "frames":
        return None
    start = int(selection.start or 0)
    stop = count if selection.stop is None else min(int(selection.stop), count)
    return max(stop - start, 0)


def infer_bag(spec: str, out: str | Path, params: NodeParams | None = None, *, points: bool = False,
              video: str | Path | None = None, image_topic: str | None = DEFAULT_IMAGE_TOPIC,
              camera_info_topic: str | None = "auto", metric_depth_topic: str | None = None,
              progress: bool = True) -> InferSummary:
    """Run every selected frame of the bag ``spec`` through the node's per-frame path into a new MCAP bag ``out``.

    ``params``: the node's settings (model_path empty = the package's default weights; backend, device,
    threads (0 here: all cores, for throughput; the live node's 0 is its auto choice), max_image_pixels,
    min/max_depth, metric_rescale, depth_encoding, points_rgb, points_decimation, scale_source, camera_height,
    camera_pitch, metric_depth_tolerance); ``metric_depth_topic`` (scale_source
    depth): the bag's metric depth topic (None: its only depth topic); ``video``: also write an MP4 preview there.
    ``out`` and ``video`` must not exist. Raises InferError (or BagError, ConfigError, CheckpointError) for bad
    input; whatever is raised, nothing partial is left behind.
    """
    params = params or NodeParams(threads=0)
    try:
        validate(params)
    except ValueError as error:
        raise InferError(str(error)) from None
    out = Path(out)
    video = Path(video) if video is not None else None
    for path in (out, video):
        if path is not None and (path.exists() or path.is_symlink()):
            raise InferError(f"{path} already exists; choose a new path")
    path, selection = parse_data_spec(spec)
    resolve_bag_path(path)  # BagError naming the path for anything that is no bag, before the model loads
    if video is not None:
        check_mp4_writer()
    with open_bag(path) as reader:
        topics = topic_table(reader)
        topic = pick_image_topic(Path(path), topics, image_topic)
        info_topic = pick_camera_info_topic(Path(path), topics, topic, camera_info_topic)
        depth_topic = None
        if params.scale_source == "depth":
            depth_topic = _pick_metric_depth_topic(path, topics, metric_depth_topic)
            compressed_depth = ros2_type_name(topics[depth_topic][0]) == COMPRESSED_IMAGE
            params = replace(params, metric_depth_transport="compressedDepth" if compressed_depth else "raw")
        model = params.model_path or default_model(params.backend, params.device)
        try:
            estimator = DepthEstimator(model, device=params.device, fp16=params.fp16, backend=params.backend,
                                       threads=params.threads)
        except OSError as error:  # here, open_bag would blame the bag
            raise InferError(f"{model}: cannot read the model: {error}") from error
        try:
            frames = _Frames(estimator, params, points)
        except ValueError as error:  # limits outside the model's range
            raise InferError(str(error)) from None
        log.info("%s: %s (%s, %d messages%s), camera info %s%s; model %s on %s", path, topic, topics[topic][0],
                 topics[topic][1], f", {selection.spec()}" if selection else "", info_topic or "none",
                 f", metric scale from {depth_topic or 'the floor'}" if frames.anchor else "", model, estimator.device)
        if info_topic is None:
            log.warning("%s: no CameraInfo for %s: writing depth/image and depth/colored only (no depth/camera_info,"
                        " no points, no metric rescale)", path, topic)
        first_info = _first_camera_info(reader, info_topic)
        estimator.warmup()
        preview = _Preview(video, _video_fps(reader, topic)) if video is not None else None
        try:
            summary = _write(reader, out, frames, preview, path, (topic, info_topic, depth_topic), first_info,
                             selection, _planned_frames(topics[topic][1], selection), progress)
        except BaseException:
            if preview is not None:
                preview.close()
            shutil.rmtree(out, ignore_errors=True)
            if video is not None:
                video.unlink(missing_ok=True)
            raise
    summary.video = video
    summary.bad_inputs = dict(frames.bad)
    summary.scale = frames.anchor.diagnostics() if frames.anchor else {}
    return summary


def _pick_metric_depth_topic(path: str | Path, topics: dict[str, tuple[str, int]], topic: str | None) -> str:
    """scale_source depth: the named topic, else the bag's only depth topic; InferError listing them otherwise."""
    candidates = depth_topic_candidates(topics)
    if topic is not None:
        if topic not in topics:
            raise InferError(f"{path}: no topic {topic} for the metric depth; depth topics: {candidates or 'none'}")
        return topic
    if len(candidates) != 1:
        raise InferError(f"{path}: scale_source depth needs one metric depth topic, the bag has "
                         f"{len(candidates)} ({', '.join(candidates) or 'none'}); name one (--metric-depth-topic)")
    return candidates[0]


class _Selected(NamedTuple):
    """One selected image message, as CDR, with the CameraInfo that applies to it."""

    where: str  # for log lines: its position on the topic and log time
    log_ns: int
    cdr: bytes
    camera_info: CameraInfo | None
    metric_depths: list[tuple[int, bytes]]  # (stamp ns, CDR) of the latest metric depth messages before it


def _selected_images(reader: AnyReader, topic: str, info_topic: str | None, depth_topic: str | None,
                     info: CameraInfo | None, selection: Selection | None, frames: _Frames) -> Iterator[_Selected]:
    """The selected image messages in receive order, each with the latest CameraInfo before it (``info`` at
    first) and the latest metric depth messages; nothing is decoded here, and a ``#frames=`` selection stops
    reading at its end."""
    image_type = ros2_type_name(reader.topics[topic].msgtype)
    wanted = [c for c in reader.connections if c.topic in (topic, info_topic)]
    metric_depths = _MetricDepths(reader, depth_topic, frames)
    tolerance_ns = int(frames.params.metric_depth_tolerance * 1e9)
    position, first_stamp = 0, None
    for connection, log_ns, raw in reader.messages(wanted):
        if connection.topic != topic:
            latest = _camera_info(reader, raw, ros2_type_name(connection.msgtype))
            if latest is None:
                frames.bad_input("camera_info_message", f"unreadable CameraInfo on {info_topic} (log time {log_ns})")
            info = latest or info
            continue
        n, position = position, position + 1
        if selection is not None and selection.kind == "frames":
            if selection.stop is not None and n >= selection.stop:
                return
            if not selection.keeps_position(n):
                continue
        where = f"#{n} on {topic} (log time {log_ns} ns)"
        try:
            cdr = _as_cdr(reader, raw, image_type)
        except Exception as error:  # noqa: BLE001 - a ROS 1 message rosbags cannot convert
            frames.bad_input("image", f"bad image {where}: {type(error).__name__}: {error}")
            continue
        if selection is not None and selection.kind == "time":
            stamp = _stamp(cdr, image_type, log_ns)
            first_stamp = stamp if first_stamp is None else first_stamp
            if not selection.keeps_time(stamp - first_stamp):
                continue
        yield _Selected(where, log_ns, cdr, info, metric_depths.until(log_ns + tolerance_ns))


class _MetricDepths:
    """The metric depth topic, read alongside the images and ahead of them by the matching tolerance: recorders
    log a frame's depth just after its image, where the live node would still receive it in time."""

    def __init__(self, reader: AnyReader, topic: str | None, frames: _Frames) -> None:
        connections = [c for c in reader.connections if c.topic == topic]
        self._reader, self._topic, self._frames = reader, topic, frames
        self._messages = reader.messages(connections) if connections else iter(())
        self._ahead: tuple | None = None  # the first message not yet taken
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=METRIC_DEPTH_KEPT)

    def until(self, limit_ns: int) -> list[tuple[int, bytes]]:
        """(stamp ns, CDR) of the latest messages logged up to ``limit_ns``."""
        while True:
            self._ahead = self._ahead or next(self._messages, None)
            if self._ahead is None or self._ahead[1] > limit_ns:
                return list(self._recent)
            connection, log_ns, raw = self._ahead
            self._ahead = None
            try:
                cdr = _as_cdr(self._reader, raw, ros2_type_name(connection.msgtype))
                self._recent.append((cdr_stamp_ns(cdr), cdr))
            except Exception as error:  # noqa: BLE001 - a ROS 1 message rosbags cannot convert, a truncated one
                self._frames.bad_input("metric_depth", f"unreadable metric depth on {self._topic} (log time "
                                       f"{log_ns}): {type(error).__name__}: {error}")


@contextmanager
def _output_errors(out: Path) -> Iterator[None]:
    """OSError while writing (a full disk) -> InferError naming the output; inside open_bag an OSError would
    read as a corrupt input bag."""
    try:
        yield
    except OSError as error:
        raise InferError(f"{out}: cannot write the bag: {error}") from error


class _Stage:
    """One worker thread that runs jobs in the order given; at most WRITE_AHEAD wait, and a job's exception is
    raised in the caller's thread (by a later ``submit`` or by ``finish``)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future] = deque()

    def submit(self, job: Callable[..., None], *args: object) -> None:
        self._pending.append(self._pool.submit(job, *args))
        while self._pending and (len(self._pending) > WRITE_AHEAD or self._pending[0].done()):
            self._pending.popleft().result()

    def finish(self) -> None:
        """Wait for every job; raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Drop the jobs that have not started, wait for the running one (on failure or Ctrl-C, too)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _write(reader: AnyReader, out: Path, frames: _Frames, preview: _Preview | None, path: str,
           topics: tuple[str, str | None, str | None], info: CameraInfo | None, selection: Selection | None,
           total: int | None, progress: bool) -> InferSummary:
    """Selected frames -> the output bag (and preview). Three threads overlap: this one reads, decodes and
    infers; one encodes and writes the bag, one the preview, each in frame order. ``topics``: image, CameraInfo
    and metric depth topics."""
    topic = topics[0]
    compressed = ros2_type_name(reader.topics[topic].msgtype) == COMPRESSED_IMAGE
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    counts = Counter()
    started = time.perf_counter()
    bar = tqdm(total=total, desc=f"infer {out.name}", unit="frame", disable=not progress)
    stages = [_Stage("infer_bag"), *([_Stage("infer_video")] if preview is not None else [])]

    def emit(frame: pipeline.Frame, log_ns: int) -> None:
        outputs = frames.outputs(frame, names)
        with _output_errors(out):
            for name, data in outputs.items():
                writer.write(connections[name], log_ns, data)
        counts["written"] += 1
        counts["with_camera_info"] += "camera_info" in outputs

    try:
        with _output_errors(out):
            writer.open()
            names = [n for n in OUTPUT_TOPICS if n != "points" or frames.points]
            connections = {n: writer.add_connection(*OUTPUT_TOPICS[n], typestore=TYPESTORE) for n in names}
        for image in _selected_images(reader, *topics, info, selection, frames):
            counts["selected"] += 1
            frame = frames.estimate(image.cdr, compressed, image.camera_info, image.where, image.metric_depths)
            bar.update()
            if frame is not None:
                stages[0].submit(emit, frame, image.log_ns)
                if preview is not None:
                    stages[1].submit(preview.add, frame.rgb, frame.depth)
        for stage in stages:
            stage.finish()
            stage.close()
        if not counts["written"]:
            selected = f"{topic}{selection.spec()}" if selection else topic
            reason = (f"none of its {counts['selected']} selected frames could be decoded" if counts["selected"]
                      else "the selection keeps none of its messages")
            raise InferError(f"{path}: no frame to write from {selected}: {reason}")
        with _output_errors(out):
            writer.close()
        if preview is not None:
            preview.close()
    except BaseException:
        for stage in stages:  # nothing may write once the bag is aborted
            stage.close()
        with suppress(OSError):  # closing flushes, and on a full disk fails again; the bag goes anyway
            writer.abort()
        raise
    finally:
        bar.close()
    return InferSummary(out, counts["written"], counts["with_camera_info"], time.perf_counter() - started)


def _stamp(cdr: bytes, msgtype: str, log_ns: int) -> int:
    """Header stamp (ns; the log time where it is zero or the message unreadable), for ``#time=`` selections."""
    try:
        return header_stamp_ns(parse_cdr(cdr, msgtype), log_ns)
    except MessageParseError:
        return log_ns
