"""``depth-kd infer``, bag to bag: real bags in (rendered, written with rosbags, the shared samples), a real model,
the output bag read back with rosbags; every message compared with what depth_kd_ros.pipeline gives for the
same frame. Bad input: one ``error:`` line, exit code 2, nothing left behind."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bag_writer import COMPRESSED, IMAGE, INFO, compressed_msg, image_msg, info_msg, write_bag
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo

from depth_kd.cli import main
from depth_kd.render.record import record_sequence
from depth_kd_ros import pipeline
from depth_kd_ros.inference import DepthEstimator

SHARED_BAGS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "bags"
MCAP_MAGIC = b"\x89MCAP0\r\n"
OUT = {"/depth/image": IMAGE, "/depth/camera_info": INFO, "/depth/colored": IMAGE}
POINTS = "/depth/points"
W, H = 96, 72  # rendered input size


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A rendered recording: /camera/image_raw (rgb8) with /camera/camera_info, and /camera/instances, another
    Image topic, that the default image topic rule must leave alone. 10 Hz."""
    return record_sequence(tmp_path_factory.mktemp("in") / "room", "indoor", 5, 3, W, H, progress=False).path


@pytest.fixture(scope="module")
def model(tiny_metric_onnx) -> str:
    """A real student, small and fast, whose depth the CameraInfo's focal length rescales."""
    return tiny_metric_onnx


@pytest.fixture(scope="module")
def estimator(model) -> DepthEstimator:
    return DepthEstimator(model, device="cpu", threads=1)


def infer(*args: str) -> int:
    return main(["infer", "--quiet", "--threads", "1", "--device", "cpu", *args])


