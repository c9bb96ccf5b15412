"""ImageFolder on the real NYU-v2, KITTI and TUM RGB-D samples, plus small folders written here."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_kd.data.folders import FolderError, ImageFolder, frame_id

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real sample data not found at {SHARED_DATA}")
NYU_K = (518.8579, 519.46961, 325.58245, 253.73617)


def test_frame_id() -> None:
    assert frame_id("rgb_00050") == frame_id("sync_depth_00050") == "00050"
    assert frame_id("1305031102.175304") == "1305031102.175304"
    assert frame_id("left") == "left"


@needs_data
def test_nyu_pairs_by_trailing_number_with_intrinsics() -> None:
    folder = ImageFolder(SHARED_DATA / "nyu_v2", intrinsics=NYU_K)  # finds rgb/ and the sibling depth/
    assert len(folder) == 3 and folder.depth_folder == (SHARED_DATA / "nyu_v2" / "depth").resolve()
    for frame in folder:
        assert frame["rgb"].shape == (480, 640, 3) and frame["rgb"].dtype == np.uint8
        depth = frame["depth"]
        assert depth.dtype == np.float32 and depth.shape == (480, 640)
        assert 0.5 < np.nanmin(depth) and np.nanmax(depth) < 10.0  # indoor metres (mm / 1000)
        assert 0.6 < np.isfinite(depth).mean() < 0.8
        assert (frame["fx"], frame["fy"], frame["cx"], frame["cy"]) == NYU_K
        assert frame["stamp_ns"] == 0 and frame["topic"] == ""
        assert frame["key"].endswith(f"nyu_v2/rgb/rgb_{frame['key'][-9:-4]}.jpg")
    raw = cv2.imread(str(SHARED_DATA / "nyu_v2" / "depth" / "sync_depth_00050.png"), cv2.IMREAD_UNCHANGED)
    assert np.nanmax(folder.load(1)["depth"]) == pytest.approx(raw.max() / 1000.0)


@needs_data
def test_kitti_sparse_depth_with_scale_256() -> None:
    folder = ImageFolder(SHARED_DATA / "kitti" / "rgb", depth_scale=256.0)  # the image folder itself
    frame = folder.load(0)
    assert frame["rgb"].shape == (375, 1242, 3)
    assert 0.15 < np.isfinite(frame["depth"]).mean() < 0.25  # ~19 % of pixels annotated
    assert 3.0 < np.nanmin(frame["depth"]) and np.nanmax(frame["depth"]) < 90.0
    assert math.isnan(frame["fx"])
    assert len(ImageFolder(SHARED_DATA / "kitti", stride=2)) == 2


@needs_data
def test_tum_pairs_by_nearest_timestamp() -> None:
    exact = ImageFolder(SHARED_DATA / "tum_rgbd", depth_scale=5000.0)
    assert all("depth" not in f for f in exact)  # names differ by up to 15 ms
    near = ImageFolder(SHARED_DATA / "tum_rgbd", depth_scale=5000.0, depth_tolerance_s=0.02)
    assert [p.name for p in near.depths] == sorted(p.name for p in (SHARED_DATA / "tum_rgbd" / "depth").iterdir())
    stamps = [f["stamp_ns"] for f in near]
    assert stamps[0] == 1305031102_175304000 and stamps == sorted(stamps)
    assert all(0.3 < np.nanmin(f["depth"]) and np.nanmax(f["depth"]) < 10.0 for f in near)
    no_depth = ImageFolder(SHARED_DATA / "tum_rgbd", depth=None)
    with pytest.raises(ValueError, match="require_depth needs depth"):  # not an empty folder
        ImageFolder(SHARED_DATA / "tum_rgbd", depth=None, require_depth=True)
    assert no_depth.depth_folder is None and "depth" not in no_depth.load(0)


def _write_folder(root: Path, n: int = 4) -> np.ndarray:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    image = np.random.default_rng(0).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    for i in range(n):
        cv2.imwrite(str(root / "rgb" / f"frame_{i:03d}.png"), image[..., ::-1])  # written BGR, read RGB
    return image


def test_npy_depth_in_metres_and_png_in_millimetres(tmp_path: Path) -> None:
    image = _write_folder(tmp_path)
    metres = np.full((12, 16), 2.5, dtype=np.float32)
    metres[0, 0], metres[0, 1] = np.inf, -1.0
    np.save(tmp_path / "depth" / "frame_000.npy", metres)
    millimetres = np.full((12, 16), 1234, dtype=np.uint16)
    millimetres[3, 3] = 0
    cv2.imwrite(str(tmp_path / "depth" / "frame_001.png"), millimetres)

    folder = ImageFolder(tmp_path)
    first, second, third = folder.load(0), folder.load(1), folder.load(2)
    assert np.array_equal(first["rgb"], image)
    assert first["depth"][5, 5] == 2.5 and np.isnan(first["depth"][0, :2]).all()
    assert second["depth"][5, 5] == pytest.approx(1.234) and np.isnan(second["depth"][3, 3])
    assert "depth" not in third
    assert [folder.key(i) for i in range(4)] == [
        str((tmp_path / "rgb" / f"frame_{i:03d}.png").resolve()) for i in range(4)
    ]


def test_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FolderError, match=rf"^{tmp_path}/nope: no such folder"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FolderError, match=rf"^{tmp_path}/file.txt: not a folder of images"):
        ImageFolder(tmp_path / "file.txt")
    with pytest.raises(FolderError, match=rf"^{tmp_path}: no images \(.png, .jpg, .jpeg\) in this folder"):
        ImageFolder(tmp_path)
    _write_folder(tmp_path / "scene")
    with pytest.raises(FolderError, match=rf"^{tmp_path}/elsewhere: depth folder does not exist"):
        ImageFolder(tmp_path / "scene", depth=tmp_path / "elsewhere")


def test_errors_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "scene"
    _write_folder(root)
    cv2.imwrite(str(root / "depth" / "frame_000.png"), np.zeros((12, 16), dtype=np.uint8))  # 8-bit
    cv2.imwrite(str(root / "depth" / "frame_001.png"), np.ones((6, 8), dtype=np.uint16))  # wrong size
    (root / "rgb" / "frame_002.png").write_bytes(b"not a png")
    folder = ImageFolder(root)
    with pytest.raises(
        FolderError, match=r"depth/frame_000.png: expected a single-channel 16-bit depth png, got uint8"
    ):
        folder.load(0)
    with pytest.raises(FolderError, match=r"depth/frame_001.png: depth is 8x6 but frame_001.png is 16x12"):
        folder.load(1)
    with pytest.raises(FolderError, match=r"rgb/frame_002.png: 9 bytes of 'png' data .* not a PNG or JPEG"):
        folder.load(2)
    np.save(root / "depth" / "frame_001.npy", np.zeros((12, 16), dtype=np.float32))
    with pytest.raises(FolderError, match=r"frame_001.npy and frame_001.png have the same frame id '001'"):
        ImageFolder(root)
