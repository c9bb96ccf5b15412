"""Recordings as robots write them: compressedDepth depth, RealSense topic names picked without being told,
bags without CameraInfo, part of a recording by #frames=/#time=, and image folders through open_source.
Real sample bags where they exist (skipped without ../shared), small bags written here with rosbags otherwise."""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_writer import COMPRESSED, IMAGE, INFO, compressed_msg, image_msg, info_msg, write_bag

from depth_kd.config import ConfigError, TrainConfig
from depth_kd.data import BagError, BagSource, FolderError, ImageFolder, Selection, open_source, parse_data_spec
from depth_kd.train_data import open_sources

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
KITCHEN = SHARED_DATA / "bags" / "redkitchen_7scenes"
ROBOT = SHARED_DATA / "bags" / "aims_lab_robot"
UNLABELED = SHARED_DATA / "unlabeled" / "opencv_box_livingroom"
needs_kitchen = pytest.mark.skipif(not KITCHEN.is_dir(), reason=f"real sample bag not found at {KITCHEN}")
needs_robot = pytest.mark.skipif(not ROBOT.is_dir(), reason=f"real sample bag not found at {ROBOT}")
needs_unlabeled = pytest.mark.skipif(not UNLABELED.is_dir(), reason=f"real image folder not found at {UNLABELED}")

COLOR = "/camera/color/image_raw/compressed"
COLOR_INFO = "/camera/color/camera_info"
ALIGNED = "/camera/aligned_depth_to_color/image_raw/compressedDepth"
ALIGNED_INFO = "/camera/aligned_depth_to_color/camera_info"
H, W = 24, 32


