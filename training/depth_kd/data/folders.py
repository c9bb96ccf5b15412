"""Frames from a plain folder of images, with optional ground-truth depth in a sibling folder.

Layout::

    scene/rgb/0001.jpg  scene/rgb/0002.png ...      images (.png, .jpg, .jpeg), read in name order
    scene/depth/0001.png  scene/depth/0002.npy ...  optional depth, same frame id as its image

``ImageFolder("scene")`` uses ``scene/rgb`` when it exists, else the images directly in ``scene``.
With ``depth="auto"`` (the default) the folder named ``depth`` beside the image folder is used if present.

* Images are decoded by the node's own decoder (``compressed_to_rgb``), so training sees the same pixels.
* Depth ``.png``: single-channel uint16, metres = value / ``depth_scale`` (default 1000: millimetres,
  as REP 118's 16UC1; NYU 1000, KITTI 256, TUM 5000), 0 = invalid. Depth ``.npy``: a 2-D float array in
  metres; non-finite or <= 0 = invalid. Invalid pixels become NaN.
* Frame id: the last number in the file stem (``rgb_00050`` and ``sync_depth_00050`` -> ``00050``;
  ``1305031102.175304`` stays whole), else the whole stem. An image's depth is the depth file with the
  same id; with ``depth_tolerance_s > 0`` and numeric ids read as seconds (TUM RGB-D names), the
  nearest depth id within the tolerance. Images without depth have no ``depth`` key.
* ``stamp_ns``: the id in nanoseconds when it is a ``<seconds>.<fraction>`` number, else 0 (unknown).
* ``fx, fy, cx, cy``: the ``intrinsics`` argument (at the images' own size); else, with ``assumed_fx``,
  fx = fy = assumed_fx and the principal point at each image's centre; else NaN (one warning per folder).
* ``selection``: ``#frames=A:B`` keeps files A..B-1 in name order (counted before ``stride``);
  ``require_depth`` keeps only images that have a depth file.
* ``key``: the image file's absolute path; ``source``: the image folder; ``topic``: ``""``.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from depth_kd_ros.image_codec import ImageDecodeError, compressed_to_rgb

from .frame import NAN, DataError, Frame, make_frame
from .selection import Selection

__all__ = ["FolderError", "ImageFolder", "frame_id", "is_image_folder"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".npy")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_BAG_FILES = ("metadata.yaml", "*.db3", "*.mcap", "*.bag")
_WARNED_NO_INTRINSICS: set[Path] = set()


class FolderError(DataError):
    """An image folder or one of its files cannot be used; the message names the path."""


def frame_id(stem: str) -> str:
    """The id that pairs an image with its depth file: the last number in ``stem``, else ``stem``."""
    numbers = _NUMBER.findall(stem)
    return numbers[-1] if numbers else stem


def is_image_folder(path: str | Path) -> bool:
    """A folder of images (directly or in ``rgb/``) that is not a bag: no metadata.yaml, .db3, .mcap or .bag."""
    path = Path(path).expanduser()
    if not path.is_dir() or any(next(path.glob(pattern), None) for pattern in _BAG_FILES):
        return False
    folder = path / "rgb" if (path / "rgb").is_dir() else path
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _stamp_ns(fid: str) -> int:
    """``"1305031102.175304"`` -> 1305031102175304000 exactly; ids without a fraction -> 0 (unknown)."""
    whole, dot, fraction = fid.partition(".")
    if not dot or not whole.isdigit() or not fraction.isdigit():
        return 0
    return int(whole) * 1_000_000_000 + int(fraction[:9].ljust(9, "0"))


def _seconds(fid: str) -> float | None:
    try:
        return float(fid)
    except ValueError:
        return None


def _list(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())


class ImageFolder:
    """The images of one folder (see the module docstring for layout and matching)."""

    def __init__(
        self,
        path: str | Path,
        *,
        depth: str | Path | None = "auto",
        depth_scale: float = 1000.0,
        depth_tolerance_s: float = 0.0,
        intrinsics: tuple[float, float, float, float] | None = None,
        stride: int = 1,
        selection: Selection | None = None,
        require_depth: bool = False,
        assumed_fx: float | None = None,
    ) -> None:
        path = Path(path).expanduser()
        if not path.exists():
            raise FolderError(f"{path}: no such folder")
        if not path.is_dir():
            raise FolderError(f"{path}: not a folder of images")
        if stride < 1 or depth_scale <= 0 or (assumed_fx is not None and not assumed_fx > 0):
            raise ValueError(f"need stride >= 1, depth_scale > 0 and assumed_fx > 0 or None; got {stride}, "
                             f"{depth_scale}, {assumed_fx}")
        if require_depth and depth is None:  # as BagSource: would silently keep no image at all
            raise ValueError(f"{path}: require_depth needs depth (depth=None given)")
        self.folder = (path / "rgb" if (path / "rgb").is_dir() else path).resolve()
        self.source = str(self.folder)
        self.depth_scale = depth_scale
        self.intrinsics = tuple(float(v) for v in intrinsics) if intrinsics else (NAN, NAN, NAN, NAN)
        self.assumed_fx = None if intrinsics else assumed_fx
        images = _list(self.folder, IMAGE_SUFFIXES)
        if not images:
            raise FolderError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.images = self._select(images, stride, selection)
        self.depth_folder = self._depth_folder(depth)
        self.depths = self._match_depth(depth_tolerance_s) if self.depth_folder else [None] * len(self.images)
        if require_depth:
            pairs = [(i, d) for i, d in zip(self.images, self.depths, strict=True) if d is not None]
            self.images, self.depths = [i for i, _ in pairs], [d for _, d in pairs]
        if not intrinsics:
            self._warn_no_intrinsics()
        logger.info(
            "%s: %d images kept (stride %d%s), %d with depth from %s",
            self.folder,
            len(self.images),
            stride,
            f", {selection.spec()}" if selection else "",
            sum(d is not None for d in self.depths),
            self.depth_folder,
        )

    def _select(self, images: list[Path], stride: int, selection: Selection | None) -> list[Path]:
        """Files in name order; ``stride`` counts from the folder's first file, like a bag's first message."""
        if selection is not None and selection.kind != "frames":
            raise FolderError(f"{self.folder}: {selection.spec()} needs stamps; select part of an image folder "
                              "with #frames=A:B (files in name order)")
        kept = [p for i, p in enumerate(images) if i % stride == 0 and (not selection or selection.keeps_position(i))]
        if not kept:  # only a selection can empty it: the first file is always kept
            assert selection is not None
            raise FolderError(f"{self.folder}{selection.spec()} selects no images (stride {stride}); the folder has "
                              f"{len(images)}")
        return kept

    def _warn_no_intrinsics(self) -> None:
        if self.folder in _WARNED_NO_INTRINSICS:
            return
        _WARNED_NO_INTRINSICS.add(self.folder)
        if self.assumed_fx is None:
            logger.warning("%s: no intrinsics for this image folder (NaN); the trainer will assume the teacher's "
                           "focal length", self.folder)
        else:
            logger.warning("%s: no intrinsics for this image folder; assuming fx = fy = %g px (data.assumed_fx), "
                           "principal point at the centre", self.folder, self.assumed_fx)

    def _depth_folder(self, depth: str | Path | None) -> Path | None:
        if depth is None:
            return None
        if depth == "auto":
            sibling = self.folder.parent / "depth"
            return sibling if sibling.is_dir() and sibling != self.folder else None
        folder = Path(depth).expanduser().resolve()
        if not folder.is_dir():
            raise FolderError(f"{folder}: depth folder does not exist")
        return folder

    def _match_depth(self, tolerance_s: float) -> list[Path | None]:
        assert self.depth_folder is not None
        by_id: dict[str, Path] = {}
        for p in _list(self.depth_folder, DEPTH_SUFFIXES):
            fid = frame_id(p.stem)
            if fid in by_id:
                raise FolderError(f"{self.depth_folder}: {by_id[fid].name} and {p.name} have the same frame id {fid!r}")
            by_id[fid] = p
        timed = sorted((s, p) for fid, p in by_id.items() if (s := _seconds(fid)) is not None)
        times = [t for t, _ in timed]
        matched: list[Path | None] = []
        for image in self.images:
            fid = frame_id(image.stem)
            found = by_id.get(fid)
            seconds = _seconds(fid)
            if found is None and tolerance_s > 0 and seconds is not None and times:
                i = bisect.bisect_left(times, seconds)
                near = [j for j in (i - 1, i) if 0 <= j < len(times)]
                j = min(near, key=lambda j: abs(times[j] - seconds))
                found = timed[j][1] if abs(times[j] - seconds) <= tolerance_s else None
            matched.append(found)
        return matched

    def __len__(self) -> int:
        return len(self.images)

    def key(self, index: int) -> str:
        """Stable id of frame ``index``: the image file's absolute path."""
        return str(self.images[index])

    def load(self, index: int) -> Frame:
        """Read and decode frame ``index`` (see depth_kd.data.frame for the keys)."""
        image = self.images[index]
        fmt = "png" if image.suffix.lower() == ".png" else "jpeg"
        try:
            rgb = compressed_to_rgb(fmt, image.read_bytes())
        except (ImageDecodeError, OSError) as err:
            raise FolderError(f"{image}: {err}") from err
        stamp_ns = _stamp_ns(frame_id(image.stem))
        intrinsics = self.intrinsics
        if self.assumed_fx is not None:
            intrinsics = (self.assumed_fx, self.assumed_fx, rgb.shape[1] / 2, rgb.shape[0] / 2)
        frame = make_frame(rgb, intrinsics, stamp_ns, self.source, "", str(image))
        depth_path = self.depths[index]
        if depth_path is not None:
            depth = self._read_depth(depth_path)
            if depth.shape != rgb.shape[:2]:
                raise FolderError(
                    f"{depth_path}: depth is {depth.shape[1]}x{depth.shape[0]} but {image.name} is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}"
                )
            frame["depth"] = depth
        return frame

    def __iter__(self) -> Iterator[Frame]:
        """All frames in order, one in memory at a time."""
        return (self.load(i) for i in range(len(self)))

    def _read_depth(self, path: Path) -> np.ndarray:
        """Depth file -> float32 metres, NaN = invalid."""
        try:
            if path.suffix == ".npy":
                raw = np.load(path, allow_pickle=False)
            else:
                raw = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except (OSError, ValueError) as err:
            raise FolderError(f"{path}: cannot read depth: {err}") from err
        if path.suffix == ".npy":
            if raw.ndim != 2 or raw.dtype.kind != "f":
                raise FolderError(f"{path}: expected a 2-D float array (metres), got {raw.dtype} {raw.shape}")
            depth = raw.astype(np.float32)
            with np.errstate(invalid="ignore"):
                depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
            return depth
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
            got = "unreadable" if raw is None else f"{raw.dtype} {raw.shape}"
            raise FolderError(f"{path}: expected a single-channel 16-bit depth png, got {got}")
        depth = raw.astype(np.float32) / np.float32(self.depth_scale)
        depth[raw == 0] = np.nan
        return depth

    def __repr__(self) -> str:
        return f"ImageFolder({self.source!r}, frames={len(self)}, depth={self.depth_folder})"
