"""The main job end to end at a tiny size: render -> depth_node over DDS -> recorded outputs -> scores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from rosbags.highlevel import AnyReader

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    depth_kd = Path(sys.executable).parent / "depth-kd"
    result = subprocess.run(
        [str(depth_kd), "demo", "--out", str(out), "--frames", "6", "--size", "128x96", "--device", "cpu",
         "--rate", "5"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answered = re.search(r"frames: (\d+)/(\d+) answered", result.stdout)
    assert answered and answered.group(2) == "6" and int(answered.group(1)) >= 5, result.stdout
    scores = re.search(r"AbsRel ([\d.]+)\s+RMSE ([\d.]+) m\s+d1 ([\d.]+)", result.stdout)
    assert scores, result.stdout
    abs_rel, rmse, d1 = map(float, scores.groups())
    assert 0 < abs_rel < 1 and rmse > 0 and 0 <= d1 <= 1
    assert re.search(r"latency .* median [\d.]+ ms", result.stdout)

    preview = cv2.imread(str(out / "preview.png"))
    assert preview.shape == (96, 3 * 128, 3)  # RGB | predicted | ground truth

    with AnyReader([out / "outputs"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
        depth = next(m for c, _, m in reader.messages() if c.topic == "/depth/image")
        image = reader.deserialize(depth, "sensor_msgs/msg/Image")
    assert counts["/depth/image"] == int(answered.group(1))
    assert counts["/depth/points"] >= 1 and counts["/depth/camera_info"] >= 1
    assert types["/depth/points"] == "sensor_msgs/msg/PointCloud2"
    assert (image.encoding, image.width, image.height) == ("32FC1", 128, 96)
    assert image.header.frame_id == "camera_optical_frame"
