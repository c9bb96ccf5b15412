"""depth_node: camera images in, metric depth image, camera info, point cloud and diagnostics out.

A thin ROS shell over the per-frame functions of pipeline.py (shared with `depth-kd infer`). Images arrive as
CDR bytes; the callback only parks the newest one in a one-slot mailbox and a worker thread does all the
work (parse, decode, infer, publish), so a slow model drops frames (counted) instead of building a queue or
growing latency. The image subscription exists only while someone listens to an output, as in
depth_image_proc, and follows the outputs' matched events: a new viewer's first frame waits ~20 ms for the
node (subscribe, first image), the rest is DDS discovering the viewer (bench_first_frame.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32, Header

from depth_kd_ros import pipeline
from depth_kd_ros.camera_info import IntrinsicsError
from depth_kd_ros.image_codec import ImageDecodeError, compressed_depth_to_metres, depth_image_to_metres
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.params import NodeParams, declare_parameters, depth_limits
from depth_kd_ros.scale import ScaleEstimate, ScaleFilter, scale_from_depth, scale_from_ground, up_from_pitch
from depth_kd_ros.serialized import parse_cdr
from depth_kd_ros.stats import FrameStats

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = {"onnxruntime": WEIGHTS_DIR / "student_default.onnx",
                   "torch": WEIGHTS_DIR / "student_default.safetensors"}
DDS_PROFILE = "fastdds.xml"  # in config/: a shared-memory segment large enough for whole camera frames
BAD_INPUT_LOG_PERIOD_S = 5.0  # per kind of problem; the rest are counted, and the next log line says how many
LOG_QUOTE_CHARS = 300  # a log line quotes at most this much of a problem's description
METRIC_DEPTH_KEPT = 8  # recent metric depth messages kept for matching by stamp
SUBSCRIBER_CHECK_PERIOD_S = 1.0  # a fallback for middlewares without matched events


class DepthNode(Node):
    """Runs the student network on the newest camera frame and publishes depth, camera info and points."""

    def __init__(self, **kwargs) -> None:
        super().__init__("depth_node", **kwargs)
        checks = []  # parameter checks that need the model; run on every change (see params.py)
        self.params: NodeParams = declare_parameters(self, checks)
        model_path = self.params.model_path or default_model(self.params.backend)
        self.estimator = DepthEstimator(model_path, device=self.params.device, fp16=self.params.fp16,
                                        backend=self.params.backend, threads=self.params.threads)
        model_range = (self.estimator.info.min_depth, self.estimator.info.max_depth)
        checks.append(lambda values: depth_limits(values, model_range))
        depth_limits(self.params, model_range)  # start-up values: raises, and main() says why in one line
        self.estimator.warmup()
        self.get_logger().info(
            f"model {model_path} ({self.estimator.info.arch}, {self.estimator.info.input_width}x"
            f"{self.estimator.info.input_height}) with {self.estimator.backend.name} on {self.estimator.device}"
        )
        self.stats = FrameStats()
        self._last_bad_log: dict[str, tuple[float, int]] = {}  # kind -> (last logged, suppressed since)
        self._camera_info: CameraInfo | None = None
        self._mailbox: tuple[bytes, float] | None = None  # (newest frame as CDR, its arrival)
        self._last_pixels = 0
        self._mailbox_ready = threading.Condition()
        self._stopping = False

        # Reliable publishers reach both reliable (RViz's default) and best-effort subscribers. A subscriber
        # coming or going (matched event) updates the image subscription at once.
        out_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        events = PublisherEventCallbacks(matched=lambda _status: self._update_image_subscription())
        self.pub_depth = self.create_publisher(Image, "depth/image", out_qos, event_callbacks=events)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos, event_callbacks=events)
        self.pub_points = self.create_publisher(PointCloud2, "depth/points", out_qos, event_callbacks=events)
        self.pub_colored = (self.create_publisher(Image, "depth/colored", out_qos, event_callbacks=events)
                            if self.params.publish_colored else None)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # Depth 1: the middleware keeps no backlog either.
        self._in_qos = QoSProfile(
            depth=1,
            reliability=(ReliabilityPolicy.RELIABLE if self.params.input_reliability == "reliable"
                         else qos_profile_sensor_data.reliability),
        )
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, self._in_qos)
        self._anchoring_setup()
        self._image_sub = None
        self._update_image_subscription()
        self.create_timer(SUBSCRIBER_CHECK_PERIOD_S, self._update_image_subscription)
        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work_loop, name="depth_worker", daemon=True)
        self._worker.start()

    def _update_image_subscription(self) -> None:
        """Subscribe to images only while someone listens to an output, as depth_image_proc does; as bytes
        (raw=True), parsed on the worker."""
        wanted = self._outputs_wanted()
        if wanted and self._image_sub is None:
            msg_type = CompressedImage if self.params.image_transport == "compressed" else Image
            topic = "image_raw/compressed" if msg_type is CompressedImage else "image_raw"
            self._image_sub = self.create_subscription(msg_type, topic, self._on_image, self._in_qos, raw=True)
        elif not wanted and self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None

    # --- callbacks: cheap, never block -------------------------------------------------------------------
    def _on_image(self, msg: bytes) -> None:
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

    def process(self, raw: bytes, arrived: float | None = None) -> None:
        """Decode, infer and publish one frame (CDR bytes): the whole per-frame path (pipeline.py), top to bottom.

        ``arrived``: perf_counter() when the callback took the frame; each stage's time goes to /diagnostics.
        """
        started = time.perf_counter()
        if not self._outputs_wanted():  # the last subscriber left since this frame arrived
            return
        p = self.params
        try:
            header, rgb = pipeline.decode_image(raw, p.image_transport == "compressed", p.max_image_pixels)
        except ImageDecodeError as error:
            self._bad_input("image", f"bad image on {self._image_topic()}: {error}")
            return
        height, width = rgb.shape[:2]

        info, intrinsics = None, None
        if self._camera_info is None:
            self._bad_input("no_camera_info", "no CameraInfo received yet: publishing depth, points wait")
        else:
            try:
                info, intrinsics = pipeline.fit_camera_info(self._camera_info, header, width, height)
            except IntrinsicsError as error:  # no points, no depth/camera_info, no metric rescale with it
                self._bad_input("camera_info", f"unusable CameraInfo on {self.resolve_topic_name('camera_info')}: "
                                f"{error}")

        decoded = time.perf_counter()
        near_far = self._depth_range()
        fx = intrinsics[0] if (intrinsics and p.metric_rescale) else None
        depth = pipeline.estimate_depth(self.estimator, rgb, fx)
        scale = self._anchor(depth, header, intrinsics)
        depth = pipeline.finish_depth(depth, scale, near_far if (p.min_depth or p.max_depth) else None)
        inferred = time.perf_counter()

        if self.pub_depth.get_subscription_count():
            self.pub_depth.publish(pipeline.depth_image(header, depth, p.depth_encoding))
        if info is not None and self.pub_info.get_subscription_count():
            self.pub_info.publish(info)
        if intrinsics and self.pub_points.get_subscription_count():
            self.pub_points.publish(pipeline.cloud(header, depth, rgb, intrinsics, p.points_rgb, p.points_decimation))
        if self.pub_colored is not None and self.pub_colored.get_subscription_count():
            self.pub_colored.publish(pipeline.colored(header, depth, *near_far))
        done = time.perf_counter()
        if height * width * 2 < self._last_pixels:  # after a much larger frame, give its buffers back
            release_free_memory()
        self._last_pixels = height * width
        self.stats.frame_out(header.stamp)
        self.stats.stages({"waiting for the worker": started - (arrived or started), "decode": decoded - started,
                           "inference": inferred - decoded, "encode and publish": done - inferred})

    def _depth_range(self) -> tuple[float, float]:
        return depth_limits(self.params, (self.estimator.info.min_depth, self.estimator.info.max_depth))

    # --- metric anchoring (scale_source) ------------------------------------------------------------------
    def _anchoring_setup(self) -> None:
        self.scale_filter = ScaleFilter() if self.params.scale_source != "none" else None
        self._scale_estimate: ScaleEstimate | None = None
        self._frames_without_scale = 0
        self._metric_depths: deque[tuple[int, bytes]] = deque(maxlen=METRIC_DEPTH_KEPT)  # (stamp ns, CDR)
        if self.scale_filter is None:
            return
        self.pub_scale = self.create_publisher(Float32, "depth/scale", 10)
        if self.params.scale_source == "depth":
            compressed = self.params.metric_depth_transport == "compressedDepth"
            self.create_subscription(CompressedImage if compressed else Image,
                                     "metric_depth/compressedDepth" if compressed else "metric_depth",
                                     self._on_metric_depth, self._in_qos, raw=True)

    def _on_metric_depth(self, raw: bytes) -> None:
        if len(raw) < 12:
            self._bad_input("metric_depth", f"metric depth message of {len(raw)} bytes has no header")
            return
        self._metric_depths.append((_cdr_stamp_ns(raw), raw))

    def _measure_scale(self, depth, header: Header, intrinsics) -> ScaleEstimate | None:
        """This frame's scale from the configured source, or None when it offers too little support."""
        p = self.params
        if p.scale_source == "ground":
            return None if not intrinsics else scale_from_ground(depth, intrinsics, p.camera_height,
                                                                 up_from_pitch(p.camera_pitch))
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        candidates = [(abs(s - stamp), raw) for s, raw in list(self._metric_depths)]
        gap, raw = min(candidates, default=(None, None), key=lambda c: c[0])
        if raw is None or gap > p.metric_depth_tolerance * 1e9:
            return None
        try:
            if p.metric_depth_transport == "compressedDepth":
                msg = parse_cdr(raw, "sensor_msgs/msg/CompressedImage")
                metric = compressed_depth_to_metres(msg.format, msg.data)
            else:
                msg = parse_cdr(raw, "sensor_msgs/msg/Image")
                metric = depth_image_to_metres(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                               bool(msg.is_bigendian))
        except ValueError as error:  # ImageDecodeError, MessageParseError
            self._bad_input("metric_depth", f"bad metric depth on {self.resolve_topic_name('metric_depth')}: {error}")
            return None
        return scale_from_depth(depth, metric)

    def _anchor(self, depth, header: Header, intrinsics) -> float:
        """The smoothed metric scale for this frame (1.0 without anchoring), published on depth/scale."""
        if self.scale_filter is None:
            return 1.0
        estimate = self._measure_scale(depth, header, intrinsics)
        if estimate is None:
            self._frames_without_scale += 1
        else:
            self._scale_estimate = estimate
        scale = self.scale_filter.update(estimate)
        self.pub_scale.publish(Float32(data=float(scale)))
        return scale

    # --- bad input and diagnostics ---------------------------------------------------------------------
    def _image_topic(self) -> str:
        suffix = "/compressed" if self.params.image_transport == "compressed" else ""
        return self.resolve_topic_name("image_raw" + suffix)

    def _bad_input(self, kind: str, message: str) -> None:
        """Count it for /diagnostics; log each kind of problem at most once per period, quoting a bounded part.

        The throttle is per kind (a handful, fixed in the code), never per message: a sender controls the text.
        """
        if len(message) > LOG_QUOTE_CHARS:
            message = message[:LOG_QUOTE_CHARS] + f"... ({len(message) - LOG_QUOTE_CHARS} more characters)"
        self.stats.bad_input(kind, message)
        now = time.monotonic()
        logged, suppressed = self._last_bad_log.get(kind, (-1e9, 0))
        if now - logged < BAD_INPUT_LOG_PERIOD_S:
            self._last_bad_log[kind] = (logged, suppressed + 1)
            return
        self._last_bad_log[kind] = (now, 0)
        if suppressed:
            message += f" [{suppressed} more of this kind in the last {now - logged:.0f} s]"
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
            "last bad input": report.last_bad_input,
            **self._scale_diagnostics(),
            **{f"stage: {k} mean (ms)": f"{v:.2f}" for k, v in report.stage_ms_mean.items()},
        }
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: depth", message=summary,
            hardware_id=self.estimator.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_diag.publish(DiagnosticArray(header=header, status=[status]))

    def _scale_diagnostics(self) -> dict[str, str]:
        if self.scale_filter is None:
            return {}
        last = self._scale_estimate
        return {"scale source": self.params.scale_source, "scale": f"{self.scale_filter.current:.4f}",
                "scale support (last)": str(last.support if last else 0),
                "scale residual (last)": f"{last.residual:.4f}" if last else "",
                "scale: frames without support": str(self._frames_without_scale),
                "scale: outliers rejected": str(self.scale_filter.rejected)}

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


