"""depth_node against hostile and careless input over real DDS (issue 10): decompression bombs, oversized
frames, depth limits outside the model's range, CameraInfo for another image, log floods, a start without the
DDS profile, and a seeded fuzz stream."""

from __future__ import annotations

import os
import re
import struct
import time
import zlib

import cv2
import numpy as np
import psutil
import pytest
from ros_harness import (
    CameraProcess,
    NodeProcess,
    Peer,
    first_message_wait,
    make_camera_info,
    make_image,
    stamp_key,
    stamp_of,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from test_node_e2e import FX, HEIGHT, WIDTH, _frame, _set_parameter

pytestmark = pytest.mark.ros

MB = 1 << 20


def _png_bomb(width: int, height: int) -> bytes:
    """A valid all-zero grey PNG of width x height: ~250 KB for 16000 x 16000 (768 MB once decoded to RGB)."""
    row = b"\x00" * (1 + width)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _compressed(data: bytes, fmt: str = "png") -> CompressedImage:
    return CompressedImage(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), format=fmt, data=data)


def _count(peer: Peer, kind: str) -> int:
    return int(peer.latest_diagnostics().get(f"bad inputs: {kind}", "0"))


def _wait_counted(peer: Peer, kind: str, before: int, fragment: str) -> None:
    assert peer.wait_for(lambda: _count(peer, kind) > before
                         and fragment in peer.latest_diagnostics().get("last bad input", "")), \
        peer.latest_diagnostics()


@pytest.fixture(scope="module")
def compressed_node(tmp_path_factory, tiny_onnx):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "image_transport": "compressed",
                        "diagnostics_period": 0.3}, tmp_path_factory.mktemp("bomb") / "node.log",
                       namespace="/bombs")
    peer = Peer(name="bomb_peer", namespace="/bombs")
    peer.wait_connected(node, compressed=True)
    yield node, peer
    peer.close()
    assert node.stop() == 0, node.log()


def test_decompression_bomb_is_refused_from_its_header(compressed_node):
    node, peer = compressed_node
    rss_before = psutil.Process(node.proc.pid).memory_info().rss
    bomb = _png_bomb(16000, 16000)
    assert len(bomb) < 400_000
    before = _count(peer, "image")
    peer.pub_compressed.publish(_compressed(bomb))
    _wait_counted(peer, "image", before, "declares 16000x16000 = 256000000 pixels, over the limit of 8388608")
    # Decoding it would take seconds and 768 MB; refused, the node neither grew nor stalled.
    assert psutil.Process(node.proc.pid).memory_info().rss < rss_before + 100 * MB
    ok, jpeg = cv2.imencode(".jpg", _frame()[..., ::-1])
    assert peer.send_and_wait(_compressed(jpeg.tobytes(), "jpeg"), timeout=5) is not None, node.log()


def test_max_image_pixels_applies_at_runtime(compressed_node):
    node, peer = compressed_node
    ok, jpeg = cv2.imencode(".jpg", _frame()[..., ::-1])
    assert _set_parameter(peer, "max_image_pixels", WIDTH * HEIGHT - 1, "/bombs") == (True, "")
    try:
        before = _count(peer, "image")
        peer.pub_compressed.publish(_compressed(jpeg.tobytes(), "jpeg"))
        _wait_counted(peer, "image", before, f"declares {WIDTH}x{HEIGHT}")
    finally:
        assert _set_parameter(peer, "max_image_pixels", 8_388_608, "/bombs") == (True, "")
    assert peer.send_and_wait(_compressed(jpeg.tobytes(), "jpeg")) is not None, node.log()


@pytest.fixture(scope="module")
def node_and_peer(tmp_path_factory, tiny_onnx):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "diagnostics_period": 0.3},
                       tmp_path_factory.mktemp("hostile") / "node.log", namespace="/hostile")
    peer = Peer(name="hostile_peer", namespace="/hostile")
    peer.listen("depth/image", best_effort=True)
    peer.wait_connected(node)
    peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
    time.sleep(0.3)
    yield node, peer
    peer.close()
    assert node.stop() == 0, node.log()


def test_raw_image_declaring_a_huge_size_is_refused_before_its_data(node_and_peer):
    node, peer = node_and_peer
    before = _count(peer, "image")
    huge = Image(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), height=60000, width=60000,
                 encoding="rgb8", step=180000, data=bytes(1000))
    peer.pub_image.publish(huge)
    _wait_counted(peer, "image", before, "declares 60000x60000")  # not "truncated": no data was looked at
    assert peer.send_and_wait(make_image(_frame(), stamp_of(time.time()))) is not None, node.log()


