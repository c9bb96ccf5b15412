"""depth_node: camera images in, metric depth image, camera info, point cloud and diagnostics out.

A thin ROS shell over the per-frame path of pipeline.py (FramePath, shared with `depth-kd infer`). Images arrive as
CDR bytes; the callback only parks the newest one in a one-slot mailbox and a worker thread does all the
work (parse, decode, infer, publish), so a slow model drops frames (counted) instead of building a queue or
growing latency. The image subscription exists only while someone listens to an output, as in
depth_image_proc, and follows the outputs' matched events: a new viewer's first frame waits ~20 ms for the
node (subscribe, first image), the rest is DDS discovering the viewer (bench_first_frame.py).
"""

from __future__ import annotations

import os
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
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32, Header

from depth_kd_ros import pipeline
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.memory import keep_frame_memory, release_free_memory
from depth_kd_ros.params import NodeParams, declare_parameters, depth_limits, network_threads, validate
from depth_kd_ros.serialized import cdr_stamp_ns
from depth_kd_ros.stats import FrameStats

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = {"onnxruntime": WEIGHTS_DIR / "student_default.onnx",  # int8, for CPUs
                   "torch": WEIGHTS_DIR / "student_default.safetensors"}
DEFAULT_GPU_ONNX = WEIGHTS_DIR / "student_default_fp32.onnx"  # TensorRT builds its fp16 engine from a float graph
DDS_PROFILE = "fastdds.xml"  # in config/: a shared-memory segment large enough for whole camera frames
BAD_INPUT_LOG_PERIOD_S = 5.0  # per kind of problem; the rest are counted, and the next log line says how many
LOG_QUOTE_CHARS = 300  # a log line quotes at most this much of a problem's description
METRIC_DEPTH_KEPT = 8  # recent metric depth messages kept for matching by stamp
SUBSCRIBER_CHECK_PERIOD_S = 1.0  # a fallback for middlewares without matched events


def bounded_quote(message: str) -> str:
    """At most LOG_QUOTE_CHARS of a problem's description: its text often comes from the sender."""
    if len(message) <= LOG_QUOTE_CHARS:
        return message
    return message[:LOG_QUOTE_CHARS] + f"... ({len(message) - LOG_QUOTE_CHARS} more characters)"