def jpeg(seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", rgb)[1].tobytes()


def compressed_depth_payload(image: np.ndarray, quant: tuple[float, float] = (0.0, 0.0)) -> bytes:
    """What compressed_depth_image_transport writes: ConfigHeader (int32 0, float32 x2) + 16-bit PNG."""
    return struct.pack("<iff", 0, *quant) + cv2.imencode(".png", image)[1].tobytes()


def millimetres(i: int) -> np.ndarray:
    depth = np.full((H, W), 1000 + 250 * i, dtype=np.uint16)
    depth[0, 0] = 0
    return depth


def realsense_bag(path: Path, frames: int = 6, depth: list | None = None, infos: bool = True) -> Path:
    """A RealSense-style recording at 10 Hz: jpeg colour, compressedDepth (16UC1 mm) and two CameraInfo topics."""
    messages = []
    for i in range(frames):
        stamp = 10**9 + i * 10**8
        payload = depth[i] if depth else compressed_depth_payload(millimetres(i))
        messages += [(COLOR, COMPRESSED, stamp, compressed_msg(stamp, "rgb8; jpeg compressed bgr8", jpeg(i))),
                     (ALIGNED, COMPRESSED, stamp, compressed_msg(stamp, "16UC1; compressedDepth png", payload))]
        if infos:
            messages += [(ALIGNED_INFO, INFO, stamp, info_msg(stamp, 100.0, W, H)),
                         (COLOR_INFO, INFO, stamp, info_msg(stamp, 50.0, W, H))]
    return write_bag(path, "mcap", messages)


def info_lines(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


# ---- compressedDepth and topic auto-pick ------------------------------------------------------------


def test_compressed_depth_bag_end_to_end_with_topics_picked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bag = realsense_bag(tmp_path / "rs")
    caplog.set_level(logging.INFO)
    for _ in range(2):  # the defaults are absent: the only candidates are used, said once per bag
        source = BagSource(bag, "/camera/image_raw", depth_topic="/camera/depth/image", require_depth=True)
    assert (source.topic, source.depth_topic) == (COLOR, ALIGNED)
    assert source.camera_info_topic == COLOR_INFO  # its own namespace, not the aligned depth's
    assert len(info_lines(caplog, f"using {COLOR}, the bag's only image topic")) == 1
    assert len(info_lines(caplog, f"using {ALIGNED}, the bag's only depth topic")) == 1
    assert len(source) == 6
    for i, frame in enumerate(source):
        assert frame["depth"].dtype == np.float32 and frame["depth"].shape == (H, W) == frame["rgb"].shape[:2]
        assert np.isnan(frame["depth"][0, 0]) and frame["depth"][5, 5] == pytest.approx(1.0 + 0.25 * i)
        assert frame["fx"] == 50.0


def test_compressed_depth_32fc1_in_a_bag(tmp_path: Path) -> None:
    quant_a, quant_b = 100.0 * 101.0, 1.0 - 100.0 * 101.0 / 10.0  # the codec's defaults: z0 = 100, 10 m max
    q = np.full((H, W), quant_a / 2.0 + quant_b, dtype=np.float32).round().astype(np.uint16)
    q[3, 4] = 0
    payload = compressed_depth_payload(q, (quant_a, quant_b))
    messages = [(COLOR, COMPRESSED, 10**9, compressed_msg(10**9, "jpeg", jpeg(0))),
                (ALIGNED, COMPRESSED, 10**9, compressed_msg(10**9, "32FC1; compressedDepth png", payload))]
    frame = BagSource(write_bag(tmp_path / "f", "sqlite3", messages), depth_topic=ALIGNED).load(0)
    assert np.isnan(frame["depth"][3, 4]) and frame["depth"][0, 0] == pytest.approx(2.0, rel=1e-3)


def test_corrupt_or_unknown_compressed_depth_is_one_bag_error(tmp_path: Path) -> None:
    good = compressed_depth_payload(millimetres(0))
    corrupt = good[:12] + b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    bag = realsense_bag(tmp_path / "bad", frames=3, depth=[good, corrupt, good])
    source = BagSource(bag, depth_topic=ALIGNED)  # the first depth message decodes: indexing succeeds
    source.load(0)
    with pytest.raises(BagError, match=rf"^{bag}: {ALIGNED}, frame at stamp 1100000000 ns: compressedDepth .*PNG"):
        source.load(1)
    rvl = realsense_bag(tmp_path / "rvl", frames=1, depth=[struct.pack("<iff", 1, 0, 0) + good[12:]])
    with pytest.raises(BagError, match=rf"^{rvl}: {ALIGNED}, frame at stamp 1000000000 ns: .*unknown compression"):
        BagSource(rvl, depth_topic=ALIGNED)  # an unusable first message fails at opening, not mid-training


def test_auto_pick_errors_list_the_candidates(tmp_path: Path) -> None:
    messages = [(t, COMPRESSED, 1, compressed_msg(1, "jpeg", jpeg(0))) for t in ("/left/compressed", "/right/jpeg")]
    messages += [(t, IMAGE, 1, image_msg(1, "32FC1", np.ones((H, W), np.float32))) for t in ("/a/depth", "/b/depth")]
    bag = write_bag(tmp_path / "two", "mcap", messages)
    with pytest.raises(BagError, match=r"no topic '/camera/image_raw' and several image topics, choose one with "
                                       r"`topic` \(--image-topic, data.image_topic\): /left/compressed \(.*"
                                       r"/right/jpeg \("):
        BagSource(bag, "/camera/image_raw")
    with pytest.raises(BagError, match=r"no depth topic '/camera/depth/image'; several depth topics, choose one "
                                       r"with `depth_topic` .*: /a/depth \(.*/b/depth \("):
        BagSource(bag, "/left/compressed", depth_topic="/camera/depth/image")
    with pytest.raises(BagError, match=r"no topic '/camera/color/image_raw'; topics: /a/depth"):  # explicit: no guess
        BagSource(bag, "/camera/color/image_raw")
    with pytest.raises(BagError, match=r"no depth topic '/cam/depth'; topics: /a/depth"):
        BagSource(bag, "/left/compressed", depth_topic="/cam/depth")
    assert BagSource(bag, "/left/compressed", depth_topic="/b/depth").load(0)["depth"][0, 0] == 1.0
    only = write_bag(tmp_path / "none", "mcap", [messages[2]])  # only a depth topic: no image topic to use
    with pytest.raises(BagError, match=r"no topic '/camera/image_raw' and no Image or CompressedImage topic"):
        BagSource(only, "/camera/image_raw")


def test_jpeg_on_the_depth_topic_is_refused_at_opening(tmp_path: Path) -> None:
    messages = [(COLOR, COMPRESSED, 1, compressed_msg(1, "jpeg", jpeg(0))),
                ("/cam/depth/compressed", COMPRESSED, 1, compressed_msg(1, "jpeg", jpeg(1)))]
    bag = write_bag(tmp_path / "j", "mcap", messages)
    with pytest.raises(BagError, match=r"/cam/depth/compressed, frame at stamp 1 ns: .*'jpeg' is not a compressedDe"):
        BagSource(bag, depth_topic="/camera/depth/image")


@needs_kitchen
def test_redkitchen_read_end_to_end_with_topics_picked() -> None:
    source = BagSource(KITCHEN, "/camera/image_raw", depth_topic="/camera/depth/image", require_depth=True,
                       selection=Selection("frames", 0, 3))
    assert (source.topic, source.depth_topic, source.camera_info_topic) == (COLOR, ALIGNED, COLOR_INFO)
    assert len(source) == 3
    frame = source.load(2)
    depth = frame["depth"]
    assert frame["rgb"].shape == (480, 640, 3) and depth.shape == (480, 640) and depth.dtype == np.float32
    valid = depth[np.isfinite(depth)]
    assert 0.3 < valid.size / depth.size < 1.0  # a centred window is valid, the border is not
    assert 0.5 < valid.min() and valid.max() < 4.0
    assert (frame["fx"], frame["fy"], frame["cx"], frame["cy"]) == (525.0, 525.0, 320.0, 240.0)
    assert frame["key"] == f"{KITCHEN}|{COLOR}|{frame['stamp_ns']}"


# ---- no CameraInfo ----------------------------------------------------------------------------------


def test_bag_without_camera_info_warns_once_nan_or_assumed_fx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bag = realsense_bag(tmp_path / "noinfo", frames=2, infos=False)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        unknown = BagSource(bag)
    warnings = info_lines(caplog, "no CameraInfo topic", logging.WARNING)
    assert warnings == [f"{bag}: no CameraInfo topic; intrinsics unknown (NaN); the trainer will assume the "
                        "teacher's focal length"]
    assert all(math.isnan(unknown.load(0)[k]) for k in ("fx", "fy", "cx", "cy"))
    frame = BagSource(bag, assumed_fx=30.0).load(1)
    assert (frame["fx"], frame["fy"], frame["cx"], frame["cy"]) == (30.0, 30.0, W / 2, H / 2)


@needs_robot
def test_real_robot_bag_without_camera_info_is_unlabeled_data() -> None:
    config = TrainConfig()
    config.data.assumed_fx = 615.0
    (source,) = open_sources([f"{ROBOT}#frames=10:12"], config, None)
    assert source.topic == COLOR and source.camera_info_topic is None and len(source) == 2
    frame = source.load(0)
    assert frame["rgb"].shape == (480, 640, 3) and "depth" not in frame
    assert (frame["fx"], frame["cx"], frame["cy"]) == (615.0, 320.0, 240.0)
    with pytest.raises(BagError, match=r"no depth topic '/camera/depth/image'; topics: /camera/color"):
        open_sources([str(ROBOT)], config, config.data.depth_topic)  # as labeled data X it has no depth


# ---- selections ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("a/bag", ("a/bag", None)),
    ("a/bag#frames=10:20", ("a/bag", Selection("frames", 10, 20))),
    ("a/bag#frames=:5", ("a/bag", Selection("frames", None, 5))),
    ("a/bag#frames=7:", ("a/bag", Selection("frames", 7, None))),
    ("a/bag#time=1.5:3", ("a/bag", Selection("time", 1.5, 3.0))),
    ("take#2/bag", ("take#2/bag", None)),  # a '#' that is not followed by key=value is part of the path
])
def test_parse_data_spec(text: str, expected: tuple) -> None:
    assert parse_data_spec(text) == expected
    if expected[1] is not None:
        assert parse_data_spec(expected[0] + expected[1].spec()) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("bag#frame=1:2", r"unknown selection 'frame'; use PATH#frames=A:B or PATH#time=T0:T1"),
    ("bag#frames=5", r"expected #frames=START:END"),
    ("bag#frames=1:2:3", r"expected #frames=START:END"),
    ("bag#frames=1.5:3", r"'1.5' is not a whole number of image messages"),
    ("bag#time=a:3", r"'a' is not seconds"),
    ("bag#frames=5:5", r"^bag: selection #frames=5:5: empty range, the start must be below the end"),
    ("bag#frames=9:2", r"empty range"),
    ("bag#time=-1:2", r"bounds must be finite and >= 0"),
    ("#frames=1:2", r"no path before '#'"),
])
def test_bad_data_specs_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_data_spec(text)