def test_memory_comes_back_after_a_very_large_frame(node_and_peer):
    node, peer = node_and_peer
    proc = psutil.Process(node.proc.pid)
    for seed in range(3):
        assert peer.send_and_wait(make_image(_frame(seed), stamp_of(time.time()))) is not None, node.log()
    rss_before = proc.memory_info().rss
    big = np.random.default_rng(0).integers(0, 255, (2160, 3840, 3), dtype=np.uint8)  # 4K UHD, within the limit
    grown = []
    for _ in range(2):
        assert peer.send_and_wait(make_image(big, stamp_of(time.time())), timeout=60) is not None, node.log()
        for seed in range(3):
            assert peer.send_and_wait(make_image(_frame(seed), stamp_of(time.time()))) is not None, node.log()
        grown.append((proc.memory_info().rss - rss_before) / MB)
    # A 4K frame's buffers (25 MB image in, 33 MB depth, 133 MB cloud, 25 MB colour map, the network's
    # activations) are given back; what stays (~100 MB, measured) is the DDS writers' sample pools, which
    # keep their largest sample for reuse: bounded by max_image_pixels, and a second 4K frame adds nothing.
    assert grown[0] < 150 and grown[1] < grown[0] + 50, f"RSS above the start after each 4K frame: {grown} MB"


def test_depth_limits_outside_the_model_range_are_refused(node_and_peer):
    node, peer = node_and_peer
    for name, value in (("min_depth", 50.0), ("max_depth", 0.05)):
        ok, reason = _set_parameter(peer, name, value, "/hostile")
        assert not ok and "leave nothing of the model's range, 0.1 to 10 m" in reason, reason
    assert _set_parameter(peer, "min_depth", 0.01, "/hostile") == (True, "")  # looser than the model: harmless
    try:
        depth = peer.send_and_wait(make_image(_frame(1), stamp_of(time.time())))
        values = np.frombuffer(depth.data, np.float32)
        assert np.isfinite(values).mean() > 0.9 and np.nanmin(values) >= 0.1
        assert peer.send_and_wait(make_image(_frame(2), stamp_of(time.time())), topic="depth/colored")
    finally:
        _set_parameter(peer, "min_depth", 0.0, "/hostile")


def test_start_with_depth_limits_outside_the_model_range_fails_in_one_line(tmp_path, tiny_onnx):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "min_depth": 50.0}, tmp_path / "limits.log")
    assert node.proc.wait(timeout=60) == 1
    node.stop()
    assert "min_depth=50 and max_depth=0 leave nothing of the model's range" in node.log()
    assert "Traceback" not in node.log()


@pytest.mark.parametrize("size, fx", [((1, 1), FX), ((65535, 1), FX), ((WIDTH, HEIGHT), 1e-300)])
def test_camera_info_that_does_not_fit_the_image_gives_no_points(node_and_peer, size, fx):
    node, peer = node_and_peer
    peer.pub_info.publish(make_camera_info(*size, fx))
    time.sleep(0.3)
    try:
        before = _count(peer, "camera_info")
        msg = make_image(_frame(3), stamp_of(time.time()))
        depth = peer.send_and_wait(msg)
        assert depth is not None, node.log()
        _wait_counted(peer, "camera_info", before, "CameraInfo")
        time.sleep(0.3)
        assert not peer.by_stamp("depth/points", msg.header.stamp)
        assert not peer.by_stamp("depth/camera_info", msg.header.stamp)
    finally:
        peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
        time.sleep(0.3)
    good = make_image(_frame(4), stamp_of(time.time()))
    assert peer.send_and_wait(good, topic="depth/points") is not None, node.log()


def test_a_flood_of_distinct_garbage_is_logged_once_per_period(node_and_peer):
    node, peer = node_and_peer
    lines_before = node.log().count("\n")
    before = _count(peer, "image")
    rng = np.random.default_rng(7)
    for index in range(60):  # distinct payloads and a 20 KB sender-chosen encoding
        encoding = f"garbage-{index}-" + "x" * 20_000 if index % 2 else "rgb8"
        bad = Image(header=Header(stamp=stamp_of(time.time()), frame_id="cam"), height=4, width=4,
                    encoding=encoding, step=1, data=rng.integers(0, 255, 16, dtype=np.uint8).tobytes())
        peer.pub_image.publish(bad)
        time.sleep(0.01)
    assert peer.wait_for(lambda: _count(peer, "image") >= before + 50), peer.latest_diagnostics()
    new_lines = node.log().splitlines()[lines_before:]
    assert len([line for line in new_lines if "bad image" in line]) <= 2, new_lines
    assert max(len(line) for line in node.log().splitlines()) < 1000
    assert len(peer.latest_diagnostics()["last bad input"]) < 400
    assert peer.send_and_wait(make_image(_frame(), stamp_of(time.time()))) is not None, node.log()


