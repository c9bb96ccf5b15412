"""Test harness: depth_node as its own process, and a real rclpy peer that feeds it frames over DDS.

No mocks: the peer is an rclpy node in the test process, the node under test is the installed `depth_node`
executable, and they meet over Fast DDS on this machine only (conftest.py sets the discovery range and a
private domain id).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

OUTPUTS = {
    "depth/image": Image,
    "depth/camera_info": CameraInfo,
    "depth/points": PointCloud2,
    "depth/colored": Image,
}


def depth_node_executable() -> str:
    """The installed console script (venv bin/ next to this Python, else PATH)."""
    candidate = Path(sys.executable).parent / "depth_node"
    found = str(candidate) if candidate.exists() else shutil.which("depth_node")
    if not found:
        raise RuntimeError("depth_node is not installed: run `make setup` (pip install -e .)")
    return found


class NodeProcess:
    """`depth_node --ros-args -p k:=v ...` in a subprocess; its log goes to a file the test can read."""

    def __init__(self, params: dict[str, object], log_path: Path, namespace: str = "",
                 wrapper: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 command: tuple[str, ...] | None = None) -> None:
        """``wrapper``: a command the node runs under (e.g. a profiler's ``py-spy record ... --``); ``env``: its
        environment (default: the test's); ``command``: what starts the node (default: the installed
        depth_node), e.g. ``(sys.executable, "-m", "depth_kd_ros.lifecycle_node")``."""
        executable = command or (depth_node_executable(),)
        args = [*wrapper, *executable, "--ros-args"] + (["-r", f"__ns:={namespace}"] if namespace else [])
        for key, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=os.environ.copy() if env is None else env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


CAMERA_SCRIPT = """
import sys, time, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
frames, rate, width, height = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
namespace = sys.argv[5]
rclpy.init()
node = rclpy.create_node("camera", namespace=namespace or None)
pub = node.create_publisher(Image, "image_raw", qos_profile_sensor_data)
pub_info = node.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=rgb.tobytes())
info = CameraInfo(width=width, height=height, k=[1.0 * width, 0, width / 2, 0, width, height / 2, 0, 0, 1])
msg.header.frame_id = info.header.frame_id = "camera_optical_frame"
while not pub.get_subscription_count():  # the node subscribes once someone listens to its depth
    time.sleep(0.05)
time.sleep(0.5)
sent = 0
while rclpy.ok() and (frames == 0 or sent < frames):
    msg.header.stamp = info.header.stamp = node.get_clock().now().to_msg()
    pub_info.publish(info)
    pub.publish(msg)
    sent += 1
    time.sleep(1.0 / rate)
print(sent, flush=True)
"""


class CameraProcess:
    """A camera driver in its own process: rgb8 Image + CameraInfo at ``rate`` Hz with the sensor-data QoS
    (best effort) most drivers use, from the moment the node subscribes; ``frames`` = 0: until stopped.
    ``env``: its environment (e.g. without the Fast DDS profile, as a user's driver has)."""

    def __init__(self, frames: int = 0, rate: float = 30.0, width: int = 640, height: int = 480,
                 namespace: str = "", env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CAMERA_SCRIPT, str(frames), str(rate), str(width),
                                      str(height), namespace], stdout=subprocess.PIPE, text=True,
                                     env=os.environ.copy() if env is None else env)

    def wait(self, timeout: float) -> int:
        """Frames sent, once a finite run is over."""
        out, _ = self.proc.communicate(timeout=timeout)
        return int(out.split()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class BusyCore:
    """Another process spinning on one core for the duration (a robot's SLAM, planner, drivers...)."""

    def __enter__(self) -> BusyCore:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


VIEWER_SCRIPT = """
import sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
topic, window = sys.argv[1], float(sys.argv[2])
reliability = ReliabilityPolicy.BEST_EFFORT if topic.endswith("image_raw") else ReliabilityPolicy.RELIABLE
rclpy.init()
node = rclpy.create_node("viewer")
got = []
node.create_subscription(Image, topic, lambda msg: got.append(time.perf_counter()), QoSProfile(
    depth=1, reliability=reliability), raw=True)
start = time.perf_counter()
while not got and time.perf_counter() - start < window:
    rclpy.spin_once(node, timeout_sec=0.01)
print(f"{got[0] - start:.4f}" if got else "none")
"""


def first_message_wait(topic: str, window: float, env: dict[str, str] | None = None) -> float | None:
    """A new viewer *process* (RViz toggled on, ``ros2 topic echo``) subscribes to the Image ``topic`` (absolute
    or relative) for ``window`` seconds: seconds from its subscription to its first message, None if none came.
    It offers what the publisher offers: best effort for a camera's image_raw, reliable otherwise. ``env``: its
    environment (default: the test's)."""
    out = subprocess.run([sys.executable, "-c", VIEWER_SCRIPT, topic, str(window)], capture_output=True,
                         text=True, timeout=60 + window, env=env)
    lines = out.stdout.strip().splitlines()
    return None if not lines or lines[-1] == "none" else float(lines[-1])


def stamp_of(seconds: float) -> Time:
    sec = int(seconds)
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))


