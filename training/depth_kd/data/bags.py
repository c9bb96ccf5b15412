"""Frames from recorded bags: rosbag2 (sqlite3, MCAP) and ROS 1, read with rosbags (no ROS install).

What can be opened (:func:`resolve_bag_path`):

* a rosbag2 folder with ``metadata.yaml`` (sqlite3 or MCAP storage, split files, zstd compression);
* a bare ``.db3`` or ``.mcap`` file;
* a rosbag2 folder *without* ``metadata.yaml`` (early rosbag2, or a recording that was killed) holding
  exactly one ``.db3``/``.mcap`` file: that file is read directly (a warning says so). Message types
  then come from the Jazzy type store and old names such as ``sensor_msgs/Image`` are accepted;
* a ROS 1 ``.bag`` file.

Every failure raises :class:`BagError` (a ``ValueError``) whose message starts with the path.

Design -- an index, not an IterableDataset. Opening a :class:`BagSource` makes one streaming pass over
the image, depth and CameraInfo topics (one message in memory at a time) and keeps, per kept frame,
only where the image message is (receive time + its position among that topic's messages with the same
receive time), its header stamp, where the matched depth message is, and which intrinsics apply: a few
dozen bytes per frame. :meth:`BagSource.load` re-reads one frame by seeking on its receive time (sqlite3
timestamp index, MCAP chunk index, ROS 1 index). This gives the trainer what an IterableDataset can't
easily: ``len()``, an index -> frame mapping for deterministic shuffling and resuming mid-epoch, and
sharding across DataLoader workers and DDP ranks by the sampler. Readers are opened lazily in each
process (never shared across ``fork``) and dropped when the source is pickled.

Rules, applied in this order:

1. **Image topic**: ``topic`` if the bag has it; if ``topic`` is None or the default ``/camera/image_raw``
   (``DEFAULT_IMAGE_TOPIC``) and absent, the bag's only image-like topic (an ``Image``/``CompressedImage``
   that is not depth: no "depth" in its name), with one info line saying so; several -> BagError listing
   them. Any other absent topic is an error listing the bag's topics.
2. **Stamp**: the header stamp, or the receive time where the header stamp is zero.
3. **Selection** (``selection``, see selection.py): ``#frames=A:B`` keeps image messages A..B-1, ``#time=T0:T1``
   stamps T0 <= t < T1 seconds after the first image message's.
4. **Subsampling**: the n-th image message (n = 0, 1, ... from the bag's first) is kept when ``n % stride == 0``
   and its stamp is at least ``min_gap_s`` from the previously kept frame's.
5. **Depth** (``depth_topic``): a 32FC1/16UC1 ``Image`` or a compressed_depth_image_transport
   ``CompressedImage`` (``16UC1; compressedDepth png`` ...), chosen like the image topic (the default
   ``/camera/depth/image`` falls back to the only Image/CompressedImage with "depth" in its name, e.g.
   ``/camera/aligned_depth_to_color/image_raw/compressedDepth``). The message with the nearest header stamp
   is used if within ``depth_tolerance_s`` (0 = exact stamp match); otherwise the frame has no ``depth``
   (or is dropped with ``require_depth=True``).
6. **Intrinsics** (``camera_info_topic``; ``"auto"`` = the only CameraInfo topic, or the one sharing the longest
   namespace with the image topic): with ``camera_info_tolerance_s=None``, the latest CameraInfo stamped at or
   before the frame (the earliest one if none is, since CameraInfo rarely changes); with a tolerance, the one
   nearest in stamp within it, else NaN. fx, fy, cx, cy come from K (P if K is zero) and are rescaled
   if the image size differs from the CameraInfo's width/height. A bag without CameraInfo is still usable
   (one warning): fx = fy = ``assumed_fx``, cx = w/2, cy = h/2 if given, else NaN.
7. **Instance ids** (``instances_topic``, only when asked for: object-wise mixing reads the renderer's
   ``/camera/instances``): a 16UC1 ``Image`` that must exist, matched by exact header stamp; frames without one
   are dropped. The frame then has ``instances`` (uint16, 0 = structure).

Frame keys are ``"<bag>|<topic>|<stamp_ns>"`` (``#n`` for the n-th repeat of a stamp among all the topic's
messages), independent of stride and selection, so the teacher cache stays valid when either changes.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag1 import ReaderError as Ros1ReaderError
from rosbags.rosbag2 import ReaderError as Ros2ReaderError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from depth_kd.config import DEFAULT_DEPTH_TOPIC, DEFAULT_IMAGE_TOPIC
from depth_kd_ros.image_codec import (
    ImageDecodeError,
    compressed_depth_to_metres,
    compressed_to_rgb,
    depth_image_to_metres,
    image_to_rgb,
    label_image_to_ids,
)

from .frame import NAN, DataError, Frame, make_frame
from .selection import Selection

__all__ = [
    "BagError",
    "BagSource",
    "bag_topics",
    "camera_info_topics",
    "depth_topic_candidates",
    "find_bags",
    "header_stamp_ns",
    "image_topic_candidates",
    "open_bag",
    "pick_camera_info_topic",
    "pick_image_topic",
    "resolve_bag_path",
    "topic_table",
]

logger = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STORAGE_SUFFIXES = (".db3", ".mcap")

# Used only for bags that embed no message definitions (early rosbag2 sqlite3 files).
_FALLBACK_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
# What rosbags raises on unreadable, truncated or corrupt bags.
_READ_ERRORS = (AnyReaderError, Ros1ReaderError, Ros2ReaderError, SerdeError, struct.error, EOFError, OSError)
_WARNED_NO_METADATA: set[Path] = set()
_SAID: set[tuple] = set()  # (path, what, ...) already logged in this process: one line per bag, not per opening


def _log_once(key: tuple, level: int, message: str, *args: Any) -> None:
    if key not in _SAID:
        _SAID.add(key)
        logger.log(level, message, *args)


class BagError(DataError):
    """A bag cannot be used; the message starts with its path."""


def ros2_type_name(name: str) -> str:
    """``sensor_msgs/Image`` (early rosbag2, ROS 1 style) -> ``sensor_msgs/msg/Image``; others unchanged."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def resolve_bag_path(path: str | Path) -> Path:
    """Return what rosbags should open for ``path`` (see the module docstring), or raise BagError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BagError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return path
        storage = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())
        if not storage:
            raise BagError(
                f"{path}: not a bag: the folder has no metadata.yaml and no .db3 or .mcap file, nor any images "
                "(expected a rosbag2 folder, a .db3/.mcap file, a ROS 1 .bag file or a folder of .png/.jpg images)"
            )
        if len(storage) > 1:
            names = ", ".join(p.name for p in storage)
            raise BagError(
                f"{path}: metadata.yaml is missing and there are several storage files ({names}), whose "
                f"order only metadata.yaml records; recreate it with `ros2 bag reindex {path}`"
            )
        if path not in _WARNED_NO_METADATA:
            _WARNED_NO_METADATA.add(path)
            logger.warning(
                "%s: no metadata.yaml; reading %s directly (`ros2 bag reindex` would recreate it)",
                path,
                storage[0].name,
            )
        return storage[0]
    if path.suffix in (*STORAGE_SUFFIXES, ".bag"):
        return path
    raise BagError(
        f"{path}: not a bag: expected a rosbag2 folder (with metadata.yaml), a .db3 or .mcap file, or a ROS 1 .bag file"
    )


def _open_reader(path: str | Path) -> AnyReader:
    """An opened rosbags reader for ``path``; the caller closes it."""
    target = resolve_bag_path(path)
    try:
        reader = AnyReader([target], default_typestore=_FALLBACK_TYPESTORE)
        reader.open()
    except _READ_ERRORS as err:
        raise BagError(f"{path}: cannot read the bag, it may be truncated or corrupt: {err}") from err
    return reader


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open a bag for reading; rosbags errors (also those raised while reading) become BagError."""
    reader = _open_reader(path)
    try:
        yield reader
    except _READ_ERRORS as err:
        raise BagError(f"{path}: error while reading, the bag may be truncated or corrupt: {err}") from err
    finally:
        reader.close()