def read_bag(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    """topic -> [(log time, CDR bytes)] in log-time order; checks the bag is a complete MCAP rosbag2 first."""
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and len(meta["relative_file_paths"]) == 1
    data = (bag / meta["relative_file_paths"][0]).read_bytes()
    assert data[:8] == MCAP_MAGIC and data[-8:] == MCAP_MAGIC  # footer written: a finished file
    with Reader(bag) as reader:  # rosbags' rosbag2 reader takes the metadata
        count = reader.message_count
    found: dict[str, list[tuple[int, bytes]]] = {}
    with AnyReader([bag]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for connection, log_ns, raw in reader.messages():
            found.setdefault(connection.topic, []).append((log_ns, bytes(raw)))
    assert sum(map(len, found.values())) == count
    return found | {"_types": types}  # type: ignore[return-value]


def input_frames(bag: Path, topic: str, info_topic: str) -> list[tuple[int, bytes, CameraInfo | None]]:
    """(log time, image CDR, the latest CameraInfo before it or the first one) of every image message."""
    frames, latest = [], None
    with AnyReader([bag]) as reader:
        for connection, log_ns, raw in reader.messages():
            if connection.topic == info_topic:
                latest = deserialize_message(bytes(raw), CameraInfo)
                frames = [(t, r, i or latest) for t, r, i in frames]  # frames before the first CameraInfo
            elif connection.topic == topic:
                frames.append((log_ns, bytes(raw), latest))
    return frames


def expected(estimator: DepthEstimator, raw: bytes, compressed: bool, info: CameraInfo | None,
             encoding: str = "32FC1") -> dict[str, bytes]:
    """What the node's per-frame path makes of one frame, with the node's default settings."""
    header, rgb = pipeline.decode_image(raw, compressed, 8_388_608)
    near_far = (estimator.info.min_depth, estimator.info.max_depth)
    fitted, intrinsics = pipeline.fit_camera_info(info, header, rgb.shape[1], rgb.shape[0])
    depth = pipeline.estimate_depth(estimator, rgb, intrinsics[0])
    return {"/depth/image": pipeline.depth_image(header, depth, encoding),
            "/depth/colored": pipeline.colored(header, depth, *near_far),
            POINTS: pipeline.cloud(header, depth, rgb, intrinsics),
            "fitted": fitted}


def test_round_trip_every_frame_as_the_node_makes_it(tmp_path, rendered, model, estimator, capsys):
    out, video = tmp_path / "out", tmp_path / "preview.mp4"
    assert infer("--data", str(rendered), "--out", str(out), "--model", model, "--points",
                 "--video", str(video)) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [str(video), str(out)]

    got = read_bag(out)
    assert got.pop("_types") == {**OUT, POINTS: "sensor_msgs/msg/PointCloud2"}
    frames = input_frames(rendered, "/camera/image_raw", "/camera/camera_info")
    assert len(frames) == 5
    for topic in (*OUT, POINTS):
        assert [t for t, _ in got[topic]] == [t for t, _, _ in frames], topic  # the input's log times
    for i, (_, raw, info) in enumerate(frames):
        want = expected(estimator, raw, False, info)
        header = pipeline.decode_image(raw, False, 1 << 30)[0]
        for topic in ("/depth/image", "/depth/colored", POINTS):
            assert got[topic][i][1] == want[topic], (topic, i)  # byte for byte: header, size, values
        depth = deserialize_message(got["/depth/image"][i][1], sensor_image())
        assert (depth.header.stamp, depth.header.frame_id) == (header.stamp, "camera_optical_frame")
        assert (depth.width, depth.height, depth.encoding) == (W, H, "32FC1")
        assert deserialize_message(got["/depth/camera_info"][i][1], CameraInfo) == want["fitted"]

    capture = cv2.VideoCapture(str(video))
    shown = []
    while (frame := capture.read())[0]:
        shown.append(frame[1])
    assert len(shown) == 5 and shown[0].shape == (H, 2 * W, 3)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    rgb = pipeline.decode_image(frames[0][1], False, 1 << 30)[1]
    assert np.abs(shown[0][:, :W].astype(int) - rgb[..., ::-1]).mean() < 12  # left: the camera image (lossy)


def sensor_image():
    from sensor_msgs.msg import Image

    return Image


def test_selection_16uc1_and_points_only_when_asked(tmp_path, rendered, model, estimator):
    frames = input_frames(rendered, "/camera/image_raw", "/camera/camera_info")
    for spec, kept in (("#frames=1:3", frames[1:3]), ("#time=0.2:10", frames[2:])):
        out = tmp_path / spec.strip("#").replace("=", "_").replace(":", "_")
        assert infer("--data", f"{rendered}{spec}", "--out", str(out), "--model", model,
                     "--depth-encoding", "16UC1") == 0
        got = read_bag(out)
        assert got.pop("_types") == OUT  # no /depth/points without --points
        assert [t for t, _ in got["/depth/image"]] == [t for t, _, _ in kept]
        for (_, raw, info), (_, depth) in zip(kept, got["/depth/image"], strict=True):
            assert depth == expected(estimator, raw, False, info, "16UC1")["/depth/image"]


def test_scale_from_the_bags_depth_as_the_node_anchors(tmp_path, rendered, model, estimator, caplog):
    """--scale-source depth: each frame's depth is the prediction times the node's smoothed scale, measured on
    the bag's own depth topic (logged with the image's stamp) through the same ScaleAnchor."""
    from depth_kd_ros.scale import ScaleAnchor

    out = tmp_path / "anchored"
    caplog.set_level(logging.INFO)
    assert infer("--data", str(rendered), "--out", str(out), "--model", model, "--scale-source", "depth") == 0
    got = read_bag(out)["/depth/image"]
    frames = input_frames(rendered, "/camera/image_raw", "/camera/camera_info")
    truths = {t: r for t, r, _ in input_frames(rendered, "/camera/depth/image", "/camera/camera_info")}
    anchor, scales = ScaleAnchor("depth"), []
    for (log_ns, raw, info), (_, written) in zip(frames, got, strict=True):
        header, rgb = pipeline.decode_image(raw, False, 1 << 30)
        intrinsics = pipeline.fit_camera_info(info, header, W, H)[1]
        depth = pipeline.estimate_depth(estimator, rgb, intrinsics[0])
        scales.append(anchor.update(depth, intrinsics, pipeline.decode_depth(truths[log_ns], False, 1 << 30)))
        assert written == pipeline.depth_image(header, pipeline.finish_depth(depth, scales[-1], None), "32FC1")
    assert anchor.frames_without_support == 0 and abs(np.log(scales[-1])) > 0.05  # a real correction happened
    assert f"scale source depth, scale {scales[-1]:.4f}" in caplog.text  # the summary's figures


def test_scale_source_needs_what_it_measures(tmp_path, rendered, model, capsys):
    for args, fragment in ((["--scale-source", "ground"], "needs camera_height"),
                           (["--scale-source", "depth", "--metric-depth-topic", "/lidar"], "no topic /lidar"),
                           (["--metric-depth-topic", "/camera/depth/image"], "only with --scale-source depth")):
        assert infer("--data", str(rendered), "--out", str(tmp_path / "x"), "--model", model, *args) == 2
        assert fragment in capsys.readouterr().err, args
        assert not (tmp_path / "x").exists()


def jpeg(seed: int, width: int = 32, height: int = 24) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", cv2.GaussianBlur(rgb, (5, 5), 2))[1].tobytes()


def test_compressed_input_bad_frame_skipped_camera_info_scaled_and_latest(tmp_path, model, estimator, caplog):
    """JPEG frames at 32x24 with CameraInfo for the same camera at 64x48: the first CameraInfo arrives just after
    the first frame, a second one (another focal length) just before frame 3, and frame 2 is no JPEG."""
    topic, info_topic = "/cam/image/compressed", "/cam/camera_info"
    messages = []
    for i in range(6):
        stamp = 5 * 10**9 + i * 10**8
        data = b"not a jpeg at all" if i == 2 else jpeg(i)
        if i == 3:  # received just before frame 3
            messages.append((info_topic, INFO, stamp - 1, info_msg(stamp - 1, 90.0, 64, 48)))
        messages.append((topic, COMPRESSED, stamp, compressed_msg(stamp, "rgb8; jpeg compressed bgr8", data)))
        if i == 0:  # received just after frame 0
            messages.append((info_topic, INFO, stamp + 1, info_msg(stamp + 1, 60.0, 64, 48)))
    bag = write_bag(tmp_path / "robot", "sqlite3", messages)
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    assert infer("--data", str(bag), "--out", str(out), "--model", model) == 0

    got = read_bag(out)
    assert got.pop("_types") == OUT
    stamps = [5 * 10**9 + i * 10**8 for i in (0, 1, 3, 4, 5)]
    assert [t for t, _ in got["/depth/image"]] == stamps
    frames = [f for f in input_frames(bag, topic, info_topic) if f[0] in stamps]
    for (_, raw, info), (_, depth), (_, camera_info) in zip(frames, got["/depth/image"], got["/depth/camera_info"],
                                                           strict=True):
        assert depth == expected(estimator, raw, True, info)["/depth/image"]
        fitted = deserialize_message(camera_info, CameraInfo)
        assert (fitted.width, fitted.height) == (32, 24)
        assert fitted.k[0] == pytest.approx(info.k[0] / 2) and fitted.k[2] == pytest.approx(16.0)
    fx = [deserialize_message(c, CameraInfo).k[0] for _, c in got["/depth/camera_info"]]
    assert fx == [30.0, 30.0, 45.0, 45.0, 45.0]
    assert "bad image #2 on /cam/image/compressed" in caplog.text and "frame skipped" in caplog.text
    assert "bad input: 1 image (frame skipped)" in caplog.text  # the summary counts it


@pytest.mark.skipif(not (SHARED_BAGS / "raspicam_ros1").is_dir(), reason="shared sample bags not found")
def test_ros1_bag_gives_what_its_rosbag2_twin_gives(tmp_path, model):
    outputs = []
    for name, bag in (("ros1", SHARED_BAGS / "raspicam_ros1" / "aruco_images.bag"),
                      ("mcap", SHARED_BAGS / "raspicam_ros2_mcap" / "aruco_images")):
        assert infer("--data", str(bag), "--out", str(tmp_path / name), "--model", model) == 0
        outputs.append(read_bag(tmp_path / name))
    assert outputs[0] == outputs[1]
    depth = deserialize_message(outputs[0]["/depth/image"][0][1], sensor_image())
    assert (depth.width, depth.height, depth.header.frame_id) == (1280, 960, "raspicam")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("depth-kd infer: error: "), err
    return err


def test_bad_inputs_one_line_and_nothing_written(tmp_path, rendered, model, capsys):
    out = tmp_path / "out"
    use = ["--model", model]
    assert infer("--data", str(tmp_path / "nope"), "--out", str(out), *use) == 2
    assert f"{tmp_path / 'nope'}: no such file or directory" in one_line_error(capsys)

    (tmp_path / "taken").mkdir()
    assert infer("--data", str(rendered), "--out", str(tmp_path / "taken"), *use) == 2
    assert "already exists" in one_line_error(capsys)
    assert infer("--data", str(rendered), "--out", str(out), "--video", str(tmp_path / "taken")) == 2
    assert "already exists" in one_line_error(capsys)
    assert infer("--data", str(rendered), "--out", str(out), "--video", str(tmp_path / "p.avi")) == 2
    assert ".mp4" in one_line_error(capsys)

    assert infer("--data", str(rendered), "--out", str(out), "--model", str(tmp_path / "missing.onnx")) == 2
    assert "missing.onnx does not exist" in one_line_error(capsys)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    assert infer("--data", str(rendered), "--out", str(out), "--model", str(garbage)) == 2
    assert str(garbage) in one_line_error(capsys)

    assert infer("--data", f"{rendered}#frames=4:2", "--out", str(out), *use) == 2
    assert "empty range" in one_line_error(capsys)
    assert infer("--data", f"{rendered}#frames=50:60", "--out", str(out), *use) == 2
    assert "selection keeps none" in one_line_error(capsys)
    assert infer("--data", str(rendered), "--out", str(out), "--image-topic", "/camera/nope", *use) == 2
    assert "no topic '/camera/nope'; topics: /camera/camera_info" in one_line_error(capsys)
    assert infer("--data", str(rendered), "--out", str(out), "--min-depth", "20", *use) == 2
    assert "leave nothing of the model's range" in one_line_error(capsys)

    several = write_bag(tmp_path / "two_cams", "mcap", [
        ("/left/image_raw", IMAGE, 1, image_msg(1, "mono8", np.zeros((4, 4), np.uint8))),
        ("/right/image_raw", IMAGE, 1, image_msg(1, "mono8", np.zeros((4, 4), np.uint8)))])
    assert infer("--data", str(several), "--out", str(out), *use) == 2
    assert "several image topics" in one_line_error(capsys)

    broken = write_bag(tmp_path / "broken", "mcap", [
        ("/cam/image_raw", IMAGE, i, image_msg(i, "yuv422", np.zeros((4, 4, 2), np.uint8))) for i in (1, 2)])
    assert infer("--data", str(broken), "--out", str(out), "--video", str(tmp_path / "p.mp4"), *use) == 2
    assert "none of its 2 selected frames could be decoded" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "garbage.safetensors", "taken", "two_cams"]


def long_bag(path: Path, frames: int, corrupt_at: int | None = None) -> Path:
    """An MCAP recording of 64x48 rgb8 frames at 10 Hz; ``corrupt_at``: that message's record length is
    damaged, so reading fails there, in the middle of the file (messages before it read fine)."""
    stamps = [10**9 + i * 10**8 for i in range(frames)]
    rgb = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    bag = write_bag(path, "mcap", [("/camera/image_raw", IMAGE, s, image_msg(s, "rgb8", rgb)) for s in stamps] +
                    [("/camera/camera_info", INFO, stamps[0], info_msg(stamps[0], 50.0, 64, 48))])
    if corrupt_at is not None:
        storage = bag / f"{bag.name}.mcap"
        data = bytearray(storage.read_bytes())
        log_time = data.index(struct.pack("<Q", stamps[corrupt_at]))  # in its Message record, after the header
        length = log_time - 4 - 2 - 8  # opcode 0x05, length u64, channel u16, sequence u32, log time
        assert data[length - 1] == 0x05
        data[length:length + 8] = struct.pack("<Q", 2**40)
        storage.write_bytes(bytes(data))
    return bag


def test_a_bag_that_breaks_mid_run_leaves_nothing(tmp_path, model, capsys):
    bag = long_bag(tmp_path / "cut", 300, corrupt_at=250)
    out, video = tmp_path / "out", tmp_path / "p.mp4"
    assert infer("--data", str(bag), "--out", str(out), "--video", str(video), "--model", model) == 2
    assert f"{bag}: error while reading, the bag may be truncated or corrupt" in one_line_error(capsys)
    assert not out.exists() and not video.exists()


@pytest.mark.slow
def test_ctrl_c_removes_the_partial_output(tmp_path, model):
    bag = long_bag(tmp_path / "long", 2000)
    out, video = tmp_path / "out", tmp_path / "p.mp4"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "depth_kd.cli", "infer", "--data", str(bag), "--out", str(out),
                             "--video", str(video), "--model", model, "--points", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not video.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the preview file appears with the first frame written
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not out.exists() and not video.exists()