class DepthNodeCore:
    """What depth_node does, mixed into an rclpy node: DepthNode runs it at once, DepthLifecycleNode
    (lifecycle_node.py) step by step through the managed-node transitions.

    The steps: ``configure`` (check parameters, load the model, create the publishers), ``activate``
    (subscriptions, timers, worker), ``deactivate`` (stop all work), ``cleanup`` (free the model and
    publishers). Parameters are declared at construction, so a launch file's values apply to both.
    """

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.estimator: DepthEstimator | None = None
        self._threads = 0  # the network's CPU threads, once configured (params.network_threads)
        self.params: NodeParams = declare_parameters(self, [self._check_against_model])
        self.stats = FrameStats()
        self._last_bad_log: dict[str, tuple[float, int]] = {}  # kind -> (last logged, suppressed since)
        self._camera_info: CameraInfo | None = None
        self._mailbox: tuple[bytes, float] | None = None  # (newest frame as CDR, its arrival)
        self._last_pixels = 0
        self._mailbox_ready = threading.Condition()
        self.pub_depth = self.pub_info = self.pub_points = self.pub_colored = self.pub_diag = None
        self.pub_scale = None
        self.path: pipeline.FramePath | None = None  # the per-frame path, once the model is loaded
        self._metric_depths: deque[tuple[int, bytes]] = deque(maxlen=METRIC_DEPTH_KEPT)  # (stamp ns, CDR)
        self._metric_depth_sub = None
        self._active = False
        self._image_sub = None
        self._camera_info_sub = None
        self._timers: list = []
        self._worker: threading.Thread | None = None
        self._stop_worker = threading.Event()

    def configure(self) -> None:
        """Check the parameters, load and warm up the model, create the publishers. Raises ValueError or the
        model's load error, saying why; the model and publishers stay unset then."""
        validate(self.params)
        model_path = self.params.model_path or default_model(self.params.backend, self.params.device)
        threads = network_threads(self.params.threads, model_path)
        estimator = DepthEstimator(model_path, device=self.params.device, fp16=self.params.fp16,
                                   backend=self.params.backend, threads=threads)
        depth_limits(self.params, (estimator.info.min_depth, estimator.info.max_depth))  # start-up values
        estimator.warmup()
        self.estimator, self._threads = estimator, threads
        self.get_logger().info(
            f"model {model_path} ({estimator.info.arch}, {estimator.info.input_width}x"
            f"{estimator.info.input_height}) with {estimator.backend.name} on {estimator.device}, "
            f"{threads} CPU thread(s)"
        )

        # Reliable publishers reach both reliable (RViz's default) and best-effort subscribers. A subscriber
        # coming or going (matched event) updates the image subscription at once.
        out_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        events = PublisherEventCallbacks(matched=lambda _status: self._update_image_subscription())
        self.pub_depth = self._create_output(Image, "depth/image", out_qos, event_callbacks=events)
        self.pub_info = self._create_output(CameraInfo, "depth/camera_info", out_qos, event_callbacks=events)
        self.pub_points = self._create_output(PointCloud2, "depth/points", out_qos, event_callbacks=events)
        self.pub_colored = (self._create_output(Image, "depth/colored", out_qos, event_callbacks=events)
                            if self.params.publish_colored else None)
        self.pub_diag = self._create_output(DiagnosticArray, "/diagnostics", 10)

        # Depth 1: the middleware keeps no backlog either.
        self._in_qos = QoSProfile(
            depth=1,
            reliability=(ReliabilityPolicy.RELIABLE if self.params.input_reliability == "reliable"
                         else qos_profile_sensor_data.reliability),
        )
        self.path = pipeline.FramePath(estimator, self.params, self._bad_input)
        self.pub_scale = self._create_output(Float32, "depth/scale", 10) if self.path.anchor else None

    def activate(self) -> None:
        """Start the work: the CameraInfo subscription, the image subscription (while someone listens), the
        timers and the worker thread."""
        self._active = True
        self._mailbox = None
        self._stop_worker = threading.Event()
        self._worker = threading.Thread(target=self._work_loop, args=(self._stop_worker,), name="depth_worker",
                                        daemon=True)
        self._worker.start()
        self._camera_info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                         self._in_qos)
        if self.params.scale_source == "depth":
            compressed = self.params.metric_depth_transport == "compressedDepth"
            self._metric_depth_sub = self.create_subscription(
                CompressedImage if compressed else Image, "metric_depth/compressedDepth" if compressed else
                "metric_depth", self._on_metric_depth, self._in_qos, raw=True)
        self._update_image_subscription()
        self._timers = [self.create_timer(SUBSCRIBER_CHECK_PERIOD_S, self._update_image_subscription),
                        self.create_timer(self.params.diagnostics_period, self._publish_diagnostics)]

    def deactivate(self) -> None:
        """Stop all work: no subscriptions or timers; the worker finishes the frame it holds, the parked one is
        dropped, and the thread ends."""
        self._active = False
        self._update_image_subscription()
        for sub in (self._camera_info_sub, self._metric_depth_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self._camera_info_sub = self._metric_depth_sub = None
        self._metric_depths.clear()
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        with self._mailbox_ready:
            self._stop_worker.set()
            self._mailbox = None
            self._mailbox_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def cleanup(self) -> None:
        """Free the model and destroy the publishers: back to the state before ``configure``."""
        for pub in (self.pub_depth, self.pub_info, self.pub_points, self.pub_colored, self.pub_diag, self.pub_scale):
            if pub is not None:
                self._destroy_output(pub)
        self.pub_depth = self.pub_info = self.pub_points = self.pub_colored = self.pub_diag = self.pub_scale = None
        self.estimator = self.path = None
        release_free_memory()

    def _create_output(self, msg_type: type, topic: str, qos: QoSProfile | int, **kwargs) -> Publisher:
        """A publisher of an output; the lifecycle node makes lifecycle publishers (silent unless active)."""
        return self.create_publisher(msg_type, topic, qos, **kwargs)

    def _destroy_output(self, publisher: Publisher) -> None:
        self.destroy_publisher(publisher)

    def _check_against_model(self, values: NodeParams) -> None:
        """Runtime parameter check that needs the model (none while no model is loaded)."""
        if self.estimator is not None:
            depth_limits(values, (self.estimator.info.min_depth, self.estimator.info.max_depth))

    def _update_image_subscription(self) -> None:
        """Subscribe to images only while active and someone listens to an output, as depth_image_proc does; as
        bytes (raw=True), parsed on the worker."""
        wanted = self._active and bool(self._wanted_outputs())
        if wanted and self._image_sub is None:
            msg_type = CompressedImage if self.params.image_transport == "compressed" else Image
            topic = "image_raw/compressed" if msg_type is CompressedImage else "image_raw"
            self._image_sub = self.create_subscription(msg_type, topic, self._on_image, self._in_qos, raw=True)
            self.get_logger().debug("a viewer came: subscribed to images")
        elif not wanted and self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
            self.get_logger().debug("no viewer left: unsubscribed from images")

    # --- callbacks: cheap, never block -------------------------------------------------------------------
    def _on_image(self, msg: bytes) -> None:
        self.stats.frame_in()
        with self._mailbox_ready:
            if self._mailbox is not None:
                self.stats.drop()
            self._mailbox = (msg, time.perf_counter())
            self._mailbox_ready.notify()
        # Hand the GIL to the worker now: otherwise it waits while rclpy's executor rebuilds its wait set in
        # Python (measured: 0.5-0.8 ms of every frame, 0.06 ms with this).
        time.sleep(0)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # --- worker ----------------------------------------------------------------------------------------
    def _work_loop(self, stop: threading.Event) -> None:
        while True:
            with self._mailbox_ready:
                while self._mailbox is None and not stop.is_set():
                    self._mailbox_ready.wait()
                if stop.is_set():
                    return
                (msg, arrived), self._mailbox = self._mailbox, None
            try:
                self.process(msg, arrived)
            except Exception as error:  # noqa: BLE001 - one bad frame must never kill the node
                self._bad_input("processing", f"frame failed: {type(error).__name__}: {error}")

    def _wanted_outputs(self) -> set[str]:
        """The outputs (pipeline.OUTPUTS names) that someone subscribes to."""
        return {name for name, pub in self._outputs().items() if pub is not None and pub.get_subscription_count()}

    def process(self, raw: bytes, arrived: float | None = None) -> None:
        """Decode, infer and publish one frame (CDR bytes) through the per-frame path (pipeline.FramePath).

        ``arrived``: perf_counter() when the callback took the frame; each stage's time goes to /diagnostics.
        """
        started = time.perf_counter()
        wanted = self._wanted_outputs()
        if not wanted:  # the last subscriber left since this frame arrived
            return
        if self._camera_info is None:
            self._bad_input("no_camera_info", "no CameraInfo received yet: publishing depth, points wait")
        frame = self.path.estimate(raw, self.params.image_transport == "compressed", self._camera_info,
                                   f"on {self._image_topic()}", list(self._metric_depths))
        if frame is None:
            return
        inferred = time.perf_counter()
        if self.pub_scale is not None:
            self.pub_scale.publish(Float32(data=float(frame.scale)))
        outputs = self._outputs()
        for name, payload in self.path.outputs(frame, wanted).items():
            outputs[name].publish(payload)
        done = time.perf_counter()
        height, width = frame.rgb.shape[:2]
        if height * width * 2 < self._last_pixels:  # after a much larger frame, give its buffers back
            release_free_memory()
        self._last_pixels = height * width
        self.stats.frame_out(frame.header.stamp)
        self.stats.stages({"waiting for the worker": started - (arrived or started),
                           "decode": frame.decoded_at - started, "inference": inferred - frame.decoded_at,
                           "encode and publish": done - inferred})

    def _outputs(self) -> dict[str, Publisher | None]:
        """The output publishers by pipeline.OUTPUTS name."""
        return {"image": self.pub_depth, "camera_info": self.pub_info, "points": self.pub_points,
                "colored": self.pub_colored}

    def _on_metric_depth(self, raw: bytes) -> None:
        if len(raw) < 12:
            self._bad_input("metric_depth", f"metric depth message of {len(raw)} bytes has no header")
            return
        self._metric_depths.append((cdr_stamp_ns(raw), raw))

    # --- bad input and diagnostics ---------------------------------------------------------------------
    def _image_topic(self) -> str:
        suffix = "/compressed" if self.params.image_transport == "compressed" else ""
        return self.resolve_topic_name("image_raw" + suffix)

    def _bad_input(self, kind: str, message: str) -> None:
        """Count it for /diagnostics; log each kind of problem at most once per period, quoting a bounded part.

        The throttle is per kind (a handful, fixed in the code), never per message: a sender controls the text.
        """
        message = bounded_quote(message)
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
        if not self._wanted_outputs():
            summary = "idle: no subscribers to depth outputs"
        if report.new_bad_inputs:
            level, summary = DiagnosticStatus.WARN, "bad input since last report"
        values = {
            "backend": self.estimator.backend.name,
            "device": self.estimator.device,
            "CPU threads": str(self._threads),
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
        return self.path.anchor.diagnostics() if self.path is not None and self.path.anchor is not None else {}

    def destroy_node(self) -> None:
        """Stop the worker before rclpy destroys the node's entities."""
        if self._active:
            self.deactivate()
        super().destroy_node()


class DepthNode(DepthNodeCore, Node):
    """depth_node: runs the student network on the newest camera frame and publishes depth, camera info and
    points, configured and active from the start."""

    def __init__(self, **kwargs) -> None:
        super().__init__("depth_node", **kwargs)
        self.configure()
        self.activate()


def default_model(backend: str, device: str = "auto", providers: list[str] | None = None) -> Path:
    """The package's weights for ``backend`` and ``device``. ``auto`` prefers ONNX Runtime (faster on CPU, no
    torch needed); ONNX Runtime gets the int8 model on the CPU and the float32 one where a GPU provider may run
    it (``providers``: ONNX Runtime's available ones, asked when None)."""
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return DEFAULT_WEIGHTS["torch"]
        backend = "onnxruntime"
    if backend != "onnxruntime" or device == "cpu":
        return DEFAULT_WEIGHTS[backend]
    import onnxruntime

    from depth_kd_ros.backends.onnxruntime_backend import CUDA, TENSORRT
    available = onnxruntime.get_available_providers() if providers is None else providers
    return DEFAULT_GPU_ONNX if {CUDA, TENSORRT} & set(available) else DEFAULT_WEIGHTS["onnxruntime"]


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
    """The depth_node executable."""
    run(DepthNode, "depth_node", args)


def run(node_class: type[Node], executable: str, args: list[str] | None = None) -> None:
    """Spin a ``node_class`` until Ctrl-C or shutdown; a start-up failure (bad model file, bad parameters) ends
    the process with one line naming ``executable`` and exit status 1."""
    profile = use_shipped_dds_profile()
    keep_frame_memory()
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        if profile is not None:
            node.get_logger().info(f"Fast DDS profile {profile} (set FASTRTPS_DEFAULT_PROFILES_FILE to use yours)")
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:  # start-up failures: one clear line
        print(f"{executable}: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
