"""FrameDataset over many real and written bags plus image folders; EpochSampler; TrainingTransform."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from bag_writer import IMAGE, image_msg, write_bag
from torch.utils.data import DataLoader

from depth_kd.data import BagSource, EpochSampler, FrameDataset, ImageFolder, TrainingTransform, find_bags
from depth_kd.data.dataset import resize_and_crop

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real sample data not found at {SHARED_DATA}")


def write_rgbd_bag(path: Path, storage: str, frames: int, first_s: int) -> Path:
    """``frames`` bgr8 images at 10 Hz with a 16UC1 depth at the same stamps; pixel value = frame number."""
    messages = []
    for i in range(frames):
        stamp = first_s * 10**9 + i * 10**8
        color = image_msg(stamp, "bgr8", np.full((48, 64, 3), i, dtype=np.uint8))
        mm = image_msg(stamp, "16UC1", np.full((48, 64), 1000 + i, dtype=np.uint16))
        messages += [("/cam/color", IMAGE, stamp, color), ("/cam/depth", IMAGE, stamp, mm)]
    return write_bag(path, storage, messages)


@pytest.fixture
def written_bags(tmp_path: Path) -> list[BagSource]:
    bags = [
        write_rgbd_bag(tmp_path / "a", "mcap", 5, first_s=10),
        write_rgbd_bag(tmp_path / "b", "sqlite3", 7, first_s=20),
    ]
    return [BagSource(bag, "/cam/color", depth_topic="/cam/depth") for bag in bags]


def test_many_written_bags_in_one_dataset(written_bags: list[BagSource]) -> None:
    dataset = FrameDataset(written_bags)
    assert len(dataset) == 12
    source, local = dataset.locate(7)
    assert source is written_bags[1] and local == 2
    for index in (0, 4, 5, 11):
        frame = dataset[index]
        number = index if index < 5 else index - 5
        assert frame["rgb"][0, 0, 0] == number and frame["depth"][0, 0] == pytest.approx(1.0 + number / 1000)
        assert frame["key"] == dataset.key(index)
    assert len({dataset.key(i) for i in range(12)}) == 12
    with pytest.raises(IndexError, match="index 12 out of range for a dataset of 12 frames"):
        dataset[12]


@needs_data
def test_real_bags_and_folders_in_one_dataset() -> None:
    bags = SHARED_DATA / "bags"
    large = ("legacy", "redkitchen_7scenes", "aims_lab_robot")  # the last two have 500 / 200 frames: test_recordings
    sources = [BagSource(p) for p in find_bags(bags) if not any(name in str(p) for name in large)]
    sources.append(BagSource(bags / "legacy_rosbag2_no_metadata", "/image"))
    sources.append(ImageFolder(SHARED_DATA / "nyu_v2"))
    dataset = FrameDataset(sources)
    assert len(dataset) == 7 + 1 + 3
    keys = [dataset.key(i) for i in range(len(dataset))]
    assert len(set(keys)) == len(keys)
    frames = [dataset[i] for i in range(len(dataset))]
    assert [f["key"] for f in frames] == keys
    assert sum("depth" in f for f in frames) == 3
    assert {f["rgb"].shape for f in frames} == {(960, 1280, 3), (720, 1280, 3), (480, 640, 3)}


def test_epoch_sampler_is_deterministic_sharded_and_resumable() -> None:
    sampler = EpochSampler(10, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and first == list(EpochSampler(10, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(10))

    ranks = [EpochSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    shares = [r.order() for r in ranks]
    assert all(len(s) == 4 for s in shares) and set().union(*shares) == set(range(10))  # padded to 12

    resumed = EpochSampler(10, seed=3, rank=1, world_size=3)
    resumed.set_epoch(0, start=3)
    assert list(resumed) == shares[1][3:] and len(resumed) == 1
    assert list(EpochSampler(4, shuffle=False)) == [0, 1, 2, 3]


def test_resize_and_crop_keeps_the_intrinsics_consistent() -> None:
    # A white square around the pixel where the 3-D point (0.2, -0.1, 2.0) projects.
    fx, fy, cx, cy = 400.0, 380.0, 300.0, 170.0
    u, v = fx * 0.2 / 2.0 + cx, fy * -0.1 / 2.0 + cy
    rgb = np.zeros((360, 640, 3), dtype=np.uint8)
    rgb[round(v) - 4 : round(v) + 5, round(u) - 4 : round(u) + 5] = 255
    frame = {"rgb": rgb, "fx": fx, "fy": fy, "cx": cx, "cy": cy, "stamp_ns": 0, "source": "", "topic": "", "key": "k"}
    frame["depth"] = np.full((360, 640), 2.0, dtype=np.float32)

    out = resize_and_crop(frame, 228, 304)  # scale 228/360, then crop the width 405 -> 304
    assert out["rgb"].shape == (228, 304, 3) and out["depth"].shape == (228, 304)
    ys, xs = np.nonzero(out["rgb"][..., 0] > 127)
    u2, v2 = out["fx"] * 0.2 / 2.0 + out["cx"], out["fy"] * -0.1 / 2.0 + out["cy"]
    assert abs(xs.mean() - u2) < 1.0 and abs(ys.mean() - v2) < 1.0
    assert out["fx"] == pytest.approx(fx * 405 / 640) and frame["rgb"].shape == (360, 640, 3)  # input untouched


def test_training_transform_and_dataloader_with_workers(written_bags: list[BagSource]) -> None:
    dataset = FrameDataset(written_bags, transform=TrainingTransform(32, 48))
    sample = dataset[3]
    assert sample["rgb"].shape == (3, 32, 48) and sample["rgb"].dtype == torch.float32
    assert sample["rgb"].max() == pytest.approx(3 / 255) and bool(sample["has_depth"])
    assert sample["depth"].shape == (1, 32, 48) and math.isnan(sample["intrinsics"][0])

    sampler = EpochSampler(len(dataset), seed=0)
    sampler.set_epoch(2, start=4)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2)
    keys = [key for batch in loader for key in batch["key"]]
    assert keys == [dataset.key(i) for i in sampler]  # workers reopen the bags; order is the sampler's
    assert len(keys) == 8

    spawned = DataLoader(dataset, batch_size=6, num_workers=1, multiprocessing_context="spawn")
    batch = next(iter(spawned))  # the sources pickle without their open readers
    assert batch["rgb"].shape == (6, 3, 32, 48) and batch["stamp_ns"].tolist()[:2] == [10**10, 10**10 + 10**8]


@needs_data
def test_training_transform_mixes_frames_with_and_without_depth() -> None:
    bag = BagSource(SHARED_DATA / "bags" / "raspicam_ros2_mcap" / "aruco_marker")
    dataset = FrameDataset([bag, ImageFolder(SHARED_DATA / "nyu_v2")], transform=TrainingTransform(64, 96))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["has_depth"].tolist() == [False, True, True, True]
    assert torch.isnan(batch["depth"][0]).all() and torch.isfinite(batch["depth"][1]).any()
    fx = batch["intrinsics"][0, 0].item()
    assert fx == pytest.approx(1276.70461834 * 114 / 1280)  # 1280x720 -> 114x64, then cropped to 96 wide
