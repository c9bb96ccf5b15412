"""depth_node end to end over real rclpy + Fast DDS: outputs, headers, bad inputs, parameters, overload."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from ros_harness import NodeProcess, Peer, make_camera_info, make_image, stamp_of
from sensor_msgs.msg import CompressedImage, Image, PointField
from std_msgs.msg import Header

from depth_kd_ros.params import network_threads

pytestmark = pytest.mark.ros

WIDTH, HEIGHT, FX = 640, 480, 500.0


def _frame(seed: int = 0) -> np.ndarray:
    """A textured test image (gradient + noise), not a flat one."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 60, (HEIGHT, WIDTH, 3))
    return np.clip(ramp * 0.7 + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def raw_node(request, tmp_path_factory, tiny_checkpoint, tiny_onnx):
    """The node on each backend: every test below runs against both (the same tiny model, exported)."""
    log = tmp_path_factory.mktemp("raw_node") / "depth_node.log"
    model = tiny_checkpoint if request.param == "torch" else tiny_onnx
    node = NodeProcess({"model_path": model, "backend": request.param, "device": "cpu",
                        "diagnostics_period": 0.5}, log)
    node.backend, node.model_path = request.param, model
    peer = Peer()
    peer.listen("depth/image", best_effort=True)
    peer.wait_connected(node)
    yield node, peer
    peer.close()
    assert node.stop() == 0, node.log()


def test_outputs_sizes_types_encodings_and_headers(raw_node):
    node, peer = raw_node
    peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
    time.sleep(0.3)
    msg = make_image(_frame(), stamp_of(time.time()), frame_id="cam_left_optical")
    depth = peer.send_and_wait(msg)
    assert depth is not None, node.log()
    assert (depth.height, depth.width, depth.encoding, depth.step) == (HEIGHT, WIDTH, "32FC1", WIDTH * 4)
    assert depth.header == msg.header
    # Reliable outputs reach best-effort subscribers too.
    assert peer.wait_for(lambda: peer.by_stamp("depth/image#best_effort", msg.header.stamp)), node.log()
    values = np.frombuffer(depth.data, np.float32)
    finite = values[np.isfinite(values)]
    assert finite.size > 0.9 * values.size and finite.min() >= 0.1 and finite.max() <= 10.0

    assert peer.wait_for(lambda: peer.by_stamp("depth/points", msg.header.stamp)), node.log()
    cloud = peer.by_stamp("depth/points", msg.header.stamp)[0]
    assert cloud.header == msg.header
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (HEIGHT, WIDTH, 16, WIDTH * 16)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32)]
    assert not cloud.is_dense and len(cloud.data) == HEIGHT * WIDTH * 16
    xyz = np.frombuffer(cloud.data, np.float32).reshape(HEIGHT, WIDTH, 4)[..., :3]
    np.testing.assert_allclose(xyz[..., 2], values.reshape(HEIGHT, WIDTH), equal_nan=True)
    # depth_image_proc geometry at one pixel: X = (u - cx) Z / fx
    u, v = 600, 50
    z = xyz[v, u, 2]
    np.testing.assert_allclose(xyz[v, u, 0], (u - (WIDTH - 1) / 2) * z / FX, rtol=1e-5)
    np.testing.assert_allclose(xyz[v, u, 1], (v - (HEIGHT - 1) / 2) * z / FX, rtol=1e-5)

    assert peer.wait_for(lambda: peer.by_stamp("depth/camera_info", msg.header.stamp))
    info = peer.by_stamp("depth/camera_info", msg.header.stamp)[0]
    assert info.header == msg.header and (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.k[0] == pytest.approx(FX)

    assert peer.wait_for(lambda: peer.by_stamp("depth/colored", msg.header.stamp))
    colored = peer.by_stamp("depth/colored", msg.header.stamp)[0]
    assert (colored.encoding, colored.height, colored.width) == ("bgr8", HEIGHT, WIDTH)


def test_diagnostics_name_the_backend_and_device(raw_node):
    node, peer = raw_node
    assert peer.wait_for(lambda: peer.latest_diagnostics().get("backend") == node.backend), node.log()
    device = peer.latest_diagnostics()["device"]
    assert device == ("cpu (float32)" if node.backend == "torch" else "CPUExecutionProvider")
    assert peer.latest_diagnostics()["CPU threads"] == str(network_threads(0, node.model_path))  # auto


def test_camera_info_for_another_size_is_scaled(raw_node):
    node, peer = raw_node
    peer.pub_info.publish(make_camera_info(WIDTH * 2, HEIGHT * 2, FX * 2))
    time.sleep(0.3)
    msg = make_image(_frame(1), stamp_of(time.time()))
    peer.send_and_wait(msg)
    assert peer.wait_for(lambda: peer.by_stamp("depth/camera_info", msg.header.stamp)), node.log()
    info = peer.by_stamp("depth/camera_info", msg.header.stamp)[0]
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.k[0] == pytest.approx(FX) and info.p[5] == pytest.approx(FX)
    peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_every_encoding_is_answered(raw_node, encoding):
    node, peer = raw_node
    channels = {"bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}[encoding]
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    pixels = np.random.default_rng(3).integers(0, np.iinfo(dtype).max, (120, 160, channels)).astype(dtype)
    msg = Image(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), height=120, width=160,
                encoding=encoding, is_bigendian=0, step=160 * channels * pixels.itemsize,
                data=pixels.tobytes())
    depth = peer.send_and_wait(msg)
    assert depth is not None, node.log()
    assert (depth.height, depth.width) == (120, 160) and depth.header == msg.header


def _bad(encoding="rgb8", height=HEIGHT, width=WIDTH, step=None, data=None) -> Image:
    step = WIDTH * 3 if step is None else step
    data = bytes(height * step) if data is None else data
    return Image(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), height=height, width=width,
                 encoding=encoding, is_bigendian=0, step=step, data=data)