def find_bags(root: str | Path) -> list[Path]:
    """All bags under ``root`` (itself included), sorted: rosbag2 folders, loose .db3/.mcap, .bag files."""
    root = Path(root)
    if not root.is_dir():
        return [root]
    if (root / "metadata.yaml").is_file():
        return [root]
    found = []
    for child in sorted(root.iterdir()):
        if child.is_dir():
            found += find_bags(child)
        elif child.suffix in (*STORAGE_SUFFIXES, ".bag"):
            found.append(child)
    return found


def topic_table(reader: AnyReader) -> dict[str, tuple[str, int]]:
    """``{topic: (message type, message count)}`` of an opened bag."""
    return {name: (ros2_type_name(info.msgtype or "?"), info.msgcount) for name, info in reader.topics.items()}


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """``{topic: (message type, message count)}`` of a bag."""
    with open_bag(path) as reader:
        return topic_table(reader)


def _is_depth_name(topic: str) -> bool:
    """Depth by name: "depth" anywhere (``/camera/depth/image``, ``.../image_raw/compressedDepth``)."""
    return "depth" in topic.lower()


def image_topic_candidates(topics: dict[str, tuple[str, int]]) -> list[str]:
    """Image/CompressedImage topics that are not depth by name, sorted: what an image topic is picked from."""
    return [n for n in sorted(topics) if topics[n][0] in (IMAGE, COMPRESSED_IMAGE) and not _is_depth_name(n)]


