"""depth_node: camera images in, metric depth image, camera info, point cloud and diagnostics out.

A thin ROS shell over plain functions (image_codec, inference, pointcloud, camera_info). Subscription
callbacks only park the newest message in a one-slot mailbox; a worker thread does all the work, so a slow
model drops frames (counted) instead of building a queue or growing latency.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from depth_kd_ros.camera_info import IntrinsicsError, intrinsics_from_camera_info, scale_camera_info
from depth_kd_ros.image_codec import ImageDecodeError, colorize_depth, compressed_to_rgb, image_to_rgb
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.params import NodeParams, declare_parameters
from depth_kd_ros.pointcloud import cloud_fields, depth_to_cloud
from depth_kd_ros.serialized import cloud_cdr, depth_image_cdr, image_cdr
from depth_kd_ros.stats import FrameStats

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = {"onnxruntime": WEIGHTS_DIR / "student_default.onnx",
                   "torch": WEIGHTS_DIR / "student_default.safetensors"}
BAD_INPUT_LOG_PERIOD_S = 5.0
SUBSCRIBER_CHECK_PERIOD_S = 0.5


class DepthNode(Node):
    """Runs the student network on the newest camera frame and publishes depth, camera info and points."""

    def __init__(self, **kwargs) -> None:
        super().__init__("depth_node", **kwargs)
        self.params: NodeParams = declare_parameters(self)
        model_path = self.params.model_path or default_model(self.params.backend)
        self.estimator = DepthEstimator(model_path, device=self.params.device, fp16=self.params.fp16,
                                        backend=self.params.backend, threads=self.params.threads)
        self.estimator.warmup()
        self.get_logger().info(
            f"model {model_path} ({self.estimator.info.arch}, {self.estimator.info.input_width}x"
            f"{self.estimator.info.input_height}) with {self.estimator.backend.name} on {self.estimator.device}"
        )
        self.stats = FrameStats()
        self._last_bad_log: dict[str, float] = {}
        self._camera_info: CameraInfo | None = None
        self._mailbox: tuple[Image | CompressedImage, float] | None = None  # (newest frame, its arrival)
        self._mailbox_ready = threading.Condition()
        self._stopping = False

        # Reliable publishers reach both reliable (RViz's default) and best-effort subscribers.
        out_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_points = self.create_publisher(PointCloud2, "depth/points", out_qos)
        self.pub_colored = (
            self.create_publisher(Image, "depth/colored", out_qos) if self.params.publish_colored else None
        )
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # Depth 1: the middleware keeps no backlog either.
        self._in_qos = QoSProfile(
            depth=1,
            reliability=(ReliabilityPolicy.RELIABLE if self.params.input_reliability == "reliable"
                         else qos_profile_sensor_data.reliability),
        )
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, self._in_qos)
        self._image_sub = None
        self._update_image_subscription()
        self.create_timer(SUBSCRIBER_CHECK_PERIOD_S, self._update_image_subscription)
        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work_loop, name="depth_worker", daemon=True)
        self._worker.start()

    def _update_image_subscription(self) -> None:
        """Subscribe to images only while someone listens to an output, as depth_image_proc does."""
        wanted = self._outputs_wanted()
        if wanted and self._image_sub is None:
            if self.params.image_transport == "compressed":
                self._image_sub = self.create_subscription(
                    CompressedImage, "image_raw/compressed", self._on_image, self._in_qos)
            else:
                self._image_sub = self.create_subscription(Image, "image_raw", self._on_image, self._in_qos)
        elif not wanted and self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None

    # --- callbacks: cheap, never block -------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.stats.frame_in()
        with self._mailbox_ready:
            if self._mailbox is not None:
                self.stats.drop()
            self._mailbox = (msg, time.perf_counter())
            self._mailbox_ready.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # --- worker ----------------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            with self._mailbox_ready:
                while self._mailbox is None and not self._stopping:
                    self._mailbox_ready.wait()
                if self._stopping:
                    return
                (msg, arrived), self._mailbox = self._mailbox, None
            try:
                self.process(msg, arrived)
            except Exception as error:  # noqa: BLE001 - one bad frame must never kill the node
                self._bad_input("processing", f"frame failed: {type(error).__name__}: {error}")

    def _outputs_wanted(self) -> bool:
        pubs = [self.pub_depth, self.pub_info, self.pub_points, self.pub_colored]
        return any(p is not None and p.get_subscription_count() > 0 for p in pubs)

    def process(self, msg: Image | CompressedImage, arrived: float | None = None) -> None:
        """Decode, infer and publish one frame: the whole per-frame path, top to bottom.

        ``arrived``: perf_counter() when the callback took the frame; each stage's time goes to /diagnostics.
        """
        started = time.perf_counter()
        if not self._outputs_wanted():  # the last subscriber left since this frame arrived
            return
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg.format, msg.data)
            else:
                rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                   bool(msg.is_bigendian))
        except ImageDecodeError as error:
            self._bad_input("image", f"bad image on {self._image_topic()}: {error}")
            return
        height, width = rgb.shape[:2]

        info, intrinsics = self._camera_info, None
        if info is None:
            self._bad_input("no_camera_info", "no CameraInfo received yet: publishing depth, points wait")
        else:
            info = scale_camera_info(info, width, height)
            info.header = msg.header
            try:
                intrinsics = intrinsics_from_camera_info(info)
            except IntrinsicsError as error:
                self._bad_input("intrinsics", f"unusable CameraInfo: {error}")

        decoded = time.perf_counter()
        fx = intrinsics[0] if (intrinsics and self.params.metric_rescale) else None
        depth = self.estimator.predict(rgb, fx=fx)
        self._apply_depth_limits(depth)
        inferred = time.perf_counter()
        self.stats.inference_done(inferred - decoded)

        if self.pub_depth.get_subscription_count():
            self.pub_depth.publish(depth_image_cdr(msg.header, depth))
        if info is not None and self.pub_info.get_subscription_count():
            self.pub_info.publish(info)
        if intrinsics and self.pub_points.get_subscription_count():
            self.pub_points.publish(self._cloud_msg(msg, depth, rgb, intrinsics))
        if self.pub_colored is not None and self.pub_colored.get_subscription_count():
            self.pub_colored.publish(image_cdr(msg.header, "bgr8", colorize_depth(depth, *self._depth_range())))
        done = time.perf_counter()
        self.stats.frame_out(msg.header.stamp)
        self.stats.stages({"waiting for the worker": started - (arrived or started), "decode": decoded - started,
                           "inference": inferred - decoded, "encode and publish": done - inferred})

    def _depth_range(self) -> tuple[float, float]:
        lo = self.params.min_depth or self.estimator.info.min_depth
        hi = self.params.max_depth or self.estimator.info.max_depth
        return lo, hi

    def _apply_depth_limits(self, depth: np.ndarray) -> None:
        """User limits tighter than the model's own: outside them is invalid (NaN), per REP 118."""
        if self.params.min_depth or self.params.max_depth:
            lo, hi = self._depth_range()
            with np.errstate(invalid="ignore"):
                depth[(depth < lo) | (depth > hi)] = np.nan

    def _cloud_msg(self, msg, depth: np.ndarray, rgb: np.ndarray, intrinsics) -> bytes:
        with_rgb = self.params.points_rgb
        points = depth_to_cloud(depth, *intrinsics, rgb=rgb if with_rgb else None,
                                decimation=self.params.points_decimation)
        return cloud_cdr(msg.header, points, cloud_fields(with_rgb))

    # --- bad input and diagnostics ---------------------------------------------------------------------
    def _image_topic(self) -> str:
        suffix = "/compressed" if self.params.image_transport == "compressed" else ""
        return self.resolve_topic_name("image_raw" + suffix)

    def _bad_input(self, kind: str, message: str) -> None:
        """Count it for /diagnostics; log each distinct problem at most once per period.

        Problems differing only in numbers (sizes, byte counts) share one throttle.
        """
        self.stats.bad_input(kind)
        problem = re.sub(r"\d+", "#", message)
        now = time.monotonic()
        if now - self._last_bad_log.get(problem, -1e9) >= BAD_INPUT_LOG_PERIOD_S:
            self._last_bad_log[problem] = now
            self.get_logger().warning(message)

    def _publish_diagnostics(self) -> None:
        report = self.stats.report()
        level, summary = DiagnosticStatus.OK, "running"
        if not self._outputs_wanted():
            summary = "idle: no subscribers to depth outputs"
        if report.new_bad_inputs:
            level, summary = DiagnosticStatus.WARN, "bad input since last report"
        values = {
            "backend": self.estimator.backend.name,
            "device": self.estimator.device,
            "model": self.estimator.info.arch,
            "input rate (Hz)": f"{report.input_rate_hz:.2f}",
            "output rate (Hz)": f"{report.output_rate_hz:.2f}",
            "inference latency mean (ms)": f"{report.inference_ms_mean:.1f}",
            "end-to-end latency mean (ms)": f"{report.latency_ms_mean:.1f}",
            "frames in": str(report.frames_in),
            "frames out": str(report.frames_out),
            "dropped frames": str(report.dropped),
            "bad inputs": str(sum(report.bad_inputs.values())),
            **{f"bad inputs: {k}": str(v) for k, v in sorted(report.bad_inputs.items())},
            **{f"stage: {k} mean (ms)": f"{v:.2f}" for k, v in report.stage_ms_mean.items()},
        }
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: depth", message=summary,
            hardware_id=self.estimator.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_diag.publish(DiagnosticArray(header=header, status=[status]))

    def destroy_node(self) -> None:
        with self._mailbox_ready:
            self._stopping = True
            self._mailbox_ready.notify()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def default_model(backend: str) -> Path:
    """The package's weights for ``backend``; ``auto`` prefers ONNX Runtime (faster on CPU, no torch needed)."""
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            backend = "torch"
        else:
            backend = "onnxruntime"
    return DEFAULT_WEIGHTS[backend]


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = DepthNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:  # start-up failures (bad model file, bad parameters): one clear line
        print(f"depth_node: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