BAD_IMAGES = {
    "unknown encoding": (lambda: _bad(encoding="yuv422_weird"), "yuv422_weird"),
    "step too small": (lambda: _bad(step=WIDTH), "step"),
    "truncated data": (lambda: _bad(data=bytes(1000)), "bytes"),
    "empty image": (lambda: _bad(height=0, width=0, step=0, data=b""), "0"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_logged_counted_and_next_frame_answered(raw_node, case):
    node, peer = raw_node
    make_bad, expected_in_log = BAD_IMAGES[case]
    before = int(peer.latest_diagnostics().get("bad inputs: image", "0"))
    bad = make_bad()
    peer.pub_image.publish(bad)
    assert peer.wait_for(lambda: int(peer.latest_diagnostics().get("bad inputs: image", "0")) > before), \
        node.log()
    assert not peer.by_stamp("depth/image", bad.header.stamp)
    assert node.alive()
    # the log is throttled per kind of problem; /diagnostics always names the latest one
    assert peer.wait_for(lambda: expected_in_log in peer.latest_diagnostics().get("last bad input", "")), \
        peer.latest_diagnostics()
    assert "bad image on /" in node.log()
    good = make_image(_frame(2), stamp_of(time.time()))
    assert peer.send_and_wait(good) is not None, node.log()


@pytest.mark.parametrize("bad_value", [0.0, float("nan")])
def test_unusable_intrinsics_still_give_depth_but_no_points(raw_node, bad_value):
    node, peer = raw_node
    info = make_camera_info(WIDTH, HEIGHT, FX)
    info.p[0] = info.k[0] = bad_value
    peer.pub_info.publish(info)
    time.sleep(0.3)
    before = int(peer.latest_diagnostics().get("bad inputs: camera_info", "0"))
    msg = make_image(_frame(4), stamp_of(time.time()))
    assert peer.send_and_wait(msg) is not None, node.log()
    time.sleep(0.5)
    assert not peer.by_stamp("depth/points", msg.header.stamp)
    assert peer.wait_for(lambda: int(peer.latest_diagnostics().get("bad inputs: camera_info", "0")) > before)
    assert "fx" in peer.latest_diagnostics()["last bad input"]
    peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
    time.sleep(0.3)
    good = make_image(_frame(5), stamp_of(time.time()))
    assert peer.send_and_wait(good, topic="depth/points") is not None, node.log()


def _set_parameter(peer: Peer, name: str, value, namespace: str = "") -> tuple[bool, str]:
    client = peer.node.create_client(SetParameters, f"{namespace}/depth_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    if isinstance(value, bool):
        pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    future = client.call_async(SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))
    assert peer.wait_for(future.done, timeout=10)
    result = future.result().results[0]
    peer.node.destroy_client(client)
    return result.successful, result.reason


def test_parameters_reject_invalid_runtime_changes(raw_node):
    _, peer = raw_node
    assert _set_parameter(peer, "max_depth", 5.0) == (True, "")
    ok, reason = _set_parameter(peer, "min_depth", 6.0)
    assert not ok and "max_depth" in reason
    ok, reason = _set_parameter(peer, "model_path", "/tmp/other.safetensors")
    assert not ok and "read-only" in reason.lower()
    ok, _ = _set_parameter(peer, "max_depth", 2000.0)
    assert not ok
    # the accepted limit really applies to published depth
    msg = make_image(_frame(6), stamp_of(time.time()))
    depth = np.frombuffer(peer.send_and_wait(msg).data, np.float32)
    assert np.nanmax(depth) <= 5.0
    assert _set_parameter(peer, "max_depth", 0.0) == (True, "")


def test_depth_encoding_16uc1_is_millimetres_of_the_same_depth(raw_node):
    node, peer = raw_node
    rgb = _frame(8)
    metres = np.frombuffer(peer.send_and_wait(make_image(rgb, stamp_of(time.time()))).data, np.float32)
    assert _set_parameter(peer, "depth_encoding", "16UC1") == (True, "")
    try:
        depth = peer.send_and_wait(make_image(rgb, stamp_of(time.time())))
        assert (depth.encoding, depth.step, depth.width) == ("16UC1", 2 * WIDTH, WIDTH), node.log()
        millimetres = np.frombuffer(depth.data, np.uint16)
        expected = np.where(np.isfinite(metres), np.rint(metres * 1000), 0)
        np.testing.assert_array_equal(millimetres, expected.astype(np.uint16))
        ok, reason = _set_parameter(peer, "depth_encoding", "16UC2")
        assert not ok and "32FC1, 16UC1" in reason
    finally:
        _set_parameter(peer, "depth_encoding", "32FC1")


def test_points_rgb_and_decimation_switch_at_runtime(raw_node):
    node, peer = raw_node
    peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
    time.sleep(0.3)
    assert _set_parameter(peer, "points_rgb", True) == (True, "")
    assert _set_parameter(peer, "points_decimation", 4) == (True, "")
    try:
        rgb = _frame(7)
        msg = make_image(rgb, stamp_of(time.time()))
        cloud = peer.send_and_wait(msg, topic="depth/points")
        assert cloud is not None, node.log()
        assert (cloud.height, cloud.width, cloud.point_step) == (HEIGHT // 4, WIDTH // 4, 32)
        assert [(f.name, f.offset) for f in cloud.fields][-1] == ("rgb", 16)
        packed = np.frombuffer(cloud.data, np.uint32).reshape(HEIGHT // 4, WIDTH // 4, 8)[..., 4]
        r, g, b = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
        np.testing.assert_array_equal(np.stack([r, g, b], -1), rgb[::4, ::4])
    finally:
        _set_parameter(peer, "points_rgb", False)
        _set_parameter(peer, "points_decimation", 1)


def test_images_are_subscribed_only_while_an_output_has_subscribers(tmp_path, tiny_checkpoint):
    node = NodeProcess({"model_path": tiny_checkpoint, "device": "cpu", "diagnostics_period": 0.3},
                       tmp_path / "idle.log", namespace="/idle")
    peer = Peer(name="idle_peer", subscribe=(), namespace="/idle")
    try:
        assert peer.wait_for(lambda: peer.node.count_publishers("depth/image") > 0, 60), node.log()
        assert peer.wait_for(lambda: "idle" in peer.latest_diagnostics_message(), 10)
        for _ in range(5):
            peer.pub_image.publish(make_image(_frame(), stamp_of(time.time())))
            time.sleep(0.1)
        assert peer.pub_image.get_subscription_count() == 0
        assert peer.latest_diagnostics()["frames in"] == "0"

        # Someone starts listening: the node subscribes and answers.
        peer.listen("depth/image")
        assert peer.wait_for(lambda: peer.pub_image.get_subscription_count() > 0, 10), node.log()
        time.sleep(0.3)
        assert peer.send_and_wait(make_image(_frame(), stamp_of(time.time()))) is not None, node.log()
    finally:
        peer.close()
        node.stop()


def test_compressed_transport_and_undecodable_data(tmp_path, tiny_checkpoint):
    node = NodeProcess({"model_path": tiny_checkpoint, "device": "cpu", "image_transport": "compressed",
                        "diagnostics_period": 0.3}, tmp_path / "compressed.log", namespace="/compressed")
    peer = Peer(name="compressed_peer", namespace="/compressed")
    try:
        peer.wait_connected(node, compressed=True)
        garbage = CompressedImage(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), format="jpeg",
                                  data=b"definitely not a jpeg")
        peer.pub_compressed.publish(garbage)
        assert peer.wait_for(lambda: int(peer.latest_diagnostics().get("bad inputs: image", "0")) >= 1), \
            node.log()
        ok, jpeg = cv2.imencode(".jpg", _frame()[..., ::-1])
        msg = CompressedImage(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), format="jpeg",
                              data=jpeg.tobytes())
        depth = peer.send_and_wait(msg)
        assert depth is not None, node.log()
        assert (depth.width, depth.height, depth.encoding) == (WIDTH, HEIGHT, "32FC1")
        assert "no CameraInfo" in node.log()
    finally:
        peer.close()
        node.stop()


def test_bad_model_path_exits_with_one_clear_line(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 7)
    node = NodeProcess({"model_path": str(broken), "device": "cpu"}, tmp_path / "broken.log")
    assert node.proc.wait(timeout=60) == 1
    node.stop()
    assert "broken.safetensors" in node.log()