def _timed_bag(path: Path, frames: int = 20) -> Path:
    """``frames`` mono8 images at 10 Hz starting at 5 s, receive time = stamp."""
    stamps = [5 * 10**9 + i * 10**8 for i in range(frames)]
    return write_bag(path, "sqlite3", [("/img", IMAGE, s, image_msg(s, "mono8", np.full((H, W), i, np.uint8)))
                                       for i, s in enumerate(stamps)])


def test_frame_and_time_selections_partition_the_bag_with_keys_unchanged(tmp_path: Path) -> None:
    bag = _timed_bag(tmp_path / "t")
    whole = BagSource(bag)
    keys = [whole.key(i) for i in range(len(whole))]
    first = BagSource(bag, selection=Selection("frames", 0, 8))
    second = BagSource(bag, selection=Selection("frames", 8))
    assert [first.key(i) for i in range(8)] + [second.key(i) for i in range(12)] == keys  # no overlap, no gap
    assert second.load(0)["rgb"][0, 0, 0] == 8 and second.load(0)["key"] == keys[8]
    # Time from the first image's stamp, half-open: 0.5 s -> frames 5.., 1.2 s -> frames ..11.
    timed = BagSource(bag, selection=parse_data_spec("x#time=0.5:1.2")[1])
    assert timed.stamps_ns() == whole.stamps_ns()[5:12]
    rest = BagSource(bag, selection=Selection("time", 1.2))
    assert rest.stamps_ns() == whole.stamps_ns()[12:]
    # Stride counts from the bag's first message, so selections keep the frames the whole bag keeps.
    strided = BagSource(bag, stride=3, selection=Selection("frames", 4, 11))
    assert strided.stamps_ns() == whole.stamps_ns()[6:11:3]
    with pytest.raises(BagError, match=r"/img#frames=40: selects no frames \(stride 1\); the topic has 20 messages"):
        BagSource(bag, selection=Selection("frames", 40))
    with pytest.raises(BagError, match=r"/img#frames=4:5 selects no frames \(stride 3\)"):
        BagSource(bag, stride=3, selection=Selection("frames", 4, 5))