def depth_topic_candidates(topics: dict[str, tuple[str, int]]) -> list[str]:
    """Image/CompressedImage topics that are depth by name, sorted: what a depth topic is picked from."""
    return [n for n in sorted(topics) if topics[n][0] in (IMAGE, COMPRESSED_IMAGE) and _is_depth_name(n)]


def _shared_prefix(a: str, b: str) -> int:
    """Number of leading path components ``a`` and ``b`` share (leading slashes ignored)."""
    count = 0
    for x, y in zip(a.strip("/").split("/"), b.strip("/").split("/"), strict=False):
        if x != y:
            break
        count += 1
    return count


def _describe(topics: dict[str, tuple[str, int]], names: list[str] | None = None) -> str:
    names = sorted(topics) if names is None else names
    return ", ".join(f"{n} ({topics[n][0]}, {topics[n][1]} msgs)" for n in names) or "none"


def pick_image_topic(path: Path, topics: dict[str, tuple[str, int]], topic: str | None,
                     depth_topic: str | None = None) -> str:
    """The image topic by rule 1 of the module docstring (``topic`` None: the bag's only image-like topic)."""
    images = [n for n in image_topic_candidates(topics) if n != depth_topic]
    if topic is not None and (topic in topics or topic != DEFAULT_IMAGE_TOPIC):
        if topic not in topics:
            raise BagError(f"{path}: no topic {topic!r}; topics: {_describe(topics)}")
        if topics[topic][0] not in (IMAGE, COMPRESSED_IMAGE):
            raise BagError(
                f"{path}: topic {topic!r} is {topics[topic][0]}, not an Image or CompressedImage; "
                f"image topics: {_describe(topics, images)}"
            )
        return topic
    absent = f"no topic {topic!r} and " if topic else ""
    if len(images) == 1:
        if topic:
            _log_once((path, "image", images[0]), logging.INFO, "%s: no image topic %s; using %s, the "
                      "bag's only image topic", path, topic, images[0])
        return images[0]
    if not images:
        raise BagError(f"{path}: {absent}no Image or CompressedImage topic; topics: {_describe(topics)}")
    raise BagError(f"{path}: {absent}several image topics, choose one with `topic` (--image-topic, "
                   f"data.image_topic): {_describe(topics, images)}")


def camera_info_topics(topics: dict[str, tuple[str, int]]) -> list[str]:
    """The bag's CameraInfo topics, sorted."""
    return [n for n in sorted(topics) if topics[n][0] == CAMERA_INFO]


def pick_camera_info_topic(path: Path, topics: dict[str, tuple[str, int]], image_topic: str,
                           topic: str | None = "auto") -> str | None:
    """The CameraInfo topic for ``image_topic`` by rule 6 of the module docstring; None when ``topic`` is None,
    the bag has none (the caller says what that means for it) or several fit equally (logged)."""
    infos = camera_info_topics(topics)
    if topic is not None and topic != "auto":
        if topic not in infos:
            raise BagError(f"{path}: no CameraInfo topic {topic!r}; CameraInfo topics: {_describe(topics, infos)}")
        return topic
    if topic is None or not infos:
        return None
    shared = {n: _shared_prefix(n.rpartition("/")[0], image_topic) for n in infos}
    best = [n for n in infos if shared[n] == max(shared.values())]
    if len(best) == 1:
        return best[0]
    _log_once((path, "infos"), logging.WARNING, "%s: several CameraInfo topics (%s) and none in the "
              "namespace of %s; intrinsics unknown unless camera_info_topic is given", path,
              ", ".join(infos), image_topic)
    return None


