"""BagSource on the real sample bags (rosbag2 MCAP + sqlite3, legacy rosbag2, ROS 1) and on small bags
written here with rosbags for what the samples lack: raw encodings, depth topics, subsampling, errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from bag_writer import COMPRESSED, IMAGE, INFO, image_msg, info_msg, write_bag

from depth_kd.data.bags import BagError, BagSource, bag_topics, find_bags

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
BAGS = SHARED_DATA / "bags"
needs_bags = pytest.mark.skipif(not BAGS.is_dir(), reason=f"real sample bags not found at {BAGS}")

COMPRESSED_TOPIC = "/raspicam_node/image/compressed"
ARUCO_IMAGES_K = (1014.34310338, 1011.69373184, 637.24637081, 469.56637799)  # fx fy cx cy, 1280x960
ARUCO_MARKER_K = (1276.70461834, 1274.34283128, 634.88765092, 379.83180289)  # 1280x720


# ---- test images ---------------------------------------------------------------------------------


def pattern(height: int = 24, width: int = 32) -> np.ndarray:
    """A deterministic RGB test image with distinct channels."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# ---- real bags -----------------------------------------------------------------------------------


@needs_bags
@pytest.mark.parametrize("storage", ["raspicam_ros2_mcap", "raspicam_ros2_sqlite3"])
def test_real_rosbag2_compressed_image_and_camera_info(storage: str) -> None:
    topics = bag_topics(BAGS / storage / "aruco_images")
    assert topics == {"/raspicam_node/camera_info": (INFO, 15), COMPRESSED_TOPIC: (COMPRESSED, 1)}

    for name, size, k in [
        ("aruco_images", (960, 1280), ARUCO_IMAGES_K),
        ("aruco_marker", (720, 1280), ARUCO_MARKER_K),
    ]:
        source = BagSource(BAGS / storage / name)
        assert source.topic == COMPRESSED_TOPIC and source.camera_info_topic == "/raspicam_node/camera_info"
        assert len(source) == 1
        frame = source.load(0)
        assert frame["rgb"].shape == (*size, 3) and frame["rgb"].dtype == np.uint8
        assert 20 < frame["rgb"].mean() < 235
        assert np.allclose([frame["fx"], frame["fy"], frame["cx"], frame["cy"]], k)
        assert "depth" not in frame
        assert frame["topic"] == COMPRESSED_TOPIC and frame["source"] == str((BAGS / storage / name).resolve())
        assert frame["key"] == f"{frame['source']}|{COMPRESSED_TOPIC}|{frame['stamp_ns']}"
    assert source.load(0)["stamp_ns"] == 1480460739_410128053  # the header stamp, not the receive time


@needs_bags
def test_real_mcap_sqlite3_and_ros1_give_identical_frames() -> None:
    frames = [
        BagSource(BAGS / "raspicam_ros2_mcap" / "aruco_images").load(0),
        BagSource(BAGS / "raspicam_ros2_sqlite3" / "aruco_images").load(0),
        BagSource(BAGS / "raspicam_ros1" / "aruco_images.bag").load(0),
    ]
    for frame in frames[1:]:
        assert np.array_equal(frame["rgb"], frames[0]["rgb"])
        assert frame["stamp_ns"] == frames[0]["stamp_ns"] == 1491682360_314066469
        assert frame["fx"] == frames[0]["fx"]


@needs_bags
def test_real_ros1_bags() -> None:
    bags = sorted((BAGS / "raspicam_ros1").glob("*.bag"))
    assert len(bags) == 3
    for bag in bags:
        source = BagSource(bag)
        frame = source.load(0)
        assert len(source) == 1 and frame["rgb"].shape[1] == 1280 and frame["rgb"].shape[0] in (720, 960)
        assert math.isfinite(frame["fx"]) and frame["fx"] > 1000
    # This one's image topic lacks the leading slash; its CameraInfo is found by namespace.
    board = BagSource(BAGS / "raspicam_ros1" / "fiducial_board_611.bag")
    assert board.topic == "raspicam_node/camera/image/compressed"
    assert board.camera_info_topic == "/raspicam_node/camera/camera_info"


