"""Teacher predictions cached on disk, one compressed float16 .npz per (bag, topic, stamp, teacher).

Entries live at root/<teacher cache_id>/<2 hex>/<sha256 of the key>.npz and also store the key, which is
checked on read. Writes go to a temp file in the same directory and are renamed into place (os.replace), so
a killed writer leaves either the old entry or none, never a half-written one. An entry that cannot be read
(truncated, corrupt, wrong key) is logged, removed and treated as a miss. Loads never unpickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .base import Teacher

logger = logging.getLogger(__name__)


class CacheKey(NamedTuple):
    """Where a frame came from. `bag` should be stable across runs (e.g. the bag directory name)."""

    bag: str
    topic: str
    stamp_ns: int


class TeacherCache:
    """On-disk cache of one teacher's predictions (H x W float arrays)."""

    def __init__(self, root: str | Path, teacher_id: str) -> None:
        self.root = Path(root)
        self.teacher_id = teacher_id

    def _ident(self, key: CacheKey) -> str:
        return json.dumps([key.bag, key.topic, int(key.stamp_ns), self.teacher_id])

    def path(self, key: CacheKey) -> Path:
        """The file that holds `key`'s entry (whether or not it exists)."""
        digest = hashlib.sha256(self._ident(key).encode()).hexdigest()
        return self.root / self.teacher_id / digest[:2] / f"{digest}.npz"

    def get(self, key: CacheKey) -> np.ndarray | None:
        """The cached float32 H x W prediction, or None on a miss (absent or unreadable entry)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != self._ident(key):
                    raise ValueError(f"entry holds key {str(data['key'])!r}")
                return data["depth"].astype(np.float32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            logger.warning("unreadable cache entry %s (%s); treating it as a miss", path, err)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: CacheKey, depth: np.ndarray) -> None:
        """Store an H x W prediction as float16 (atomically replacing any existing entry)."""
        depth = np.asarray(depth)
        if depth.ndim != 2:
            raise ValueError(f"expected an H x W array, got shape {depth.shape}")
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, depth=depth.astype(np.float16), key=np.array(self._ident(key)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def predict_cached(
    teacher: Teacher, cache: TeacherCache, keys: Sequence[CacheKey], rgb: torch.Tensor
) -> torch.Tensor:
    """Teacher output for a batch, running the teacher only on the frames missing from `cache`.

    Returns float32 N x 1 x H x W on `teacher.device`. Fresh predictions are returned at the cache's float16
    precision too, so a frame's target is the same on the first epoch as on later ones.
    """
    if cache.teacher_id != teacher.cache_id:
        raise ValueError(f"cache is for teacher {cache.teacher_id!r}, not {teacher.cache_id!r}")
    if len(keys) != len(rgb):
        raise ValueError(f"{len(keys)} keys for {len(rgb)} images")
    height, width = rgb.shape[-2:]
    out = torch.empty(len(keys), 1, height, width, dtype=torch.float32, device=teacher.device)
    missing = []
    for i, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None and hit.shape != (height, width):
            logger.warning("cached %s is %s, images are %s; recomputing", key, hit.shape, (height, width))
            hit = None
        if hit is None:
            missing.append(i)
        else:
            out[i, 0] = torch.from_numpy(hit)
    if missing:
        fresh = teacher.predict(rgb[missing]).cpu().numpy()
        for j, i in enumerate(missing):
            depth = fresh[j, 0].astype(np.float16)
            cache.put(keys[i], depth)
            out[i, 0] = torch.from_numpy(depth.astype(np.float32))
    return out