def header_stamp_ns(msg: Any, receive_ns: int) -> int:
    """A message's header stamp in ns, or ``receive_ns`` where the stamp is zero (rule 2)."""
    stamp = msg.header.stamp
    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return ns if ns else receive_ns


class _Where(NamedTuple):
    """Where a message is: its receive time and its position among the topic's messages at that time."""

    receive_ns: int
    nth: int


class _Camera(NamedTuple):
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


class _Entry(NamedTuple):
    image: _Where
    stamp_ns: int
    key: str
    depth: _Where | None
    camera: int  # index into BagSource._cameras, -1 = unknown
    instances: _Where | None = None


def _camera_from_msg(msg: Any) -> _Camera:
    k = np.asarray(msg.k if hasattr(msg, "k") else msg.K, dtype=float)  # ROS 1 spells them K and P
    p = np.asarray(msg.p if hasattr(msg, "p") else msg.P, dtype=float)
    if k[0] > 0 and k[4] > 0:
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    elif p[0] > 0 and p[5] > 0:
        fx, fy, cx, cy = p[0], p[5], p[2], p[6]
    else:
        fx = fy = cx = cy = NAN
    return _Camera(float(fx), float(fy), float(cx), float(cy), int(msg.width), int(msg.height))


def _decode_labels(msg: Any) -> np.ndarray:
    return label_image_to_ids(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


def _nearest(sorted_stamps: list[int], stamp: int) -> int:
    """Index of the value in ``sorted_stamps`` nearest to ``stamp`` (list must be non-empty)."""
    i = bisect.bisect_left(sorted_stamps, stamp)
    if i == len(sorted_stamps):
        return i - 1
    if i > 0 and stamp - sorted_stamps[i - 1] <= sorted_stamps[i] - stamp:
        return i - 1
    return i


class BagSource:
    """The frames of one image topic in one bag, indexed for random access (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        topic: str | None = None,
        *,
        depth_topic: str | None = None,
        camera_info_topic: str | None = "auto",
        stride: int = 1,
        min_gap_s: float = 0.0,
        depth_tolerance_s: float = 0.0,
        camera_info_tolerance_s: float | None = None,
        require_depth: bool = False,
        selection: Selection | None = None,
        assumed_fx: float | None = None,
        instances_topic: str | None = None,
    ) -> None:
        if stride < 1 or min_gap_s < 0 or depth_tolerance_s < 0:
            raise ValueError(
                f"need stride >= 1, min_gap_s >= 0, depth_tolerance_s >= 0; got {stride}, {min_gap_s}, "
                f"{depth_tolerance_s}"
            )
        if assumed_fx is not None and not assumed_fx > 0:
            raise ValueError(f"assumed_fx must be positive (pixels) or None, got {assumed_fx}")
        if require_depth and depth_topic is None:  # would silently keep no frame at all
            raise ValueError(f"{path}: require_depth needs a depth_topic (none given)")
        self.path = Path(path).expanduser().resolve() if Path(path).exists() else Path(path)
        self.source = str(self.path)
        self.selection = selection
        self.assumed_fx = assumed_fx
        self._reader: AnyReader | None = None
        self._reader_pid = -1
        self._cameras: list[_Camera] = []
        with open_bag(self.path) as reader:
            topics = topic_table(reader)
            self.topic = pick_image_topic(self.path, topics, topic, depth_topic)
            self.image_type = topics[self.topic][0]
            self.depth_topic = self._pick_depth_topic(topics, depth_topic)
            self.depth_type = topics[self.depth_topic][0] if self.depth_topic else None
            self.camera_info_topic = pick_camera_info_topic(self.path, topics, self.topic, camera_info_topic)
            if camera_info_topic is not None and not camera_info_topics(topics):
                self._warn_no_camera_info()
            self.instances_topic = self._check_instances_topic(topics, instances_topic)
            images, depths, infos, instances = self._scan(reader, stride, int(round(min_gap_s * 1e9)))
        if selection is not None and not images:
            raise BagError(f"{self.path}: {self.topic}{selection.spec()} selects no frames (stride {stride}); "
                           f"the topic has {topics[self.topic][1]} messages")
        self._entries = self._match(images, depths, infos, depth_tolerance_s, camera_info_tolerance_s)
        if require_depth:
            self._entries = [e for e in self._entries if e.depth is not None]
        if self.instances_topic:
            self._entries = self._with_instances(self._entries, instances)
        logger.info(
            "%s: %s%s, %d frames kept (stride %d, min gap %.3f s), %d with depth, camera info %s",
            self.path,
            self.topic,
            selection.spec() if selection else "",
            len(self._entries),
            stride,
            min_gap_s,
            sum(e.depth is not None for e in self._entries),
            self.camera_info_topic,
        )

    # ---- choosing topics (one rule for every caller: see the module docstring) ---------------------

    def _pick_depth_topic(self, topics: dict[str, tuple[str, int]], topic: str | None) -> str | None:
        if topic is None:
            return None
        if topic not in topics and topic == DEFAULT_DEPTH_TOPIC:
            candidates = depth_topic_candidates(topics)
            if len(candidates) != 1:
                found = f"several depth topics, choose one with `depth_topic` (--depth-topic, data.depth_topic): " \
                        f"{_describe(topics, candidates)}" if candidates else f"topics: {_describe(topics)}"
                raise BagError(f"{self.path}: no depth topic {topic!r}; {found}")
            _log_once((self.path, "depth", candidates[0]), logging.INFO, "%s: no depth topic %s; using %s, the "
                      "bag's only depth topic", self.path, topic, candidates[0])
            topic = candidates[0]
        if topic not in topics:
            raise BagError(f"{self.path}: no depth topic {topic!r}; topics: {_describe(topics)}")
        if topics[topic][0] not in (IMAGE, COMPRESSED_IMAGE):
            raise BagError(
                f"{self.path}: depth topic {topic!r} is {topics[topic][0]}; need a sensor_msgs/msg/Image in 32FC1 "
                "(metres) or 16UC1 (millimetres), or a compressedDepth sensor_msgs/msg/CompressedImage"
            )
        return topic

    def _check_instances_topic(self, topics: dict[str, tuple[str, int]], topic: str | None) -> str | None:
        if topic is None:
            return None
        if topic not in topics or topics[topic][0] != IMAGE:
            what = f"is {topics[topic][0]}" if topic in topics else "is missing"
            raise BagError(f"{self.path}: instance-id topic {topic!r} {what}; object-wise mixing needs a 16UC1 "
                           f"Image of instance ids (as `depth-kd render` writes); topics: {_describe(topics)}")
        return topic

    def _with_instances(self, entries: list[_Entry], instances: dict[int, _Where]) -> list[_Entry]:
        """``entries`` that have an instance map of the same stamp, with it; the others are dropped (logged)."""
        kept = [e._replace(instances=instances[e.stamp_ns]) for e in entries if e.stamp_ns in instances]
        if len(kept) < len(entries):
            logger.warning("%s: %d of %d frames have no instance ids on %s and are skipped", self.path,
                           len(entries) - len(kept), len(entries), self.instances_topic)
        return kept

    def _warn_no_camera_info(self) -> None:
        if self.assumed_fx is None:
            assumption = "intrinsics unknown (NaN); the trainer will assume the teacher's focal length"
        else:
            assumption = f"assuming fx = fy = {self.assumed_fx:g} px (data.assumed_fx), principal point at the centre"
        _log_once((self.path, "no camera info"), logging.WARNING, "%s: no CameraInfo topic; %s", self.path, assumption)

    # ---- indexing ---------------------------------------------------------------------------------

    def _scan(
        self, reader: AnyReader, stride: int, min_gap_ns: int
    ) -> tuple[list[tuple[_Where, int, str]], list[tuple[int, _Where]], list[tuple[int, _Camera]], dict[int, _Where]]:
        """One pass in receive order -> kept images (where, stamp, key), depths (stamp, where), infos, instance
        maps (stamp -> where)."""
        wanted = {t for t in (self.topic, self.depth_topic, self.camera_info_topic, self.instances_topic) if t}
        connections = [c for c in reader.connections if c.topic in wanted]
        last_time: dict[str, tuple[int, int]] = {}  # topic -> (receive_ns, nth)
        images: list[tuple[_Where, int, str]] = []
        depths: list[tuple[int, _Where]] = []
        infos: list[tuple[int, _Camera]] = []
        instances: dict[int, _Where] = {}
        repeats: dict[int, int] = {}  # stamp -> how often seen on the image topic so far
        position, first_stamp, last_kept = 0, None, None
        for connection, receive_ns, raw in reader.messages(connections):
            topic = connection.topic
            prev = last_time.get(topic)
            nth = prev[1] + 1 if prev and prev[0] == receive_ns else 0
            last_time[topic] = (receive_ns, nth)
            msg = reader.deserialize(raw, ros2_type_name(connection.msgtype))
            stamp = header_stamp_ns(msg, receive_ns)
            if topic == self.topic:
                first_stamp = stamp if first_stamp is None else first_stamp
                key = self._key(stamp, repeats)
                keep = self._selected(position, stamp - first_stamp) and position % stride == 0
                keep = keep and (last_kept is None or abs(stamp - last_kept) >= min_gap_ns)
                position += 1
                if keep:
                    images.append((_Where(receive_ns, nth), stamp, key))
                    last_kept = stamp
            if topic == self.depth_topic:
                if not depths:
                    self._decode_checked(msg, self.depth_topic, stamp, self._decode_depth)  # fail early on format
                depths.append((stamp, _Where(receive_ns, nth)))
            if topic == self.camera_info_topic:
                infos.append((stamp, _camera_from_msg(msg)))
            if topic == self.instances_topic:
                if not instances:
                    self._decode_checked(msg, topic, stamp, _decode_labels)  # fail early on format
                instances.setdefault(stamp, _Where(receive_ns, nth))
        return images, depths, infos, instances

    def _selected(self, position: int, offset_ns: int) -> bool:
        s = self.selection
        return s is None or (s.keeps_position(position) and s.keeps_time(offset_ns))

    def _key(self, stamp: int, repeats: dict[int, int]) -> str:
        """``"<bag>|<topic>|<stamp>"``, ``#n`` for the n-th repeat of a stamp among all the topic's messages."""
        repeats[stamp] = repeats.get(stamp, -1) + 1
        key = f"{self.source}|{self.topic}|{stamp}"
        return f"{key}#{repeats[stamp]}" if repeats[stamp] else key

    def _match(
        self,
        images: list[tuple[_Where, int, str]],
        depths: list[tuple[int, _Where]],
        infos: list[tuple[int, _Camera]],
        depth_tolerance_s: float,
        camera_info_tolerance_s: float | None,
    ) -> list[_Entry]:
        depths.sort(key=lambda d: d[0])
        infos.sort(key=lambda i: i[0])
        depth_stamps = [d[0] for d in depths]
        info_stamps = [i[0] for i in infos]
        depth_tol = int(round(depth_tolerance_s * 1e9))
        cameras: dict[_Camera, int] = {}
        entries = []
        for where, stamp, key in images:
            depth = None
            if depths:
                j = _nearest(depth_stamps, stamp)
                if abs(depth_stamps[j] - stamp) <= depth_tol:
                    depth = depths[j][1]
            camera = -1
            if infos:
                if camera_info_tolerance_s is None:
                    j = max(bisect.bisect_right(info_stamps, stamp) - 1, 0)
                else:
                    j = _nearest(info_stamps, stamp)
                    j = j if abs(info_stamps[j] - stamp) <= camera_info_tolerance_s * 1e9 else -1
                if j >= 0:
                    camera = cameras.setdefault(infos[j][1], len(cameras))
            entries.append(_Entry(where, stamp, key, depth, camera))
        self._cameras = list(cameras)
        return entries

    # ---- reading ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def stamps_ns(self) -> list[int]:
        """Header stamps of the kept frames, in index order."""
        return [e.stamp_ns for e in self._entries]

    def key(self, index: int) -> str:
        """Stable id of frame ``index``: ``"<bag>|<topic>|<stamp_ns>"`` (``#n`` added on repeated stamps)."""
        return self._entries[index].key

    def load(self, index: int) -> Frame:
        """Read and decode frame ``index`` (see depth_kd.data.frame for the keys)."""
        entry = self._entries[index]
        reader = self._reader_here()
        rgb = self._read_decoded(reader, self.topic, entry.image, entry.stamp_ns, self._decode_image)
        depth = None
        if entry.depth is not None:
            assert self.depth_topic is not None
            depth = self._read_decoded(reader, self.depth_topic, entry.depth, entry.stamp_ns, self._decode_depth)
        height, width = rgb.shape[:2]
        if depth is not None and depth.shape != (height, width):
            raise BagError(
                f"{self.path}: depth on {self.depth_topic} is {depth.shape[1]}x{depth.shape[0]} but the "
                f"image on {self.topic} is {width}x{height}; use a depth topic registered to the image"
            )
        labels = None
        if entry.instances is not None:
            assert self.instances_topic is not None
            labels = self._read_decoded(reader, self.instances_topic, entry.instances, entry.stamp_ns, _decode_labels)
            if labels.shape != (height, width):
                raise BagError(f"{self.path}: instance ids on {self.instances_topic} are {labels.shape[1]}x"
                               f"{labels.shape[0]} but the image on {self.topic} is {width}x{height}")
        return make_frame(rgb, self._intrinsics(entry, width, height), entry.stamp_ns, self.source, self.topic,
                          entry.key, depth, labels)

    def _intrinsics(self, entry: _Entry, width: int, height: int) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy at this image size: from CameraInfo, else ``assumed_fx`` for bags without one, else NaN."""
        if entry.camera >= 0:
            cam = self._cameras[entry.camera]
            sx = width / cam.width if cam.width else 1.0
            sy = height / cam.height if cam.height else 1.0
            return cam.fx * sx, cam.fy * sy, cam.cx * sx, cam.cy * sy
        if self.camera_info_topic is None and self.assumed_fx is not None:
            return self.assumed_fx, self.assumed_fx, width / 2, height / 2
        return NAN, NAN, NAN, NAN

    def __iter__(self) -> Iterator[Frame]:
        """All kept frames in order, one in memory at a time."""
        return (self.load(i) for i in range(len(self)))

    def _read_decoded(self, reader: AnyReader, topic: str, where: _Where, stamp_ns: int,
                      decode: Callable[[Any], np.ndarray]) -> np.ndarray:
        try:
            msg = self._read(reader, topic, where)
        except _READ_ERRORS as err:
            raise BagError(f"{self.path}: cannot read {topic} for the frame at stamp {stamp_ns} ns: {err}") from err
        return self._decode_checked(msg, topic, stamp_ns, decode)

    def _decode_checked(self, msg: Any, topic: str, stamp_ns: int, decode: Callable[[Any], np.ndarray]) -> np.ndarray:
        """``decode(msg)``; a payload that cannot be decoded is one BagError naming the bag, topic and stamp."""
        try:
            return decode(msg)
        except ImageDecodeError as err:
            raise BagError(f"{self.path}: {topic}, frame at stamp {stamp_ns} ns: {err}") from err

    def _decode_image(self, msg: Any) -> np.ndarray:
        if self.image_type == COMPRESSED_IMAGE:
            return compressed_to_rgb(msg.format, msg.data)
        return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))

    def _decode_depth(self, msg: Any) -> np.ndarray:
        if self.depth_type == COMPRESSED_IMAGE:
            return compressed_depth_to_metres(msg.format, msg.data)
        return depth_image_to_metres(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))

    def _read(self, reader: AnyReader, topic: str, where: _Where) -> Any:
        connections = [c for c in reader.connections if c.topic == topic]
        stop = where.receive_ns + 1
        for nth, (connection, _, raw) in enumerate(reader.messages(connections, where.receive_ns, stop)):
            if nth == where.nth:
                return reader.deserialize(raw, ros2_type_name(connection.msgtype))
        raise BagError(f"{self.path}: message on {topic} at {where.receive_ns} ns is gone; bag changed?")

    def _reader_here(self) -> AnyReader:
        """This process's reader (a forked DataLoader worker opens its own)."""
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader, self._reader_pid = _open_reader(self.path), os.getpid()
        return self._reader

    def close(self) -> None:
        """Close this process's reader, if open (it reopens on the next load)."""
        if self._reader is not None and self._reader_pid == os.getpid():
            self._reader.close()
        self._reader = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"], state["_reader_pid"] = None, -1
        return state

    def __repr__(self) -> str:
        return f"BagSource({self.source!r}, topic={self.topic!r}, frames={len(self)})"
