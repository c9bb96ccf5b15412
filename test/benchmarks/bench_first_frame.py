"""How long a new viewer waits for its first depth frame while the node is idle, against the camera itself.

    .venv/bin/python test/benchmarks/bench_first_frame.py [--trials 10] [--window 1.0] [--gap 2.0] [--busy]

A camera process publishes 640x480 rgb8 at 30 Hz (``--rate``) (best effort, as drivers do); depth_node runs with its
default weights and idles (no subscribers, so no image subscription). Each trial starts a *new process*
that subscribes to depth/image for ``--window`` seconds (RViz toggled on, ``ros2 topic echo``) and reports
the time from its subscription to the first message. Baseline, same run: the same viewer subscribing to the
camera's image_raw directly, i.e. what DDS discovery alone costs. ``--busy``: another process keeps one core
busy throughout (a robot's CPU is never idle). Goal (issue 10): under 0.5 s every time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds.xml"))
sys.path.insert(0, str(REPO / "test"))

import numpy as np  # noqa: E402


def summary(name: str, waits: list[float | None], window: float) -> str:
    got = np.array([w for w in waits if w is not None])
    if not got.size:
        return f"{name:<28} 0/{len(waits)} got a frame within {window:g} s"
    return (f"{name:<28} {got.size}/{len(waits)} got a frame; median {np.median(got) * 1e3:6.0f} ms, "
            f"max {got.max() * 1e3:6.0f} ms, under 0.5 s: {int((got < 0.5).sum())}/{len(waits)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--window", type=float, default=1.0, help="seconds each viewer listens")
    parser.add_argument("--gap", type=float, default=2.0, help="idle seconds between viewers")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with another process")
    args = parser.parse_args()
    from ros_harness import BusyCore, CameraProcess, NodeProcess, first_message_wait

    camera = CameraProcess(frames=0, rate=args.rate)  # starts once the first viewer makes the node subscribe
    with tempfile.TemporaryDirectory() as tmp, BusyCore() if args.busy else contextlib.nullcontext():
        node = NodeProcess({"device": "cpu"}, Path(tmp) / "node.log")
        try:
            if first_message_wait("depth/image", 30.0) is None:  # the node is up and answering
                raise RuntimeError(f"depth_node never answered:\n{node.log()}")
            direct, through_node = [], []
            for _ in range(args.trials):
                time.sleep(args.gap)
                direct.append(first_message_wait("image_raw", args.window))
                time.sleep(args.gap)
                through_node.append(first_message_wait("depth/image", args.window))
        finally:
            node.stop()
            camera.stop()
    print(f"first frame for a new viewer process, camera at {args.rate:g} Hz, {args.trials} trials, {args.gap:g} s "
          "idle before each"
          + (", one core kept busy" if args.busy else ""))
    print(summary("camera image_raw (baseline)", direct, args.window))
    print(summary("depth_node depth/image", through_node, args.window))
    both = [(d, n) for d, n in zip(direct, through_node, strict=True) if d is not None and n is not None]
    if both:
        print(f"median ratio depth/image / image_raw: {np.median([n / d for d, n in both]):.2f}x")


if __name__ == "__main__":
    main()
