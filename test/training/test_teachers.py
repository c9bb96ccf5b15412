"""Teachers on real tiny models: an MFF checkpoint, transformers DPT / Depth Anything, an ONNX export; scale fits."""

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForDepthEstimation,
    DepthAnythingConfig,
    DPTConfig,
    DPTImageProcessor,
    GLPNConfig,
    ZoeDepthImageProcessor,
)

from depth_kd.teachers import MffTeacher, ScaledTeacher, Teacher, fit_global_scale_shift, fit_scale_shift
from depth_kd.teachers.hf import HfTeacher, infer_output_kind, preprocess_from_processor
from depth_kd.teachers.onnx import OnnxTeacher
from depth_kd_ros.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.models import build_model

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


# ---------------------------------------------------------------- MFF checkpoint teacher


@pytest.fixture(scope="module")
def mff_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = {"branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
    model = build_model("resnet34_mff", config).eval()
    info = ModelInfo(arch="resnet34_mff", arch_config=config, input_height=64, input_width=96,
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), min_depth=0.1, max_depth=10.0)
    path = tmp_path_factory.mktemp("mff") / "teacher.safetensors"
    save_checkpoint(path, model, info)
    return path


@pytest.fixture(scope="module")
def mff_teacher(mff_checkpoint):
    return MffTeacher(mff_checkpoint, device="cpu")


def test_mff_teacher_matches_the_node_runtime(mff_checkpoint, mff_teacher):
    teacher = mff_teacher
    assert teacher.output_kind == "metric"
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    expected = DepthEstimator(mff_checkpoint, device="cpu").predict(rgb)

    got = teacher.predict(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    assert got.shape == (1, 1, 50, 70) and got.dtype == torch.float32
    # The teacher resizes batched tensors in torch, the node single frames with OpenCV (bilinear either way
    # when enlarging, float rounding apart): measured 2e-4 relative at most.
    np.testing.assert_allclose(got[0, 0].numpy(), expected, rtol=1e-3, atol=1e-5)
    assert got.min() >= 0.1 and got.max() <= 10.0


def test_mff_cache_id_follows_the_weights_not_the_file_name(mff_checkpoint, mff_teacher, tmp_path):
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(mff_checkpoint, copy)
    first = mff_teacher
    assert MffTeacher(copy, "cpu").cache_id == first.cache_id
    assert MffTeacher(copy, "cpu", input_size=(96, 128)).cache_id != first.cache_id

    _, info = load_checkpoint(mff_checkpoint)
    save_checkpoint(copy, build_model(info.arch, info.arch_config), info)  # new random weights
    assert MffTeacher(copy, "cpu").cache_id != first.cache_id


def test_mff_focal_norm_comes_from_the_checkpoint(mff_checkpoint, mff_teacher, tmp_path):
    assert mff_teacher.focal_norm is None  # the checkpoint records no focal length
    model, info = load_checkpoint(mff_checkpoint)
    path = tmp_path / "with_focal.safetensors"
    save_checkpoint(path, model, dataclasses.replace(info, focal_px=77.8))
    assert MffTeacher(path, "cpu").focal_norm == pytest.approx(77.8 / 96)


def test_teacher_rejects_non_rgb_input(mff_teacher):
    teacher = mff_teacher
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        teacher.predict(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        teacher.predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ---------------------------------------------------------------- transformers teachers


def _tiny_depth_anything(path, metric=False):
    backbone = {"model_type": "dinov2", "image_size": 56, "patch_size": 14, "hidden_size": 32,
                "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
                "out_indices": [1, 2, 3, 4], "reshape_hidden_states": False}
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                                 depth_estimation_type="metric" if metric else "relative", max_depth=20)
    AutoModelForDepthEstimation.from_config(config).save_pretrained(path)
    processor = DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                  **IMAGENET)
    processor.save_pretrained(path)
    return processor


@pytest.fixture(scope="module")
def depth_anything_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("depth_anything")
    return path, _tiny_depth_anything(path)


