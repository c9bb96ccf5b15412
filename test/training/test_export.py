"""ONNX and float16 export of a node checkpoint: parity with PyTorch and with the node's inference, the ModelInfo
carried in the ONNX metadata, a loud failure on mismatch, and the exported model usable as a teacher."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open

from depth_kd import export
from depth_kd.config import DistillConfig
from depth_kd.export import ExportError, export_fp16, export_onnx, onnx_model_info
from depth_kd.teacher_setup import load_teacher
from depth_kd_ros.checkpoint import ModelInfo, save_checkpoint
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.models import build_model

TINY = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    info = ModelInfo("mobilenetv2_mff", TINY, 64, 96, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.1, 10.0,
                     focal_px=70.0, provenance={"made_by": "test_export"})
    path = tmp_path_factory.mktemp("ckpt") / "student.safetensors"
    save_checkpoint(path, build_model("mobilenetv2_mff", TINY), info)
    return path, info


def test_onnx_matches_the_node_inference_and_carries_the_model_info(tmp_path, checkpoint):
    path, info = checkpoint
    out = tmp_path / "student.onnx"
    diff = export_onnx(path, out)
    assert 0 <= diff <= 1e-4

    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert onnx_model_info(out) == info
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 64, 96]  # fixed processing size and batch

    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    image = (rgb.astype(np.float32) / 255 - np.float32(info.mean)) / np.float32(info.std)
    onnx_depth = session.run(None, {"image": image.transpose(2, 0, 1)[None]})[0][0, 0]
    node_depth = DepthEstimator(path, device="cpu").predict(rgb)
    np.testing.assert_allclose(np.clip(onnx_depth, 0.1, 10.0), node_depth, atol=1e-4)


def test_dynamic_batch(tmp_path, checkpoint):
    out = tmp_path / "dynamic.onnx"
    assert export_onnx(checkpoint[0], out, dynamic_batch=True) <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((3, 3, 64, 96), np.float32)})[0].shape == (3, 1, 64, 96)


def test_a_mismatch_fails_loudly_and_leaves_no_file(tmp_path, checkpoint, monkeypatch):
    class Skewed(ort.InferenceSession):
        def run(self, *args, **kwargs):
            return [out + 0.01 for out in super().run(*args, **kwargs)]

    monkeypatch.setattr(export.ort, "InferenceSession", Skewed)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0.01 m .* above the tolerance 0.001"):
        export_onnx(checkpoint[0], out)
    assert not out.exists()


def test_fp16_safetensors_halves_the_file_and_stays_close(tmp_path, checkpoint):
    path, info = checkpoint
    out = tmp_path / "half.safetensors"
    assert export_fp16(path, out) < 1e-2
    assert out.stat().st_size < 0.6 * path.stat().st_size
    with safe_open(str(out), framework="pt") as f:
        assert f.get_tensor("decoder.fuse.0.weight").dtype == torch.float16
    assert DepthEstimator(out, device="cpu").info == info


def test_exported_model_is_a_metric_teacher_with_its_own_size_and_normalisation(tmp_path, checkpoint):
    path, info = checkpoint
    out = tmp_path / "teacher.onnx"
    export_onnx(path, out)
    teacher, record = load_teacher(DistillConfig(teacher=str(out)), torch.device("cpu"))
    assert record["kind"] == "onnx" and teacher.output_kind == "metric"
    assert (teacher.mean, teacher.std, teacher.run_size(48, 48)) == (info.mean, info.std, (64, 96))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    got = teacher.predict(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    np.testing.assert_allclose(np.clip(got, 0.1, 10.0), DepthEstimator(path, device="cpu").predict(rgb), atol=1e-4)
