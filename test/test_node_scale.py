"""depth_node's metric anchoring over real DDS: scale_source depth recovers a known scale from a sparse metric
depth topic, keeps it on a frame without support and rejects an outlier frame; depth/scale and diagnostics."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import NodeProcess, Peer, make_camera_info, make_image, stamp_of
from sensor_msgs.msg import Image
from std_msgs.msg import Float32
from test_node_e2e import FX, HEIGHT, WIDTH, _frame

pytestmark = pytest.mark.ros


def _metric(depth: np.ndarray, stamp, factor: float) -> Image:
    """``factor`` x depth at half resolution with ~2% of pixels measured: a sparse, lower-resolution sensor."""
    half = depth[1::2, 1::2] * np.float32(factor)
    keep = np.random.default_rng(0).random(half.shape) < 0.02
    sparse = np.where(keep, half, np.nan).astype(np.float32)
    msg = Image(height=half.shape[0], width=half.shape[1], encoding="32FC1", step=4 * half.shape[1],
                data=sparse.tobytes())
    msg.header.stamp, msg.header.frame_id = stamp, "camera_optical_frame"
    return msg


def test_depth_source_recovers_keeps_and_rejects(tmp_path, tiny_onnx):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "scale_source": "depth", "diagnostics_period": 0.3},
                       tmp_path / "scale.log", namespace="/scaled")
    peer = Peer(name="scale_peer", namespace="/scaled")
    scales: list[float] = []
    peer.node.create_subscription(Float32, "depth/scale", lambda m: scales.append(m.data), 10)
    metric_pub = peer.node.create_publisher(Image, "metric_depth", QoSProfile(depth=5,
                                                                             reliability=ReliabilityPolicy.RELIABLE))
    try:
        peer.wait_connected(node)
        assert peer.wait_for(lambda: metric_pub.get_subscription_count() > 0, 20), node.log()
        peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
        time.sleep(0.3)
        rgb = _frame(11)

        def answer(factor: float | None) -> np.ndarray:
            stamp = stamp_of(time.time())
            if factor is not None:
                metric_pub.publish(_metric(raw, stamp, factor))
                time.sleep(0.2)  # the metric depth is there before the image, as a synchronised sensor's
            msg = peer.send_and_wait(make_image(rgb, stamp))
            assert msg is not None, node.log()
            return np.frombuffer(msg.data, np.float32).reshape(HEIGHT, WIDTH)

        raw = answer(None)  # no metric depth yet: scale 1
        assert peer.wait_for(lambda: scales and scales[-1] == 1.0)
        anchored = answer(2.0)
        np.testing.assert_allclose(np.nanmedian(anchored / raw), 2.0, rtol=0.03)
        assert scales[-1] == pytest.approx(2.0, rel=0.03)
        kept = answer(None)  # a frame without support keeps the last good scale
        np.testing.assert_allclose(np.nanmedian(kept / raw), scales[-1], rtol=1e-3)
        answer(20.0)  # one wild frame is rejected
        assert scales[-1] == pytest.approx(2.0, rel=0.03)
        assert peer.wait_for(lambda: peer.latest_diagnostics().get("scale: outliers rejected") == "1"), \
            peer.latest_diagnostics()
        diagnostics = peer.latest_diagnostics()
        assert diagnostics["scale source"] == "depth" and int(diagnostics["scale support (last)"]) > 20
        assert int(diagnostics["scale: frames without support"]) >= 2
    finally:
        peer.close()
        assert node.stop() == 0, node.log()


def test_ground_source_needs_a_camera_height(tmp_path, tiny_onnx):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "scale_source": "ground"}, tmp_path / "g.log")
    assert node.proc.wait(timeout=60) == 1
    node.stop()
    assert "scale_source ground needs camera_height" in node.log()