def _cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp of a serialised message that starts with a std_msgs/Header (after CDR's 4-byte encapsulation)."""
    sec, nanosec = struct.unpack_from("<iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim; a no-op elsewhere).

    glibc keeps the memory of freed large buffers once its dynamic mmap threshold has grown, so one very large
    frame would otherwise leave the node tens of MB bigger for good.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def shipped_dds_profile() -> Path | None:
    """config/fastdds.xml where this package is installed (colcon or pip: <prefix>/share/depth_kd_ros/config/,
    the module being in <prefix>/lib/pythonX.Y/site-packages/) or checked out (editable install)."""
    here = Path(__file__).resolve().parent
    prefixes = [Path(sys.prefix)] + ([here.parents[3]] if len(here.parents) > 3 else [])
    candidates = [prefix / "share" / "depth_kd_ros" / "config" / DDS_PROFILE for prefix in prefixes]
    return next((c for c in [*candidates, here.parent / "config" / DDS_PROFILE] if c.is_file()), None)


def use_shipped_dds_profile(environ: dict[str, str] = os.environ) -> Path | None:
    """Point Fast DDS at the shipped profile unless the user chose a profile or another middleware.

    Without it Fast DDS's 512 KiB shared-memory segment fragments every 640x480 frame and best-effort
    cameras lose most of them. Must run before rclpy.init() creates the DDS participant. Returns the profile
    it set, or None.
    """
    if not environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return None
    if any(environ.get(k) for k in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")):
        return None
    if Path("DEFAULT_FASTRTPS_PROFILES.xml").is_file():  # Fast DDS loads this one from the working directory
        return None
    profile = shipped_dds_profile()
    if profile is not None:
        environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)
    return profile


def main(args: list[str] | None = None) -> None:
    profile = use_shipped_dds_profile()
    rclpy.init(args=args)
    node = None
    try:
        node = DepthNode()
        if profile is not None:
            node.get_logger().info(f"Fast DDS profile {profile} (set FASTRTPS_DEFAULT_PROFILES_FILE to use yours)")
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