@needs_bags
def test_real_legacy_rosbag2_without_metadata(caplog: pytest.LogCaptureFixture) -> None:
    legacy = BAGS / "legacy_rosbag2_no_metadata"
    topics = bag_topics(legacy)
    assert topics["/image"] == (IMAGE, 1) and topics["/image/compressed"] == (COMPRESSED, 1)  # old type names
    assert set(topics) == {"/text", "/image", "/image/compressed", "/fix", "/imu"}

    with pytest.raises(BagError, match=r"several image topics.*/image \(sensor_msgs/msg/Image, 1 msgs\), "):
        BagSource(legacy)
    raw = BagSource(legacy, "/image").load(0)  # bgr8
    jpeg = BagSource(legacy / "sample.db3", "/image/compressed").load(0)  # the storage file directly
    assert raw["rgb"].shape == jpeg["rgb"].shape == (480, 640, 3)
    assert raw["stamp_ns"] > 1.5e18 and math.isnan(raw["fx"])
    r, _, b = raw["rgb"].reshape(-1, 3).mean(axis=0)
    assert r > b + 20  # a warm indoor scene: red really is channel 0 after the bgr8 -> RGB swap


@needs_bags
def test_find_bags_on_the_sample_folder() -> None:
    found = find_bags(BAGS)
    assert len(found) == 10  # incl. redkitchen_7scenes and aims_lab_robot (added 2026-11-30)
    assert BAGS / "legacy_rosbag2_no_metadata" / "sample.db3" in found
    assert BAGS / "raspicam_ros2_mcap" / "aruco_images" in found


# ---- synthetic bags --------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_encodings_decode_to_rgb(tmp_path: Path, storage: str) -> None:
    rgb = pattern()
    grey = rgb[..., 1]
    grey16 = grey.astype(np.uint16) * 256 + 77  # the high byte is the grey value
    encodings = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": grey, "mono16": grey16}
    expected = {"rgb8": rgb, "bgr8": rgb, "mono8": np.repeat(grey[..., None], 3, 2)}
    expected["mono16"] = expected["mono8"]
    messages = [(f"/cam/{enc}", IMAGE, 10**9, image_msg(10**9, enc, px)) for enc, px in encodings.items()]
    bag = write_bag(tmp_path / "raw", storage, messages)

    several = r"several image topics, choose one with `topic` \(--image-topic, data.image_topic\): /cam/bgr8 \("
    with pytest.raises(BagError, match=several):
        BagSource(bag)
    for encoding in encodings:
        frame = BagSource(bag, f"/cam/{encoding}").load(0)
        assert np.array_equal(frame["rgb"], expected[encoding]), encoding
        assert frame["stamp_ns"] == 10**9


def _depth_bag(path: Path, storage: str) -> Path:
    """10 frames at 10 Hz; 32FC1 depth at the same stamps, 16UC1 depth 3 ms later; receive times lag 20 ms."""
    messages = []
    for i in range(10):
        stamp = 5 * 10**9 + i * 10**8
        metres = np.full((24, 32), 1.0 + i, dtype=np.float32)
        metres[0, 0] = np.nan
        millimetres = np.full((24, 32), 1000 * (1 + i), dtype=np.uint16)
        millimetres[0, 1] = 0
        messages += [
            ("/cam/image", IMAGE, stamp + 2 * 10**7, image_msg(stamp, "rgb8", pattern())),
            ("/cam/depth_f", IMAGE, stamp + 3 * 10**7, image_msg(stamp, "32FC1", metres)),
            ("/cam/depth_mm", IMAGE, stamp + 3 * 10**7, image_msg(stamp + 3 * 10**6, "16UC1", millimetres)),
        ]
    return write_bag(path, storage, messages)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_depth_topics_matched_by_stamp(tmp_path: Path, storage: str) -> None:
    bag = _depth_bag(tmp_path / "depth", storage)
    exact = BagSource(bag, "/cam/image", depth_topic="/cam/depth_f")
    assert len(exact) == 10
    for i, frame in enumerate(exact):
        assert frame["depth"].dtype == np.float32 and frame["depth"].shape == (24, 32)
        assert np.isnan(frame["depth"][0, 0]) and frame["depth"][5, 5] == pytest.approx(1.0 + i)

    # 16UC1 is 3 ms off: no exact match, a 5 ms tolerance finds it; require_depth drops the unmatched.
    assert all("depth" not in f for f in BagSource(bag, "/cam/image", depth_topic="/cam/depth_mm"))
    assert len(BagSource(bag, "/cam/image", depth_topic="/cam/depth_mm", require_depth=True)) == 0
    with pytest.raises(ValueError, match="require_depth needs a depth_topic"):  # not an empty source
        BagSource(bag, "/cam/image", require_depth=True)
    near = BagSource(bag, "/cam/image", depth_topic="/cam/depth_mm", depth_tolerance_s=0.005)
    frame = near.load(4)
    assert frame["depth"][5, 5] == pytest.approx(5.0) and np.isnan(frame["depth"][0, 1])


