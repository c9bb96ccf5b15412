"""What the predict benchmarks share: the 640x480 test frame and the timing loop. Imports neither rclpy nor the
training package, so bench_gpu.py runs on a bare GPU machine."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FX = 640, 480, 525.0
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def latencies(fn, repeats: int) -> np.ndarray:
    """Seconds per call, `repeats` calls after two warm-up calls."""
    fn(), fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return np.asarray(samples)


def real_frame() -> np.ndarray:
    """A 640x480 frame of the shared NYU set if present (content matters little for timing), else noise."""
    import cv2

    frames = sorted((SHARED / "data" / "real" / "nyu_v2" / "rgb").glob("*.jpg"))
    if frames:
        return cv2.resize(cv2.cvtColor(cv2.imread(str(frames[0])), cv2.COLOR_BGR2RGB), (WIDTH, HEIGHT))
    return np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
