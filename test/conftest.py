"""Shared test set-up: DDS stays on this machine, on a domain id of this run's own."""
import os
import random
import sys
from pathlib import Path

import pytest

# Must happen before rclpy is imported anywhere in the test session.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
os.environ.setdefault(
    "FASTRTPS_DEFAULT_PROFILES_FILE", str(Path(__file__).resolve().parents[1] / "config" / "fastdds.xml")
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "real"

# Test helpers sit next to the tests: the ROS test harness (ros_harness.py) here, the rosbag2 writer of the
# training tests (bag_writer.py) in training/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _write_checkpoint(path: Path, input_height: int, input_width: int, focal_px: float | None = None) -> str:
    import torch

    from depth_kd_ros.checkpoint import ModelInfo, save_checkpoint
    from depth_kd_ros.models import build_model

    torch.manual_seed(0)
    model = build_model("mobilenetv2_mff")
    info = ModelInfo(arch="mobilenetv2_mff", arch_config={}, input_height=input_height,
                     input_width=input_width, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     min_depth=0.1, max_depth=10.0, focal_px=focal_px, provenance={"made_by": "test fixture"})
    save_checkpoint(path, model, info)
    return str(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised student at a small processing size: real model, fast."""
    return _write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", 64, 96)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint) -> str:
    """``tiny_checkpoint`` exported to ONNX (``depth-kd export``), for the onnxruntime backend."""
    from depth_kd.export import export_onnx

    out = Path(tiny_checkpoint).with_suffix(".onnx")
    export_onnx(tiny_checkpoint, out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_metric_onnx(tmp_path_factory) -> str:
    """``tiny_onnx`` whose metric scale assumes fx = 60 px at its 96 px width: CameraInfo rescales its depth."""
    from depth_kd.export import export_onnx

    checkpoint = Path(_write_checkpoint(tmp_path_factory.mktemp("ckpt") / "metric.safetensors", 64, 96, 60.0))
    export_onnx(checkpoint, checkpoint.with_suffix(".onnx"))
    return str(checkpoint.with_suffix(".onnx"))


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory) -> str:
    """The same student at a large processing size, so the node is clearly slower than its input."""
    return _write_checkpoint(tmp_path_factory.mktemp("ckpt") / "slow.safetensors", 320, 416)