def test_subsampling_by_stride_and_min_gap(tmp_path: Path) -> None:
    stamps = [i * 10**8 + 10**9 for i in range(20)]  # 10 Hz, 2 s
    bag = write_bag(
        tmp_path / "sub",
        "mcap",
        [("/img", IMAGE, s, image_msg(s, "mono8", pattern()[..., 0])) for s in stamps],
    )
    assert BagSource(bag).stamps_ns() == stamps
    assert BagSource(bag, stride=3).stamps_ns() == stamps[::3]
    assert BagSource(bag, min_gap_s=0.25).stamps_ns() == stamps[::3]
    assert BagSource(bag, stride=2, min_gap_s=0.35).stamps_ns() == stamps[::4]
    kept = BagSource(bag, min_gap_s=0.5).stamps_ns()
    assert kept == stamps[::5] and all(b > a for a, b in zip(kept, kept[1:], strict=False))


def test_camera_info_latest_or_by_stamp_and_rescaled(tmp_path: Path) -> None:
    # Images at 1, 2, 3 s (32x24); CameraInfo fx=100 at 1.5 s, fx=200 at 2.5 s, written for 64x48.
    messages = [("/cam/image", IMAGE, s * 10**9, image_msg(s * 10**9, "rgb8", pattern())) for s in (1, 2, 3)]
    messages += [
        ("/cam/camera_info", INFO, int(s * 1e9), info_msg(int(s * 1e9), fx, 64, 48))
        for s, fx in ((1.5, 100), (2.5, 200))
    ]
    messages.sort(key=lambda m: m[2])
    bag = write_bag(tmp_path / "info", "sqlite3", messages)

    latest = [f["fx"] for f in BagSource(bag)]
    assert latest == [50.0, 50.0, 100.0]  # before the first: the earliest; scaled 64 -> 32 wide
    near = [f["fx"] for f in BagSource(bag, camera_info_tolerance_s=0.6)]
    assert near[0] == 50.0 and near[2] == 100.0 and near[1] in (50.0, 100.0)
    assert all(math.isnan(f["fx"]) for f in BagSource(bag, camera_info_tolerance_s=0.1))
    assert all(math.isnan(f["cy"]) for f in BagSource(bag, camera_info_topic=None))
    frame = BagSource(bag).load(2)
    assert (frame["cx"], frame["cy"]) == (16.0, 12.0)


def test_messages_sharing_a_receive_time_and_stamp(tmp_path: Path) -> None:
    a, b = pattern(), 255 - pattern()
    bag = write_bag(tmp_path / "dup", "mcap", [("/img", IMAGE, 10**9, image_msg(10**9, "rgb8", x)) for x in (a, b)])
    source = BagSource(bag)
    assert len(source) == 2 and source.key(0) != source.key(1) and source.key(1).endswith("#1")
    assert np.array_equal(source.load(0)["rgb"], a) and np.array_equal(source.load(1)["rgb"], b)


# ---- errors ----------------------------------------------------------------------------------------


