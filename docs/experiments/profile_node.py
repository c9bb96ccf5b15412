"""Profile depth_node's worker thread end to end: where a 640x480 frame's time goes, by sampling.

    .venv/bin/python docs/experiments/profile_node.py [--frames 300] [--out runs/profile]

Runs depth_node (default parameters) under py-spy (`pip install py-spy`; a dev tool, not a dependency) while
bench_node.py's camera sends frames one at a time, then sums the worker thread's samples by the innermost
frame of depth_kd_ros/rclpy/onnxruntime code they fall in. docs/node_profile.md has a run.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "benchmarks"))

import bench_node  # noqa: E402  (sets up DDS isolation on import)
import numpy as np  # noqa: E402

# (label, pattern on a frame "function (file:line)"): the first match from the innermost frame outwards names
# the sample. Order matters: more specific first.
STEPS = [
    ("network (backend.run)", r"Backend\.run \("),
    ("pre-processing (resize, normalise)", r"^to_network_input \("),
    ("post-processing (scale, clamp, upsample)", r"^DepthEstimator\.predict \("),
    ("decode image (image_to_rgb)", r"^(image_to_rgb|compressed_to_rgb) \("),
    ("serialise outputs (rosbags CDR)", r"^(depth_image_cdr|image_cdr|cloud_cdr) \("),
    ("publish (rclpy -> DDS)", r"^Publisher\.publish \("),
    ("point cloud / colour map", r"^(depth_to_cloud|colorize_depth) \("),
    ("subscriber counts (rclpy)", r"(get_subscription_count|_outputs_wanted) \("),
    ("CameraInfo scaling", r"^(scale_camera_info|intrinsics_from_camera_info) \("),
    ("statistics", r"^FrameStats\."),
    ("waiting for a frame", r"^Condition\.wait \("),
]


def summarise(raw: Path) -> list[tuple[str, int]]:
    """py-spy's raw (folded) output -> samples per step, worker thread only."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "_work_loop" not in stack:
            continue  # the executor thread and others
        frames = [f for f in stack.split(";")[::-1] if not f.startswith("0x")]
        for label, pattern in STEPS:
            if any(re.search(pattern, f) for f in frames):
                counts[label] += int(n)
                break
        else:
            counts["other: " + frames[0][:70]] += int(n)
    return counts.most_common()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "profile")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "depth_node.folded"
    wrapper = (spy, "record", "--threads", "--idle", "--native", "--rate", "250", "--format", "raw",
               "--output", str(raw), "--")
    e2e, diagnostics = bench_node.end_to_end(args.frames, wrapper=wrapper)
    print(f"end to end: median {np.median(e2e) * 1e3:.2f} ms, p95 {np.percentile(e2e, 95) * 1e3:.2f} ms over "
          f"{len(e2e)} frames ({diagnostics.get('backend')}, {diagnostics.get('device')})")
    for key, value in diagnostics.items():
        if key.startswith("stage: "):
            print(f"  diagnostics {key}: {float(value):.2f}")
    rows = summarise(raw)
    total = sum(n for _, n in rows)
    print(f"worker thread, {total} samples (py-spy, native frames included):")
    for label, n in rows:
        print(f"  {100 * n / total:5.1f}%  {label}")


if __name__ == "__main__":
    main()