def test_depth_anything_matches_transformers_pipeline(depth_anything_dir):
    path, processor = depth_anything_dir
    teacher = HfTeacher(path, device="cpu")
    assert teacher.output_kind == "relative_inverse"
    rgb = torch.rand(2, 3, 30, 50)

    # Preprocessing is the processor's, done in torch: 30x50 -> keep aspect (scale 56/50) -> 28x56.
    reference_input = processor(images=list(rgb), do_rescale=False, return_tensors="pt").pixel_values
    assert reference_input.shape == (2, 3, 28, 56)
    torch.testing.assert_close(teacher.pixel_values(rgb), reference_input, atol=1e-5, rtol=0)

    with torch.no_grad():
        raw = teacher.model(pixel_values=reference_input).predicted_depth.unsqueeze(1)
    expected = F.interpolate(raw, size=(30, 50), mode="bilinear", align_corners=False)
    got = teacher.predict(rgb)
    assert got.shape == (2, 1, 30, 50)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_zoedepth_processor_padding_and_resize_are_reproduced(depth_anything_dir):
    path, _ = depth_anything_dir
    processor = ZoeDepthImageProcessor(size={"height": 56, "width": 84}, keep_aspect_ratio=True,
                                       ensure_multiple_of=14)
    teacher = HfTeacher(path, "cpu", preprocess=preprocess_from_processor(processor))
    rgb = torch.rand(1, 3, 40, 60)  # reflect pad int(sqrt(20) * 3) = 13 rows, int(sqrt(30) * 3) = 16 cols
    reference = processor(images=list(rgb), do_rescale=False, return_tensors="pt").pixel_values
    torch.testing.assert_close(teacher.pixel_values(rgb), reference, atol=1e-5, rtol=0)
    assert teacher.predict(rgb).shape == (1, 1, 40, 60)


def test_metric_head_and_explicit_kind(tmp_path):
    _tiny_depth_anything(tmp_path, metric=True)
    assert HfTeacher(tmp_path, "cpu").output_kind == "metric"
    assert HfTeacher(tmp_path, "cpu", output_kind="relative_inverse").output_kind == "relative_inverse"
    with pytest.raises(ValueError, match="output_kind"):
        HfTeacher(tmp_path, "cpu", output_kind="disparity")


def test_infer_output_kind_from_configs():
    assert infer_output_kind(DPTConfig()) == "relative_inverse"
    assert infer_output_kind(GLPNConfig()) == "metric"
    assert infer_output_kind(DepthAnythingConfig(depth_estimation_type="metric")) == "metric"


def test_tiny_dpt_without_processor_config_runs_square(tmp_path):
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, use_auxiliary_head=False)
    AutoModelForDepthEstimation.from_config(config).save_pretrained(tmp_path)
    teacher = HfTeacher(tmp_path, "cpu")
    assert teacher.output_kind == "relative_inverse"
    assert teacher.preprocess.target_size(20, 40) == (32, 32)  # plain ViT DPT needs a square input
    assert teacher.predict(torch.rand(1, 3, 20, 40)).shape == (1, 1, 20, 40)


def test_hf_teacher_never_looks_on_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        HfTeacher("depth-anything/Depth-Anything-V2-Small-hf", "cpu")
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        HfTeacher(tmp_path, "cpu")  # a directory, but no config.json


def test_hf_cache_id_changes_with_weights(depth_anything_dir, tmp_path):
    path, _ = depth_anything_dir
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert HfTeacher(copy, "cpu").cache_id == HfTeacher(path, "cpu").cache_id
    torch.manual_seed(1)
    _tiny_depth_anything(copy)
    assert HfTeacher(copy, "cpu").cache_id != HfTeacher(path, "cpu").cache_id


# ---------------------------------------------------------------- ONNX teacher


