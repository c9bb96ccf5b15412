"""Benchmark depth_node's per-frame costs at 640x480 input, each against a baseline measured in the same run.

    .venv/bin/python test/benchmarks/bench_node.py [--model CKPT.safetensors] [--threads 0] [--frames 60]
                                                   [--sections 1234]

1. predict (DepthEstimator.predict, resizes included) for each backend: torch fp32, ONNX Runtime fp32, ONNX
   Runtime int8 (QDQ, calibrated on real frames), at the model's processing size and at 224x288 (same
   weights: the networks are fully convolutional); ratio to torch fp32 at the same size; threads as the node
   chooses them (0, auto: params.AUTO_THREADS) unless --threads says otherwise. Anchor: FastDepth, int8 TFLite,
   224x224, with ONNX Runtime's threads (skipped without ../shared).
2. a busy robot: p95 predict latency while another process keeps one core busy, against the idle median,
   for 1 and 2 threads per backend (goal: at most 2x).
3. end to end, Image published -> depth/image received, through rclpy + Fast DDS with depth_node in its own
   process on the node's default backend, against predict alone; and where the node's time goes (its
   /diagnostics stage means).
4. point cloud construction (vectorised depth_to_cloud) vs a per-point Python loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds.xml"))
sys.path.insert(0, str(REPO / "test"))

import numpy as np  # noqa: E402
from frames import FX, HEIGHT, SHARED, WIDTH, cpu_description, latencies, real_frame  # noqa: E402

from depth_kd.export import export_int8, export_onnx  # noqa: E402
from depth_kd_ros.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from depth_kd_ros.inference import DepthEstimator  # noqa: E402
from depth_kd_ros.node import DEFAULT_WEIGHTS  # noqa: E402
from depth_kd_ros.params import NodeParams, network_threads  # noqa: E402
from depth_kd_ros.pointcloud import depth_to_cloud  # noqa: E402

CALIBRATION = f"{SHARED}/data/real/bags/redkitchen_7scenes#frames=0:150"
FASTDEPTH = SHARED / "models" / "fastdepth" / "fast_depth_224_int8.tflite"


def build_variants(checkpoint: Path, sizes: list[tuple[int, int]], tmp: Path) -> dict[tuple[str, tuple], Path]:
    """{(variant, size): model file}: the checkpoint re-declared at each size, exported to fp32 and int8 ONNX."""
    model, info = load_checkpoint(checkpoint)
    files = {}
    for height, width in sizes:
        sized = tmp / f"student_{height}x{width}.safetensors"
        save_checkpoint(sized, model, dataclasses.replace(info, input_height=height, input_width=width))
        files["torch fp32", (height, width)] = sized
        export_onnx(sized, tmp / f"student_{height}x{width}.onnx")
        files["onnxruntime fp32", (height, width)] = tmp / f"student_{height}x{width}.onnx"
        if Path(CALIBRATION.split("#")[0]).exists():
            int8 = tmp / f"student_{height}x{width}_int8.onnx"
            export_int8(sized, int8, calibration=[CALIBRATION], frames=32)
            files["onnxruntime int8", (height, width)] = int8
    return files


def tflite_anchor(rgb: np.ndarray, repeats: int, threads: int) -> float | None:
    """Median seconds of FastDepth int8 TFLite at 224x224 (resize to its input included), or None."""
    if not FASTDEPTH.exists():
        return None
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(FASTDEPTH), num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run() -> None:
        interpreter.set_tensor(inp["index"], cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)[None])
        interpreter.invoke()
        cv2.resize(interpreter.get_tensor(out["index"])[0, :, :, 0].astype(np.float32), (WIDTH, HEIGHT))

    return float(np.median(latencies(run, repeats)))


def estimator(path: Path, threads: int) -> DepthEstimator:
    """On the CPU with ``threads`` as the node takes them (0: auto, per backend)."""
    return DepthEstimator(path, device="cpu", threads=network_threads(threads, path))


def cloud_loop(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The baseline: one Python iteration per pixel."""
    out = np.zeros((*depth.shape, 4), np.float32)
    for v in range(depth.shape[0]):
        for u in range(depth.shape[1]):
            z = depth[v, u]
            out[v, u, :3] = ((u - cx) * z / fx, (v - cy) * z / fy, z) if np.isfinite(z) and z > 0 else np.nan
    return out


