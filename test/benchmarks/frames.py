"""What the predict benchmarks share: the 640x480 test frame and the timing loop. Imports neither rclpy nor the
training package, so bench_gpu.py runs on a bare GPU machine."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FX = 640, 480, 525.0
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


# Instruction sets that decide which of float32 and int8 is faster (int8 dot products: VNNI, AMX, ARM's dotprod).
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_description() -> str:
    """The CPU's model name and which of CPU_FEATURES it has (Linux), e.g. ``AMD EPYC (avx2)``: benchmark
    figures are only comparable between machines that agree on these."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)  # the last CPU's, all alike
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or fields.get("Model") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return f"{name} ({' '.join(f for f in CPU_FEATURES if f in flags) or 'none of ' + ', '.join(CPU_FEATURES)})"


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
