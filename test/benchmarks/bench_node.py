"""Benchmark depth_node's per-frame costs at 640x480, each against a baseline measured in the same run.

    .venv/bin/python test/benchmarks/bench_node.py [--checkpoint PATH] [--device cpu] [--frames 30]

1. student inference alone (DepthEstimator.predict) vs torchvision MobileNetV2 `features` on the same image
   (the reference figure in shared/NOTES.md: ~150 ms on 2 cores);
2. end-to-end latency, Image published -> depth/image received, through rclpy + Fast DDS with depth_node in
   its own process, vs inference alone (the ratio is the ROS overhead factor);
3. point cloud construction (vectorised depth_to_cloud) vs a plain per-point Python loop.
"""

from __future__ import annotations

import argparse
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
import torch  # noqa: E402
import torchvision  # noqa: E402

from depth_kd_ros.inference import DepthEstimator  # noqa: E402
from depth_kd_ros.node import DEFAULT_WEIGHTS  # noqa: E402
from depth_kd_ros.pointcloud import depth_to_cloud  # noqa: E402

WIDTH, HEIGHT = 640, 480


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def cloud_loop(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The baseline: one Python iteration per pixel."""
    out = np.zeros((*depth.shape, 4), np.float32)
    for v in range(depth.shape[0]):
        for u in range(depth.shape[1]):
            z = depth[v, u]
            if np.isfinite(z) and z > 0:
                out[v, u, :3] = ((u - cx) * z / fx, (v - cy) * z / fy, z)
            else:
                out[v, u, :3] = np.nan
    return out


def end_to_end(checkpoint: Path, device: str, frames: int) -> tuple[float, float, float]:
    """(median, p95, throughput Hz) of image-in -> depth-out through a real depth_node process."""
    from ros_harness import NodeProcess, Peer, make_camera_info, make_image, stamp_of

    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess({"model_path": checkpoint, "device": device}, Path(tmp) / "node.log")
        peer = Peer(name="bench_peer", subscribe=("depth/image",))
        try:
            peer.wait_connected(node)
            peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, 525.0))
            rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            latencies = []
            started = time.perf_counter()
            for _ in range(frames):  # one frame in flight at a time: pure latency, no queueing
                sent = time.time()
                if peer.send_and_wait(make_image(rgb, stamp_of(sent))) is None:
                    raise RuntimeError(f"no answer from depth_node:\n{node.log()}")
                latencies.append(time.time() - sent)
            throughput = frames / (time.perf_counter() - started)
        finally:
            peer.close()
            node.stop()
    return float(np.median(latencies[1:])), float(np.percentile(latencies[1:], 95)), throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_WEIGHTS, help="student checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--frames", type=int, default=30, help="frames for the end-to-end measurement")
    parser.add_argument("--repeats", type=int, default=10, help="repeats for the inference timings")
    args = parser.parse_args()

    rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    estimator = DepthEstimator(args.checkpoint, device=args.device)
    info = estimator.info
    student_s = timed(lambda: estimator.predict(rgb, fx=525.0), args.repeats)

    backbone = torchvision.models.mobilenet_v2(weights=None).features.eval().to(estimator.device)
    x = torch.rand(1, 3, HEIGHT, WIDTH, device=estimator.device)
    with torch.inference_mode():
        baseline_s = timed(lambda: backbone(x), args.repeats)

    depth = estimator.predict(rgb)
    cloud_s = timed(lambda: depth_to_cloud(depth, 525.0, 525.0, 319.5, 239.5), 20)
    loop_s = timed(lambda: cloud_loop(depth, 525.0, 525.0, 319.5, 239.5), 1)
    np.testing.assert_allclose(depth_to_cloud(depth, 525.0, 525.0, 319.5, 239.5)[..., :3],
                               cloud_loop(depth, 525.0, 525.0, 319.5, 239.5)[..., :3], rtol=1e-5, equal_nan=True)

    e2e_median, e2e_p95, throughput = end_to_end(args.checkpoint, args.device, args.frames)

    print(f"depth_node benchmark, {WIDTH}x{HEIGHT} input, device={estimator.device}, "
          f"torch threads={torch.get_num_threads()}, checkpoint={args.checkpoint.name} "
          f"({info.arch} at {info.input_width}x{info.input_height})")
    print(f"{'measurement':44s} {'ms':>9s}  {'baseline':44s} {'ms':>9s} {'ratio':>7s}")
    rows = [
        ("student inference (predict, incl. resizes)", student_s, "MobileNetV2 features at 640x480", baseline_s),
        ("end-to-end image->depth/image (median)", e2e_median, "student inference alone", student_s),
        ("end-to-end image->depth/image (p95)", e2e_p95, "student inference alone", student_s),
        ("point cloud, vectorised", cloud_s, "point cloud, per-point Python loop", loop_s),
    ]
    for name, value, base_name, base in rows:
        print(f"{name:44s} {value * 1e3:9.2f}  {base_name:44s} {base * 1e3:9.2f} {value / base:7.3f}")
    print(f"sequential throughput through DDS: {throughput:.1f} frames/s")


if __name__ == "__main__":
    main()