def end_to_end(frames: int, wrapper: tuple[str, ...] = (), params: dict | None = None,
               ) -> tuple[np.ndarray, dict[str, str]]:
    """(latencies in s, the node's /diagnostics values) of Image published -> depth/image received, through a
    depth_node process with its default parameters, one frame in flight at a time.

    The camera publishes pre-serialised frames and the subscriber takes depth serialised, as C++ drivers and
    C++ subscribers (RViz) do: the figure is the node's time plus DDS, without a Python peer's message
    conversion on either side.
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from ros_harness import NodeProcess, make_camera_info, make_image, stamp_of
    from sensor_msgs.msg import CameraInfo, Image

    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    arrived: dict[tuple[int, int], float] = {}
    statuses: list[dict[str, str]] = []
    ready = threading.Condition()

    def on_depth(raw: bytes) -> None:
        now = time.perf_counter()
        with ready:
            arrived[struct.unpack_from("<iI", raw, 4)] = now  # CDR: 4-byte encapsulation, then header.stamp
            ready.notify_all()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        statuses.extend({kv.key: kv.value for kv in status.values} for status in msg.status
                        if status.name.endswith("depth_node: depth"))

    context = rclpy.Context()
    rclpy.init(context=context)
    camera = rclpy.create_node("bench_camera", context=context)
    pub_image = camera.create_publisher(Image, "image_raw", reliable)
    pub_info = camera.create_publisher(CameraInfo, "camera_info", reliable)
    camera.create_subscription(Image, "depth/image", on_depth, reliable, raw=True)
    camera.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(camera)
    threading.Thread(target=executor.spin, daemon=True).start()
    rgb = real_frame()
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess({"device": "cpu", "diagnostics_period": 0.5, **(params or {})}, Path(tmp) / "node.log",
                           wrapper=wrapper)
        try:
            deadline = time.monotonic() + 60
            while pub_image.get_subscription_count() == 0:  # the node subscribes once depth/image has a reader
                if time.monotonic() > deadline or not node.alive():
                    raise RuntimeError(f"depth_node did not subscribe:\n{node.log()}")
                time.sleep(0.05)
            pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
            time.sleep(0.5)
            samples = []
            for index in range(frames):
                stamp = stamp_of(time.time())
                key = (stamp.sec, stamp.nanosec)
                raw = serialize_message(make_image(rgb, stamp))
                with ready:
                    sent = time.perf_counter()
                    pub_image.publish(raw)
                    if not ready.wait_for(lambda key=key: key in arrived, timeout=20):
                        raise RuntimeError(f"no answer to frame {index}:\n{node.log()}")
                    samples.append(arrived[key] - sent)
            time.sleep(1.0)  # one more diagnostics period covering the last frames
        finally:
            node.stop()
            executor.shutdown()
            rclpy.shutdown(context=context)
    windows = [d for d in statuses if any(k.startswith("stage: ") for k in d)][1:]  # the first: warm-up frames
    diagnostics = dict(windows[-1]) if windows else {}
    for key in [k for k in diagnostics if k.startswith("stage: ")]:  # mean over the windows that saw frames
        diagnostics[key] = str(np.mean([float(d[key]) for d in windows if key in d]))
    return np.asarray(samples[2:]), diagnostics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS["torch"],
                        help="student checkpoint (.safetensors); exported to ONNX and int8 here")
    parser.add_argument("--threads", type=int, default=NodeParams.threads,
                        help="threads for section 1 (default 0: the node's auto choice per backend)")
    parser.add_argument("--frames", type=int, default=60, help="frames for the end-to-end measurement")
    parser.add_argument("--repeats", type=int, default=40, help="repeats for each predict timing")
    parser.add_argument("--load-repeats", type=int, default=150, help="repeats under load (p95)")
    parser.add_argument("--sections", default="1234", help="which sections to run, e.g. 3 for end to end only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"CPU: {cpu_description()}, {os.cpu_count()} cores")
    if set(args.sections) & {"1", "2"}:
        backends(args)
    if "3" in args.sections:
        node_end_to_end(args)
    if "4" in args.sections:
        point_cloud()


def backends(args: argparse.Namespace) -> None:
    """Sections 1 and 2: predict per backend and size, idle and with one core busy."""
    rgb = real_frame()
    info = load_checkpoint(args.model)[1]
    default_size = (info.input_height, info.input_width)
    sizes = [default_size] + ([(224, 288)] if default_size != (224, 288) else [])

    with tempfile.TemporaryDirectory() as tmp:
        files = build_variants(args.model, sizes, Path(tmp))
        print(f"depth_node benchmark: {WIDTH}x{HEIGHT} input, model {args.model.name} ({info.arch}); "
              f"int8 calibration: {CALIBRATION if len(files) > 2 * len(sizes) else 'skipped'}")

        if "1" in args.sections:
            predict_table(args, rgb, files, default_size)
        if "2" in args.sections:
            busy_table(args, rgb, files, default_size)


def predict_table(args: argparse.Namespace, rgb: np.ndarray, files: dict, default_size: tuple[int, int]) -> None:
    print(f"\n1. predict at {WIDTH}x{HEIGHT} input (resizes included), median of {args.repeats}")
    print(f"{'backend':18s} {'size':>8s} {'threads':>7s} {'ms':>8s} {'frames/s':>9s} {'vs torch fp32':>14s}")
    medians = {}
    for (variant, size), path in files.items():
        medians[variant, size] = float(np.median(latencies(lambda e=estimator(path, args.threads):
                                                            e.predict(rgb, fx=FX), args.repeats)))
    for (variant, size), ms in medians.items():
        base = medians["torch fp32", size]
        threads = network_threads(args.threads, files[variant, size])
        print(f"{variant:18s} {size[0]:>3d}x{size[1]:<4d} {threads:7d} {ms * 1e3:8.2f} {1 / ms:9.1f} "
              f"{ms / base:14.3f}")
    anchor_threads = network_threads(args.threads, DEFAULT_WEIGHTS["onnxruntime"])
    anchor = tflite_anchor(rgb, args.repeats, anchor_threads)
    if anchor is None:
        print("FastDepth int8 TFLite 224x224: skipped (no ../shared/models/fastdepth)")
    else:
        print(f"{'FastDepth TFLite':18s} {'224x224':>8s} {anchor_threads:7d} {anchor * 1e3:8.2f} {1 / anchor:9.1f} "
              f"{anchor / medians['torch fp32', default_size]:14.3f}  (anchor, int8, whole-frame resize)")


def busy_table(args: argparse.Namespace, rgb: np.ndarray, files: dict, default_size: tuple[int, int]) -> None:
    from ros_harness import BusyCore

    print(f"\n2. a busy robot: one core kept busy by another process; predict at {default_size[0]}x"
          f"{default_size[1]}, {args.load_repeats} calls")
    print(f"{'backend':18s} {'threads':>7s} {'idle median ms':>15s} {'loaded median':>14s} "
          f"{'loaded p95':>11s} {'p95 / idle':>11s}")
    for (variant, size), path in files.items():
        if size != default_size:
            continue
        for threads in (1, 2):
            est = estimator(path, threads)
            idle = float(np.median(latencies(lambda e=est: e.predict(rgb, fx=FX), args.repeats)))
            with BusyCore():
                loaded = latencies(lambda e=est: e.predict(rgb, fx=FX), args.load_repeats)
            p95 = float(np.percentile(loaded, 95))
            print(f"{variant:18s} {threads:7d} {idle * 1e3:15.2f} {np.median(loaded) * 1e3:14.2f} "
                  f"{p95 * 1e3:11.2f} {p95 / idle:11.2f}")


def node_end_to_end(args: argparse.Namespace) -> None:
    """Section 3: Image in -> depth/image out through a depth_node process, against predict alone."""
    rgb = real_frame()
    default = estimator(DEFAULT_WEIGHTS["onnxruntime"], NodeParams.threads)
    alone = float(np.median(latencies(lambda: default.predict(rgb, fx=FX), args.repeats)))
    e2e, diagnostics = end_to_end(args.frames)
    print(f"\n3. end to end through DDS, depth_node defaults ({diagnostics.get('backend')} on "
          f"{diagnostics.get('device')}, {network_threads(NodeParams.threads, DEFAULT_WEIGHTS['onnxruntime'])} "
          f"thread(s)), {len(e2e)} frames one at a time; "
          "serialised camera and subscriber (as C++ nodes)")
    print(f"{'measurement':40s} {'ms':>8s}  {'ratio to predict alone':>22s}")
    for name, value in [("predict alone (median)", alone), ("end to end (median)", float(np.median(e2e))),
                        ("end to end (p95)", float(np.percentile(e2e, 95)))]:
        print(f"{name:40s} {value * 1e3:8.2f}  {value / alone:22.3f}")
    stages = {k.removeprefix("stage: ").removesuffix(" mean (ms)"): float(v) for k, v in diagnostics.items()
              if k.startswith("stage: ")}
    if "inference" in stages:  # the same frames' network time in the node: immune to the noise in "alone"
        label = "end to end (median) / node's inference"
        print(f"{label:40s} {np.median(e2e) * 1e3:8.2f}  {np.median(e2e) * 1e3 / stages['inference']:22.3f}")
    for name, ms in stages.items():
        print(f"  in the node: {name:27s} {ms:8.2f}")
    print(f"  outside the node (DDS in and out, subscriber): {np.median(e2e) * 1e3 - sum(stages.values()):.2f}")


def point_cloud() -> None:
    """Section 4: the vectorised cloud against a per-point loop."""
    depth = estimator(DEFAULT_WEIGHTS["onnxruntime"], NodeParams.threads).predict(real_frame())
    cloud = float(np.median(latencies(lambda: depth_to_cloud(depth, FX, FX, 319.5, 239.5), 20)))
    loop = float(np.median(latencies(lambda: cloud_loop(depth, FX, FX, 319.5, 239.5), 1)))
    np.testing.assert_allclose(depth_to_cloud(depth, FX, FX, 319.5, 239.5)[..., :3],
                               cloud_loop(depth, FX, FX, 319.5, 239.5)[..., :3], rtol=1e-5, equal_nan=True)
    print(f"\n4. point cloud {WIDTH}x{HEIGHT}: vectorised {cloud * 1e3:.2f} ms, per-point Python loop "
          f"{loop * 1e3:.0f} ms, ratio {cloud / loop:.4f}")


if __name__ == "__main__":
    main()