def stamp_key(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def make_image(rgb: np.ndarray, stamp: Time, frame_id: str = "camera_optical_frame") -> Image:
    height, width = rgb.shape[:2]
    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=height, width=width,
                 encoding="rgb8", is_bigendian=0, step=width * 3, data=rgb.tobytes())


def make_camera_info(width: int, height: int, fx: float, stamp: Time | None = None,
                     frame_id: str = "camera_optical_frame") -> CameraInfo:
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(header=Header(stamp=stamp or Time(), frame_id=frame_id), width=width, height=height,
                      distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class Peer:
    """An rclpy node that publishes camera input and records every output message with its arrival time."""

    def __init__(self, name: str = "test_peer", subscribe: tuple[str, ...] = tuple(OUTPUTS),
                 namespace: str = "") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context, namespace=namespace or None)
        self.status_name = f"{namespace}/depth_node: depth"
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, "image_raw", reliable)
        self.pub_compressed = self.node.create_publisher(CompressedImage, "image_raw/compressed", reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self.received: dict[str, list[tuple[float, object]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # wakes wait_for as soon as a message lands
        for topic in subscribe:
            self.listen(topic)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._collector("/diagnostics"), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # Not executor.spin(): Executor.shutdown() from another thread cleans up under a running spin
        # (ros2/rclpy#968), which then looped hot and never returned here (a test hung in close()).
        while not self._closing.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, topic: str, best_effort: bool = False) -> str:
        """Record every message on output `topic`; reliable QoS (as RViz) or best effort (as sensor-data
        subscribers). Returns the key its messages are recorded under."""
        policy = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
        key = topic + ("#best_effort" if best_effort else "")
        self.node.create_subscription(OUTPUTS[topic], topic, self._collector(key),
                                      QoSProfile(depth=10, reliability=policy))
        return key

    def _collector(self, topic: str):
        def collect(msg) -> None:
            with self._lock:
                self.received[topic].append((time.time(), msg))
                self._arrived.notify_all()
        return collect

    def messages(self, topic: str) -> list:
        with self._lock:
            return [msg for _, msg in self.received[topic]]

    def timed(self, topic: str) -> list[tuple[float, object]]:
        with self._lock:
            return list(self.received[topic])

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def wait_for(self, predicate, timeout: float = 20.0, period: float = 0.05) -> bool:
        """Re-check `predicate` whenever a message arrives (and at least every `period` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            with self._arrived:
                self._arrived.wait(timeout=min(period, max(0.0, deadline - time.monotonic())))
        return predicate()

    def wait_connected(self, node: NodeProcess, timeout: float = 60.0, compressed: bool = False) -> None:
        """Until the node under test subscribes to our input and publishes our outputs."""
        pub = self.pub_compressed if compressed else self.pub_image

        def connected() -> bool:
            assert node.alive(), f"depth_node exited early:\n{node.log()}"
            return pub.get_subscription_count() > 0 and self.pub_info.get_subscription_count() > 0 and \
                self.node.count_publishers("depth/image") > 0

        if not self.wait_for(connected, timeout):
            raise TimeoutError(f"depth_node did not connect within {timeout}s:\n{node.log()}")
        time.sleep(0.5)  # let the node see our subscriptions too

    def by_stamp(self, topic: str, stamp: Time) -> list:
        key = stamp_key(stamp)
        return [m for m in self.messages(topic) if stamp_key(m.header.stamp) == key]

    def send_and_wait(self, msg, topic: str = "depth/image", timeout: float = 20.0):
        """Publish one frame (Image or CompressedImage) and return the first `topic` output for its stamp."""
        (self.pub_compressed if isinstance(msg, CompressedImage) else self.pub_image).publish(msg)
        if not self.wait_for(lambda: self.by_stamp(topic, msg.header.stamp), timeout):
            return None
        return self.by_stamp(topic, msg.header.stamp)[0]

    def _statuses(self) -> list:
        return [s for m in self.messages("/diagnostics") for s in m.status if s.name == self.status_name]

    def latest_diagnostics(self) -> dict[str, str]:
        history = self.diagnostics_history()
        return history[-1] if history else {}

    def diagnostics_history(self) -> list[dict[str, str]]:
        """Every /diagnostics status of the node so far, oldest first, as key -> value."""
        return [{kv.key: kv.value for kv in status.values} for status in self._statuses()]

    def latest_diagnostics_message(self) -> str:
        statuses = self._statuses()
        return statuses[-1].message if statuses else ""

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
