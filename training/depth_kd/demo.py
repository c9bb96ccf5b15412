"""The main job: render a sequence, play it through the real depth_node over DDS, score it against ground truth.

    depth-kd demo --out demo_out

1. renders a short camera sequence of the synthetic world to a rosbag2 recording (MCAP), with exact depth;
2. starts the installed `depth_node` as its own process (DDS on this machine only, a private domain id);
3. plays the bag's image and camera_info messages to it at the recorded rate, and records the node's
   outputs to another MCAP bag, serialized as received (what `ros2 bag record` would write);
4. scores every answered frame against the ground-truth depth, writes preview.png
   (RGB | predicted depth | ground truth) and prints throughput, latency and accuracy.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from depth_kd.metrics import DepthMetricAccumulator
from depth_kd.render.record import record_sequence
from depth_kd_ros.checkpoint import load_checkpoint
from depth_kd_ros.image_codec import colorize_depth, depth_image_to_metres, image_to_rgb

log = logging.getLogger(__name__)

RECORDED_OUTPUTS = {
    "depth/image": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "depth/points": "sensor_msgs/msg/PointCloud2",
}
FASTDDS_PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds.xml"


@dataclass
class DemoResult:
    frames_sent: int
    frames_answered: int
    throughput_hz: float
    latency_ms_median: float
    latency_ms_p95: float
    metrics: dict[str, float]
    preview: Path
    outputs_bag: Path


def _isolate_dds() -> None:
    """Keep DDS traffic on this machine and off other runs' domains; big frames need the SHM profile."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    if FASTDDS_PROFILE.exists():
        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))


def _depth_node_command(model: Path | None, device: str) -> list[str]:
    exe = Path(sys.executable).parent / "depth_node"
    cmd = [str(exe) if exe.exists() else (shutil.which("depth_node") or "depth_node"), "--ros-args",
           "-p", f"device:={device}", "-p", "points_decimation:=2"]
    return cmd + (["-p", f"model_path:={model}"] if model else [])


def run_demo(out: Path, frames: int = 60, width: int = 640, height: int = 480, family: str = "indoor",
             seed: int = 2026, model: Path | None = None, device: str = "cpu", rate_hz: float = 10.0,
             timeout_s: float = 120.0) -> DemoResult:
    """Run the whole demo into `out` (its previous bags are replaced) and return what it measured."""
    _isolate_dds()
    import rclpy  # after the DDS environment is set
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import CameraInfo, Image

    out.mkdir(parents=True, exist_ok=True)
    input_bag, outputs_bag = out / "input", out / "outputs"
    for old in (input_bag, outputs_bag):
        shutil.rmtree(old, ignore_errors=True)
    log.info("rendering %d %s frames at %dx%d", frames, family, width, height)
    record_sequence(input_bag, family=family, frames=frames, seed=seed, width=width, height=height,
                    rate_hz=rate_hz, progress=False)

    node_log = out / "depth_node.log"
    with open(node_log, "wb") as node_out:
        node = _spawn(_depth_node_command(model, device), node_out)
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("depth_kd_demo", context=context)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_image = peer.create_publisher(Image, "image_raw", reliable)
    pub_info = peer.create_publisher(CameraInfo, "camera_info", reliable)

    typestore = get_typestore(Stores.ROS2_JAZZY)
    writer = Writer(outputs_bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    connections = {t: writer.add_connection("/" + t, msgtype, typestore=typestore)
                   for t, msgtype in RECORDED_OUTPUTS.items()}
    lock = threading.Lock()
    answers: dict[int, tuple[float, bytes]] = {}  # stamp -> (arrival time, serialized depth image)

    def recorder(topic: str):
        def record(raw: bytes) -> None:
            now = time.time()
            with lock:
                writer.write(connections[topic], time.time_ns(), raw)
                if topic == "depth/image":
                    stamp = deserialize_message(raw, Image).header.stamp
                    answers[stamp.sec * 10**9 + stamp.nanosec] = (now, raw)
        return record

    for topic in RECORDED_OUTPUTS:
        peer.create_subscription(Image if topic == "depth/image" else _msg_class(topic), topic,
                                 recorder(topic), reliable, raw=True)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    stop = threading.Event()

    def spin() -> None:  # not executor.spin(): shutting it down from this thread races it (ros2/rclpy#968)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    sent: dict[int, float] = {}
    try:
        _wait(lambda: pub_image.get_subscription_count() > 0 and peer.count_publishers("depth/image") > 0,
              timeout_s, node, node_log)
        time.sleep(1.0)  # let the node discover our subscriptions before the first frame
        period = 1.0 / rate_hz
        started = time.time()
        with AnyReader([input_bag]) as reader:
            wanted = [c for c in reader.connections if c.topic in ("/camera/image_raw", "/camera/camera_info")]
            for connection, _, raw in reader.messages(connections=wanted):
                if connection.topic == "/camera/camera_info":
                    pub_info.publish(raw)  # already CDR: publish it as recorded
                    continue
                stamp = deserialize_message(raw, Image).header.stamp
                key = stamp.sec * 10**9 + stamp.nanosec
                time.sleep(max(0.0, started + len(sent) * period - time.time()))
                sent[key] = time.time()
                pub_image.publish(raw)
        _wait(lambda: len(answers) >= len(sent), 5.0 + 2 * period, node, node_log, must=False)
        duration = max(max((t for t, _ in answers.values()), default=started) - started, 1e-9)
    finally:
        stop.set()
        spinner.join(timeout=5)
        executor.shutdown()
        peer.destroy_node()
        rclpy.shutdown(context=context)
        with lock:
            writer.close()
        node.terminate()
        node.wait(timeout=15)

    info = load_checkpoint(model)[1] if model else _default_info()
    metrics, preview = _score(input_bag, answers, out / "preview.png", info.min_depth, info.max_depth)
    latencies = np.array([answers[k][0] - sent[k] for k in answers if k in sent]) * 1e3
    return DemoResult(
        frames_sent=len(sent), frames_answered=len(answers), throughput_hz=len(answers) / duration,
        latency_ms_median=float(np.median(latencies)) if latencies.size else float("nan"),
        latency_ms_p95=float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
        metrics=metrics, preview=preview, outputs_bag=outputs_bag,
    )


def _msg_class(topic: str):
    from sensor_msgs.msg import CameraInfo, PointCloud2

    return {"depth/camera_info": CameraInfo, "depth/points": PointCloud2}[topic]


def _default_info():
    from depth_kd_ros.node import DEFAULT_WEIGHTS

    return load_checkpoint(DEFAULT_WEIGHTS["torch"])[1]  # the .onnx twin carries the same ModelInfo


def _spawn(cmd: list[str], stdout):
    import subprocess

    return subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, env=os.environ.copy())