class _ChannelMean(torch.nn.Module):
    """depth = 2 * mean over channels + 1, as a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(2 / 3)
            self.conv.bias.fill_(1.0)

    def forward(self, x):
        return self.conv(x)


def _export(path, dynamic: bool, squeeze: bool = False):
    model = _ChannelMean() if not squeeze else torch.nn.Sequential(_ChannelMean(), torch.nn.Flatten(1, 2))
    axes = {"image": {0: "n", 2: "h", 3: "w"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (torch.rand(1, 3, 32, 32),), str(path), input_names=["image"],
                          output_names=["depth"], dynamic_axes=axes, dynamo=False)
    return path


def test_onnx_dynamic_model_hand_values(tmp_path):
    teacher = OnnxTeacher(_export(tmp_path / "m.onnx", dynamic=True), "metric", mean=(0.5, 0.5, 0.5),
                          std=(0.25, 0.25, 0.25))
    assert teacher.input_name == "image" and teacher.fixed_size is None
    rgb = torch.rand(3, 3, 64, 96)  # already a multiple of 32: no resizing
    expected = 2 * ((rgb - 0.5) / 0.25).mean(dim=1, keepdim=True) + 1
    torch.testing.assert_close(teacher.predict(rgb), expected, atol=1e-5, rtol=1e-5)
    assert teacher.run_size(50, 70) == (64, 96)


def test_onnx_fixed_size_and_batch_of_one(tmp_path):
    teacher = OnnxTeacher(_export(tmp_path / "m.onnx", dynamic=False, squeeze=True), "relative_inverse",
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert teacher.fixed_size == (32, 32) and teacher.fixed_batch == 1
    # Constant images survive the resize to 32x32 and back: out = 2 * c + 1 for each image.
    levels = torch.tensor([0.1, 0.7])
    rgb = levels.view(2, 1, 1, 1).expand(2, 3, 45, 61).contiguous()
    got = teacher.predict(rgb)
    assert got.shape == (2, 1, 45, 61)
    torch.testing.assert_close(got, (2 * levels + 1).view(2, 1, 1, 1).expand_as(got), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="only takes"):
        OnnxTeacher(tmp_path / "m.onnx", "metric", input_size=(64, 64))


def test_onnx_output_kind_is_required_and_checked(tmp_path):
    path = _export(tmp_path / "m.onnx", dynamic=True)
    with pytest.raises(ValueError, match="output_kind"):
        OnnxTeacher(path, "depth")
    assert OnnxTeacher(path, "metric").cache_id != OnnxTeacher(path, "metric", mean=(0.5, 0.5, 0.5)).cache_id


# ---------------------------------------------------------------- scale / shift


def _relative_from(depth, a=3.0, b=0.4):
    return a / depth + b


def test_fit_recovers_affine_exactly_and_inverts_it():
    depth = torch.rand(1, 1, 24, 32, dtype=torch.float64) * 9 + 0.5
    fit = fit_scale_shift(_relative_from(depth), depth)
    assert fit.scale == pytest.approx(1 / 3.0, rel=1e-9)
    assert fit.shift == pytest.approx(-0.4 / 3.0, abs=1e-9)
    torch.testing.assert_close(fit.apply(_relative_from(depth)), depth)


def test_a_few_outliers_do_not_move_the_fit():
    gen = torch.Generator().manual_seed(0)
    depth = torch.rand(1, 1, 40, 40, generator=gen, dtype=torch.float64) * 9 + 0.5
    rel = _relative_from(depth)
    corrupt = depth.clone().flatten()
    corrupt[torch.randperm(corrupt.numel(), generator=gen)[:48]] = 0.3  # 3 % of samples badly wrong
    corrupt = corrupt.view_as(depth)

    plain = fit_scale_shift(rel, corrupt, trim=0.0)
    robust = fit_scale_shift(rel, corrupt)
    assert abs(plain.shift - -0.4 / 3.0) > 0.05  # least squares alone is pulled away
    assert robust.scale == pytest.approx(1 / 3.0, rel=1e-6)
    assert robust.shift == pytest.approx(-0.4 / 3.0, abs=1e-6)
    assert robust.n_samples == 1600 and robust.n_inliers >= 1280


def test_sparse_samples_and_global_fit_over_frames():
    gen = torch.Generator().manual_seed(1)
    frames = []
    for _ in range(3):
        depth = torch.rand(1, 1, 30, 40, generator=gen, dtype=torch.float64) * 5 + 1
        sparse = torch.full_like(depth, float("nan"))
        idx = torch.randperm(depth.numel(), generator=gen)[:60]
        sparse.view(-1)[idx] = depth.view(-1)[idx]
        frames.append((_relative_from(depth), sparse))
    single = fit_scale_shift(*frames[0])
    assert single.n_samples == 60 and single.scale == pytest.approx(1 / 3.0, rel=1e-9)
    overall = fit_global_scale_shift(frames, max_samples_per_frame=50)
    assert overall.n_samples == 150 and overall.scale == pytest.approx(1 / 3.0, rel=1e-9)


def test_fit_record_is_plain_json_and_degenerate_input_is_refused():
    depth = torch.rand(1, 1, 8, 8) + 1
    record = fit_scale_shift(_relative_from(depth), depth).to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["method"] == "trimmed_least_squares_inverse_depth"
    assert isinstance(record["scale"], float)
    with pytest.raises(ValueError, match="constant"):
        fit_scale_shift(torch.ones(1, 1, 8, 8), depth)
    with pytest.raises(ValueError, match="at least 3"):
        fit_scale_shift(torch.ones(1, 1, 8, 8), torch.full((1, 1, 8, 8), float("nan")))


class _InverseOfRed(Teacher):
    """A relative teacher whose output is 3 / red + 0.4, i.e. the red channel plays metric depth."""

    output_kind = "relative_inverse"
    name, cache_id, device = "inverse-of-red", "red-1", torch.device("cpu")

    def _predict(self, rgb):
        return _relative_from(rgb[:, :1])


def test_scaled_teacher_is_metric():
    depth = torch.rand(1, 1, 8, 8) * 0.7 + 0.2
    fit = fit_scale_shift(_relative_from(depth), depth)
    teacher = ScaledTeacher(_InverseOfRed(), fit)
    rgb = torch.cat([depth, torch.zeros(1, 2, 8, 8)], dim=1)
    assert teacher.output_kind == "metric" and teacher.cache_id.startswith("red-1-")
    torch.testing.assert_close(teacher.predict(rgb), depth, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="nothing to scale"):
        ScaledTeacher(teacher, fit)