def test_fuzzed_stream_leaves_the_node_answering_with_bounded_memory(node_and_peer):
    """A seeded stream of hostile Image and CameraInfo messages, then a good frame."""
    node, peer = node_and_peer
    proc = psutil.Process(node.proc.pid)
    rss_before = proc.memory_info().rss
    rng = np.random.default_rng(2026)
    encodings = ["rgb8", "bgr8", "mono8", "mono16", "rgba8", "32FC1", "", "yuv422", "8UC3", "16UC1"]
    for _ in range(300):
        stamp = stamp_of(time.time())
        if rng.random() < 0.25:
            info = CameraInfo(header=Header(stamp=stamp), width=int(rng.integers(0, 70000)),
                              height=int(rng.integers(0, 70000)))
            info.k = rng.choice([0.0, -1.0, 1e-300, 1e300, np.nan, np.inf, 500.0], 9).tolist()
            info.p = rng.choice([0.0, -5.0, 1e-300, np.nan, 320.0], 12).tolist()
            peer.pub_info.publish(info)
        else:
            height, width = (int(v) for v in rng.choice([0, 1, 3, 480, 65535, 2**31 - 1], 2))
            step = int(rng.choice([0, 1, width, 3 * width, 2**31 - 1])) % 2**32
            size = int(rng.choice([0, 7, 3 * min(width, 4096) * min(height, 2), 100_000]))
            peer.pub_image.publish(Image(header=Header(stamp=stamp, frame_id="cam"), height=height, width=width,
                                         encoding=str(rng.choice(encodings)), is_bigendian=int(rng.integers(0, 2)),
                                         step=step, data=rng.integers(0, 255, size, dtype=np.uint8).tobytes()))
        time.sleep(0.005)
    time.sleep(1.0)
    assert node.alive(), node.log()
    peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, FX))
    time.sleep(0.3)
    good = make_image(_frame(9), stamp_of(time.time()))
    assert peer.send_and_wait(good, topic="depth/points") is not None, node.log()
    assert proc.memory_info().rss < rss_before + 150 * MB
    assert not re.search(r"Traceback", node.log())


def test_the_node_applies_its_dds_profile_itself(tmp_path):
    """README install (b): `depth_node` started by hand with no profile in its environment, a camera at 10 Hz
    best effort with 640x480 frames, bigger than Fast DDS's default shared-memory segment. Every frame must
    reach the node; a frame that arrives while the worker is still busy (a loaded CI machine) is counted as
    dropped, by design, so answered + dropped = 50."""
    bare = {k: v for k, v in os.environ.items() if k != "FASTRTPS_DEFAULT_PROFILES_FILE"}
    node = NodeProcess({"device": "cpu", "diagnostics_period": 0.3}, tmp_path / "bare.log", namespace="/bare",
                       env=bare)
    peer = Peer(name="bare_peer", subscribe=(), namespace="/bare")
    camera = None
    try:
        assert peer.wait_for(lambda: peer.node.count_publishers("depth/image") > 0, 60), node.log()
        assert peer.wait_for(lambda: "Fast DDS profile" in node.log() and "fastdds.xml" in node.log(), 10), \
            node.log()
        peer.listen("depth/image")
        camera = CameraProcess(frames=50, rate=10.0, namespace="/bare")
        assert camera.wait(timeout=60) == 50
        time.sleep(1.0)
        answered = len({stamp_key(m.header.stamp) for m in peer.messages("depth/image")})
        diagnostics = peer.latest_diagnostics()
        assert diagnostics["frames in"] == "50", diagnostics
        assert answered + int(diagnostics["dropped frames"]) == 50 and answered >= 40, (answered, diagnostics)
    finally:
        if camera is not None:
            camera.stop()
        peer.close()
        node.stop()


def test_a_new_viewer_of_an_idle_node_gets_depth_at_once(tmp_path, tiny_checkpoint):
    """Issue 10: with Fast DDS's default 3 s participant announcement a new viewer process of an idle node (RViz
    toggled on) waited 0-3.4 s (this test failed 3 of 3 times with it). Four viewers in turn, each after the node
    went idle again: every one gets depth within 2 s, a margin for a loaded CI machine (bench_first_frame.py
    measures the 0.5 s goal). A domain of their own: no participants left from other tests to discover."""
    env = {**os.environ, "ROS_DOMAIN_ID": str((int(os.environ["ROS_DOMAIN_ID"]) + 1) % 233)}
    node = NodeProcess({"model_path": tiny_checkpoint, "device": "cpu"}, tmp_path / "viewers.log", env=env)
    camera = CameraProcess(frames=0, rate=30.0, env=env)
    try:
        assert first_message_wait("depth/image", 60.0, env) is not None, node.log()
        waits = []
        for _ in range(4):
            time.sleep(1.5)  # the viewer has left; the node unsubscribes from the camera and idles
            waits.append(first_message_wait("depth/image", 2.0, env))
        assert None not in waits, (waits, node.log())
    finally:
        camera.stop()
        node.stop()