def _wait(predicate, timeout_s: float, node, node_log: Path, must: bool = True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"depth_node exited ({node.returncode}):\n{node_log.read_text(errors='replace')}")
        if predicate():
            return
        time.sleep(0.05)
    if must:
        raise TimeoutError(f"depth_node did not connect within {timeout_s}s; its log: {node_log}")


def _score(input_bag: Path, answers: dict[int, tuple[float, bytes]], preview_path: Path,
           min_depth: float, max_depth: float) -> tuple[dict[str, float], Path]:
    """Metrics of every answered frame against ground truth; preview of the frame with the most depth range."""
    import torch

    accumulator = DepthMetricAccumulator(min_depth=min_depth, max_depth=max_depth)
    best_key, best_spread = None, -1.0
    for key, gt, _ in _ground_truth(input_bag, answers):
        pred = _answer_depth(answers[key][1])
        accumulator.update(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None])
        spread = float(np.nanpercentile(gt, 95) - np.nanpercentile(gt, 5))
        if spread > best_spread:
            best_key, best_spread = key, spread
    metrics = accumulator.compute() if accumulator.count else {}
    for key, gt, rgb in _ground_truth(input_bag, {best_key: None} if best_key is not None else {}):
        lo, hi = float(np.nanpercentile(gt, 1)), float(np.nanpercentile(gt, 99))
        panels = [np.ascontiguousarray(rgb[..., ::-1]), colorize_depth(_answer_depth(answers[key][1]), lo, hi),
                  colorize_depth(gt, lo, hi)]
        for panel, label in zip(panels, ("RGB", "predicted depth", "ground truth"), strict=True):
            cv2.putText(panel, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.imwrite(str(preview_path), np.hstack(panels))
    return metrics, preview_path


def _answer_depth(raw: bytes) -> np.ndarray:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    msg = deserialize_message(raw, Image)
    return np.frombuffer(msg.data, np.float32).reshape(msg.height, msg.width).copy()


def _ground_truth(input_bag: Path, keys) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(stamp, ground-truth depth, rgb) of the input frames whose stamps are in `keys`, streaming."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import Image

    rgb_by_key: dict[int, np.ndarray] = {}
    depth_by_key: dict[int, np.ndarray] = {}
    with AnyReader([input_bag]) as reader:
        wanted = [c for c in reader.connections if c.topic in ("/camera/depth/image", "/camera/image_raw")]
        for connection, _, raw in reader.messages(connections=wanted):
            msg = deserialize_message(raw, Image)
            key = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            if key not in keys:
                continue
            if connection.topic == "/camera/image_raw":
                rgb_by_key[key] = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
            else:
                depth_by_key[key] = depth_image_to_metres(msg.encoding, msg.height, msg.width, msg.step, msg.data)
            if key in rgb_by_key and key in depth_by_key:  # a frame is complete: hand it over, keep nothing
                yield key, depth_by_key.pop(key), rgb_by_key.pop(key)


def format_result(result: DemoResult) -> str:
    m = result.metrics
    return "\n".join([
        f"frames: {result.frames_answered}/{result.frames_sent} answered",
        f"throughput: {result.throughput_hz:.1f} frames/s",
        f"latency (image published -> depth received): median {result.latency_ms_median:.1f} ms, "
        f"p95 {result.latency_ms_p95:.1f} ms",
        "accuracy vs ground truth: " + (f"AbsRel {m['abs_rel']:.3f}  RMSE {m['rmse']:.3f} m  d1 {m['d1']:.3f}"
                                        if m else "no frames scored"),
        f"preview: {result.preview}",
        f"node outputs: {result.outputs_bag}",
    ])


if __name__ == "__main__":  # pragma: no cover - `depth-kd demo` is the entry point
    logging.basicConfig(level=logging.INFO)
    print(format_result(run_demo(Path(tempfile.mkdtemp()))))