def test_error_missing_path_and_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=f"^{tmp_path}/nope: no such file or directory"):
        BagSource(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match=rf"^{tmp_path}/notes.txt: not a bag: expected a rosbag2 folder"):
        BagSource(tmp_path / "notes.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match=rf"^{tmp_path}/folder: not a bag: the folder has no metadata.yaml"):
        BagSource(tmp_path / "folder")
    (tmp_path / "random.mcap").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(BagError, match=rf"^{tmp_path}/random.mcap: cannot read the bag, it may be truncated"):
        BagSource(tmp_path / "random.mcap")


@needs_bags
@pytest.mark.parametrize(
    ("storage", "name"),
    [("raspicam_ros2_mcap", "aruco_marker.mcap"), ("raspicam_ros2_sqlite3", "aruco_marker.db3")],
)
def test_error_truncated_bag(tmp_path: Path, storage: str, name: str) -> None:
    bag = tmp_path / "aruco_marker"
    shutil.copytree(BAGS / storage / "aruco_marker", bag)
    data = (bag / name).read_bytes()
    (bag / name).chmod(0o644)
    (bag / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match=rf"^{bag}: cannot read the bag, it may be truncated or corrupt: "):
        BagSource(bag)


@needs_bags
def test_error_truncated_ros1_bag(tmp_path: Path) -> None:
    bag = tmp_path / "cut.bag"
    bag.write_bytes((BAGS / "raspicam_ros1" / "aruco_marker.bag").read_bytes()[:100_000])
    with pytest.raises(BagError, match=rf"^{bag}: cannot read the bag, it may be truncated or corrupt"):
        BagSource(bag)


@needs_bags
def test_error_missing_or_wrong_topics() -> None:
    bag = BAGS / "raspicam_ros2_mcap" / "aruco_marker"
    listing = r"topics: /raspicam_node/camera_info \(sensor_msgs/msg/CameraInfo, 1 msgs\), "
    listing += r"/raspicam_node/image/compressed \(sensor_msgs/msg/CompressedImage, 1 msgs\)"
    with pytest.raises(BagError, match=rf"^{bag}: no topic '/camera/image'; {listing}$"):
        BagSource(bag, "/camera/image")
    with pytest.raises(BagError, match=rf"^{bag}: topic '/raspicam_node/camera_info' is sensor_msgs/msg/CameraInfo"):
        BagSource(bag, "/raspicam_node/camera_info")
    with pytest.raises(BagError, match=rf"^{bag}: no depth topic '/depth'; {listing}$"):
        BagSource(bag, depth_topic="/depth")
    info = "/raspicam_node/camera_info"
    with pytest.raises(BagError, match=rf"^{bag}: depth topic '{info}' is sensor_msgs/msg/CameraInfo; need a "):
        BagSource(bag, depth_topic=info)
    with pytest.raises(BagError, match=rf"^{bag}: no CameraInfo topic '/info'; CameraInfo topics: /raspicam_node"):
        BagSource(bag, camera_info_topic="/info")


@needs_bags
def test_error_no_image_topic_and_legacy_split_without_metadata(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "infos", "mcap", [("/info", INFO, 1, info_msg(1, 100.0))])
    with pytest.raises(BagError, match=rf"^{bag}: no Image or CompressedImage topic; topics: /info \("):
        BagSource(bag)
    split = tmp_path / "split"
    split.mkdir()
    for name in ("split_0.db3", "split_1.db3"):
        shutil.copy(BAGS / "legacy_rosbag2_no_metadata" / "sample.db3", split / name)
    with pytest.raises(BagError, match=rf"^{split}: metadata.yaml is missing .* `ros2 bag reindex {split}`"):
        BagSource(split)


def test_error_undecodable_frame_names_the_bag(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "yuv", "mcap", [("/img", IMAGE, 1, image_msg(1, "yuv422", pattern()[..., :2]))])
    source = BagSource(bag)  # indexing does not decode pixels
    message = rf"^{bag.resolve()}: /img, frame at stamp 1 ns: unsupported image encoding 'yuv422'"
    with pytest.raises(BagError, match=message):
        source.load(0)
