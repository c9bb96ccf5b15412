"""rosbag2 recordings of the synthetic world, read back with rosbags, and the ``depth-kd render`` CLI."""

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader

from depth_kd.cli import main
from depth_kd.render.camera import pose_to_translation_quaternion
from depth_kd.render.families import IndoorConfig
from depth_kd.render.record import DEFAULT_START_NS, make_intrinsics, record_sequence
from depth_kd.render.sequence import render_sequence

W, H, FRAMES, RATE = 64, 48, 4, 20.0
PERIOD_NS = 50_000_000
EXPECTED_TYPES = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/depth/image": "sensor_msgs/msg/Image",
    "/camera/instances": "sensor_msgs/msg/Image",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
}


def _read(path: Path) -> tuple[dict, dict[str, list]]:
    """(topic -> msgtype, topic -> [(bag timestamp, message)]) of a whole bag."""
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        out: dict[str, list] = {t: [] for t in types}
        for conn, stamp, raw in reader.messages():
            out[conn.topic].append((stamp, reader.deserialize(raw, conn.msgtype)))
    return types, out


def _stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


@pytest.mark.parametrize("storage, suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_bag_round_trip(tmp_path, storage, suffix):
    out = tmp_path / "bag"
    summary = record_sequence(
        out,
        "indoor",
        FRAMES,
        9,
        W,
        H,
        storage=storage,
        rate_hz=RATE,
        compressed=True,
        fx=70.0,
        trajectory="handheld",
        progress=False,
    )
    assert summary.frames == FRAMES and summary.period_ns == PERIOD_NS
    assert any(p.suffix == suffix for p in out.iterdir()) and (out / "metadata.yaml").exists()

    types, msgs = _read(out)
    assert types == EXPECTED_TYPES
    assert all(len(m) == FRAMES for m in msgs.values())
    k = make_intrinsics(W, H, fx=70.0)
    rendered = [f.numpy() for f in render_sequence("indoor", FRAMES, 9, k, "handheld", RATE)]

    for i, frame in enumerate(rendered):
        stamp = DEFAULT_START_NS + i * PERIOD_NS
        for topic, items in msgs.items():
            bag_stamp, msg = items[i]
            header = msg.transforms[0].header if topic == "/tf" else msg.header
            assert bag_stamp == stamp and _stamp_ns(header) == stamp, topic
            assert header.frame_id == ("world" if topic == "/tf" else "camera_optical_frame")

        image = msgs["/camera/image_raw"][i][1]
        assert (image.encoding, image.height, image.width, image.step, image.is_bigendian) == (
            "rgb8",
            H,
            W,
            3 * W,
            0,
        )
        assert np.array_equal(np.asarray(image.data).reshape(H, W, 3), frame.rgb)

        depth = msgs["/camera/depth/image"][i][1]
        assert (depth.encoding, depth.height, depth.width, depth.step) == ("32FC1", H, W, 4 * W)
        assert np.asarray(depth.data).tobytes() == frame.depth.astype("<f4").tobytes()

        inst = msgs["/camera/instances"][i][1]
        assert (inst.encoding, inst.step) == ("16UC1", 2 * W)
        assert np.array_equal(
            np.frombuffer(np.asarray(inst.data).tobytes(), "<u2").reshape(H, W), frame.instances
        )

        info = msgs["/camera/camera_info"][i][1]
        assert (info.height, info.width, info.distortion_model) == (H, W, "plumb_bob")
        assert np.array_equal(info.d, np.zeros(5))
        assert np.allclose(info.k, [70.0, 0, 31.5, 0, 70.0, 23.5, 0, 0, 1])
        assert np.allclose(info.p, [70.0, 0, 31.5, 0, 0, 70.0, 23.5, 0, 0, 0, 1, 0])

        tf = msgs["/tf"][i][1].transforms
        assert len(tf) == 1 and tf[0].child_frame_id == "camera_optical_frame"
        xyz, q = pose_to_translation_quaternion(frame.pose)
        t, r = tf[0].transform.translation, tf[0].transform.rotation
        assert np.allclose([t.x, t.y, t.z], xyz) and np.allclose([r.x, r.y, r.z, r.w], q)

        jpeg = msgs["/camera/image_raw/compressed"][i][1]
        assert jpeg.format == "rgb8; jpeg compressed bgr8"
        decoded = cv2.imdecode(np.asarray(jpeg.data), cv2.IMREAD_COLOR)[..., ::-1]
        assert np.abs(decoded.astype(int) - frame.rgb).mean() < 8.0


def test_without_compressed_topic_and_default_rate(tmp_path):
    out = tmp_path / "bag"
    record_sequence(out, "outdoor", 3, 1, 32, 24, progress=False)
    types, msgs = _read(out)
    assert "/camera/image_raw/compressed" not in types and len(types) == 5
    stamps = [s for s, _ in msgs["/camera/image_raw"]]
    assert np.all(np.diff(stamps) == 100_000_000)


@dataclass(frozen=True)
class _FailingFamily(IndoorConfig):
    """A family whose scene cannot be built: the failure happens after the bag was opened."""

    def build(self, rng):
        raise RuntimeError("scene generation failed")


def test_failure_mid_way_removes_partial_output(tmp_path):
    out = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="scene generation failed"):
        record_sequence(out, _FailingFamily(), 3, 0, W, H, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_render_writes_a_readable_bag(tmp_path, capsys):
    out = tmp_path / "cli_bag"
    code = main(
        [
            "render",
            "--family",
            "outdoor",
            "--frames",
            "2",
            "--seed",
            "4",
            "--size",
            "40x30",
            "--out",
            str(out),
            "--storage",
            "sqlite3",
            "--rate",
            "5",
            "--fov",
            "90",
            "--quiet",
        ]
    )
    assert code == 0
    types, msgs = _read(out)
    assert len(types) == 5 and all(len(m) == 2 for m in msgs.values())
    info = msgs["/camera/camera_info"][0][1]
    assert (info.width, info.height) == (40, 30) and info.k[0] == pytest.approx(20.0)
    assert msgs["/camera/image_raw"][1][0] - msgs["/camera/image_raw"][0][0] == 200_000_000


def _bad_arguments(tmp_path: Path) -> dict[str, list[str]]:
    existing = tmp_path / "existing"
    existing.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    new = str(tmp_path / "new_bag")
    base = ["render", "--frames", "2", "--size", "32x24"]
    return {
        "output exists": [*base, "--out", str(existing)],
        "missing parent": [*base, "--out", str(tmp_path / "no" / "bag")],
        "parent is a file": [*base, "--out", str(a_file / "bag")],
        "zero frames": ["render", "--frames", "0", "--out", new],
        "negative frames": ["render", "--frames", "-3", "--out", new],
        "frames not a number": ["render", "--frames", "many", "--out", new],
        "missing frames": ["render", "--out", new],
        "size too small": [*base, "--size", "8x24", "--out", new],
        "size too large": [*base, "--size", "5000x24", "--out", new],
        "malformed size": [*base, "--size", "32by24", "--out", new],
        "half a size": [*base, "--size", "32x", "--out", new],
        "unknown family": [*base, "--family", "mars", "--out", new],
        "unknown storage": [*base, "--storage", "rosbag1", "--out", new],
        "unknown trajectory": [*base, "--trajectory", "fly", "--out", new],
        "zero rate": [*base, "--rate", "0", "--out", new],
        "zero fov": [*base, "--fov", "0", "--out", new],
        "huge fov": [*base, "--fov", "200", "--out", new],
        "negative fx": [*base, "--fx", "-5", "--out", new],
        "fov and fx": [*base, "--fov", "60", "--fx", "50", "--out", new],
        "negative seed": [*base, "--seed", "-1", "--out", new],
        "unknown device": [*base, "--device", "tpu", "--out", new],
        "unknown subcommand": ["paint", "--out", new],
    }


def test_every_bad_argument_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys):
    cases = _bad_arguments(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, argv in cases.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error:" in err, (name, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, name
    assert list((tmp_path / "existing").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent_exits_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["render", "--frames", "1", "--out", str(locked / "bag")]) == 2
        assert "not writable" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_exits_2(tmp_path, capsys):
    assert main(["render", "--frames", "1", "--device", "cuda", "--out", str(tmp_path / "bag")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
