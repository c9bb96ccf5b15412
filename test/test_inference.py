"""DepthEstimator and resolve_device on a tiny real checkpoint (CPU)."""
import logging

import numpy as np
import pytest
import torch

from depth_kd_ros.checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, save_checkpoint
from depth_kd_ros.inference import DepthEstimator, resolve_device
from depth_kd_ros.models import build_model

ARCH_CONFIG = {"branch_channels": 8, "fuse_channels": 16, "refine_channels": 16}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def write_checkpoint(path, **overrides):
    torch.manual_seed(0)
    model = build_model("mobilenetv2_mff", ARCH_CONFIG).eval()
    fields = dict(arch="mobilenetv2_mff", arch_config=ARCH_CONFIG, input_height=64, input_width=64,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, min_depth=0.01, max_depth=100.0, focal_px=50.0)
    fields.update(overrides)
    save_checkpoint(path, model, ModelInfo(**fields))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def estimator(ckpt):
    return DepthEstimator(ckpt, device="cpu")


def image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width"), [(48, 80), (64, 64), (97, 131)])
def test_output_matches_input_size_and_range(estimator, height, width):
    depth = estimator.predict(image(height, width))
    assert depth.shape == (height, width) and depth.dtype == np.float32
    assert depth.flags.c_contiguous
    assert np.isfinite(depth).all()
    assert (depth >= estimator.info.min_depth).all() and (depth <= estimator.info.max_depth).all()


def test_matches_the_model_on_normalised_input(estimator):
    rgb = image(64, 64)  # processing size: no resizing either way
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = estimator.model(x)[0, 0].numpy()
    np.testing.assert_allclose(estimator.predict(rgb), expected, rtol=1e-5, atol=1e-6)


def test_fx_rescales_depth_by_focal_ratio(estimator):
    rgb = image(64, 128)
    plain = estimator.predict(rgb)
    assert plain.max() < 40  # far from max_depth=100, so the x2 below is not clamped
    # at processing width 64 the camera's focal is 200 * 64 / 128 = 100 px; the model assumes 50 px -> x2
    np.testing.assert_allclose(estimator.predict(rgb, fx=200.0), 2 * plain, rtol=1e-5)
    np.testing.assert_allclose(estimator.predict(rgb, fx=50.0), 0.5 * plain, rtol=1e-5)


def test_fx_is_ignored_without_focal_in_checkpoint(tmp_path, caplog):
    est = DepthEstimator(write_checkpoint(tmp_path / "nofocal.safetensors", focal_px=None), device="cpu")
    rgb = image(64, 64)
    with caplog.at_level(logging.WARNING, logger="depth_kd_ros.inference"):
        np.testing.assert_array_equal(est.predict(rgb, fx=500.0), est.predict(rgb))
        est.predict(rgb, fx=500.0)
    assert sum("focal_px" in r.message for r in caplog.records) == 1


class FixedOutput(torch.nn.Module):
    """Stand-in network returning a given depth map, to test the post-processing exactly."""

    def __init__(self, depth: torch.Tensor) -> None:
        super().__init__()
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depth.expand(x.shape[0], 1, -1, -1)


def test_output_is_clamped_to_checkpoint_range(ckpt):
    est = DepthEstimator(ckpt, device="cpu")  # min_depth 0.01, max_depth 100
    est.model = FixedOutput(torch.linspace(0.0, 200.0, 64 * 64).view(1, 1, 64, 64))
    depth = est.predict(image(64, 64))
    assert depth.min() == np.float32(0.01) and depth.max() == np.float32(100.0)
    np.testing.assert_allclose(depth[16], np.linspace(0, 200, 64 * 64)[16 * 64: 17 * 64], rtol=1e-5)


def test_non_finite_network_output_becomes_nan(ckpt):
    est = DepthEstimator(ckpt, device="cpu")
    out = torch.ones(1, 1, 64, 64)
    out[..., 0, 0], out[..., 0, 1] = float("inf"), float("nan")
    est.model = FixedOutput(out)
    depth = est.predict(image(64, 64))
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 1])  # inf is not clamped to max_depth
    assert np.isfinite(depth[1:]).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64, 3), np.float32),
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_bad_input_is_rejected(estimator, bad):
    with pytest.raises(ValueError, match="uint8|non-empty"):
        estimator.predict(bad)


@pytest.mark.parametrize("fx", [0.0, -1.0, float("nan")])
def test_bad_fx_is_rejected(estimator, fx):
    with pytest.raises(ValueError, match="fx"):
        estimator.predict(image(64, 64), fx=fx)


@no_cuda
def test_auto_device_falls_back_to_cpu_with_one_warning(ckpt, caplog):
    with caplog.at_level(logging.WARNING, logger="depth_kd_ros.inference"):
        est = DepthEstimator(ckpt)  # device="auto"
    assert est.device == torch.device("cpu")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@no_cuda
def test_fp16_is_ignored_on_cpu(ckpt, estimator, caplog):
    with caplog.at_level(logging.WARNING, logger="depth_kd_ros.inference"):
        est = DepthEstimator(ckpt, device="cpu", fp16=True)
    assert any("fp16 ignored" in r.message for r in caplog.records)
    rgb = image(64, 64)
    np.testing.assert_array_equal(est.predict(rgb), estimator.predict(rgb))


def test_warmup_runs(estimator):
    estimator.warmup()


def test_resolve_device_accepts_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "", "CPU0", "cuda:0:1"])
def test_resolve_device_rejects_malformed_specs(spec):
    with pytest.raises(ValueError, match="bad device"):
        resolve_device(spec)


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_resolve_device_explicit_cuda_without_cuda_fails_clearly(spec):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device(spec)