def test_selection_through_the_config_and_open_sources(tmp_path: Path) -> None:
    bag = _timed_bag(tmp_path / "c")
    config = TrainConfig()
    config.update({"data": {"train": [f"{bag}#frames=2:6"], "aux": [f"{tmp_path}/./c#time=:0.3"],
                            "assumed_fx": 40}, "distill": {"mode": "supervised"}})
    config.validate()  # the path part must exist; the suffix is kept
    assert config.data.train == [f"{bag}#frames=2:6"] and config.data.aux == [f"{bag}#time=:0.3"]
    x, u = open_sources(config.data.train + config.data.aux, config, None)
    assert len(x) == 4 and len(u) == 3 and x.load(0)["fx"] == 40.0
    for bad, message in ((f"{tmp_path}/nope#frames=1:2", "data.train: no such bag or image folder: .*/nope$"),
                         (f"{bag}#frames=3:1", "empty range")):
        config.data.train = [bad]
        with pytest.raises(ConfigError, match=message):
            config.validate()
    config.data.train, config.data.assumed_fx = [str(bag)], -1.0
    with pytest.raises(ConfigError, match="data.assumed_fx must be a positive number of pixels or null"):
        config.validate()


# ---- image folders ---------------------------------------------------------------------------------


@needs_unlabeled
def test_unlabeled_image_folder_through_open_source(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    folder = open_source(f"{UNLABELED}#frames=3:6", assumed_fx=500.0)
    assert isinstance(folder, ImageFolder) and len(folder) == 3
    frame = folder.load(0)
    assert frame["key"].endswith("000003.jpg") and frame["rgb"].shape == (480, 640, 3) and "depth" not in frame
    assert (frame["fx"], frame["cx"], frame["cy"]) == (500.0, 320.0, 240.0)
    with pytest.raises(FolderError, match=r"#time=1:2 needs stamps; select part of an image folder with #frames"):
        open_source(f"{UNLABELED}#time=1:2")
    with pytest.raises(FolderError, match=r"opencv_box_livingroom#frames=1000: selects no images"):
        open_source(f"{UNLABELED}#frames=1000:")
    assert len(open_source(str(UNLABELED), depth_topic="/camera/depth/image", require_depth=True)) == 0
