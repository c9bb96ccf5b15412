"""Checkpoint format: round trips, ModelInfo validation, and a clear CheckpointError for each broken file."""
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from depth_kd_ros.checkpoint import (
    FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheckpointError,
    ModelInfo,
    load_checkpoint,
    save_checkpoint,
)
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.models import build_model

ARCH_CONFIG = {"branch_channels": 8, "fuse_channels": 16, "refine_channels": 16}


def make_info(**overrides) -> ModelInfo:
    fields = dict(arch="mobilenetv2_mff", arch_config=dict(ARCH_CONFIG), input_height=64, input_width=64,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, min_depth=0.1, max_depth=10.0, focal_px=50.0,
                  provenance={"command": "pytest"})
    fields.update(overrides)
    return ModelInfo(**fields)


@pytest.fixture(scope="module")
def trained_model() -> torch.nn.Module:
    """A student whose BatchNorm statistics are no longer the defaults, so buffers must round-trip."""
    torch.manual_seed(0)
    model = build_model("mobilenetv2_mff", ARCH_CONFIG)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 64, 64) * 2 + 0.5)
    return model.eval()


@pytest.fixture()
def ckpt(tmp_path, trained_model) -> Path:
    path = tmp_path / "student.safetensors"
    save_checkpoint(path, trained_model, make_info())
    return path


def raw_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(path)
    message = str(excinfo.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- round trips --------------------------------------------------------------------------------------


def test_float32_round_trip_is_exact(ckpt, trained_model):
    model, info = load_checkpoint(ckpt)
    assert info == make_info()
    assert not model.training
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), trained_model(x))
    assert torch.equal(model.decoder.fuse[1].running_var, trained_model.decoder.fuse[1].running_var)


def test_fp16_storage_is_close_and_loads_as_float32(tmp_path, ckpt, trained_model):
    path = tmp_path / "half.safetensors"
    save_checkpoint(path, trained_model, make_info(), dtype=torch.float16)
    assert path.stat().st_size < 0.55 * ckpt.stat().st_size
    model, _ = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref, got = trained_model(x), model(x)
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)


def test_file_layout(ckpt, trained_model):
    with safe_open(ckpt, framework="pt") as f:
        metadata = f.metadata()
        assert metadata["format"] == FORMAT
        assert ModelInfo.from_json(metadata["info"]) == make_info()
        assert set(f.keys()) == set(trained_model.state_dict())
        counter = next(k for k in f.keys() if k.endswith("num_batches_tracked"))
        assert f.get_tensor(counter).dtype == torch.int64
        assert f.get_tensor(counter).item() == 2


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, trained_model):
    path = tmp_path / "student.safetensors"
    save_checkpoint(path, trained_model, make_info())
    save_checkpoint(path, trained_model, make_info(min_depth=0.5))  # overwrite in place
    assert os.listdir(tmp_path) == ["student.safetensors"]
    assert load_checkpoint(path)[1].min_depth == 0.5


def test_save_refuses_a_model_that_does_not_match_its_arch(tmp_path, trained_model):
    path = tmp_path / "wrong.safetensors"
    with pytest.raises(CheckpointError, match="shape mismatch for decoder"):
        save_checkpoint(path, trained_model, make_info(arch_config={}))  # default widths: 16/64/64
    assert not path.exists() and os.listdir(tmp_path) == []


# --- ModelInfo validation -----------------------------------------------------------------------------


def test_model_info_json_round_trip():
    info = make_info(focal_px=None)
    assert ModelInfo.from_json(info.to_json()) == info
    assert isinstance(ModelInfo.from_json(info.to_json()).mean, tuple)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"min_depth": 10.0, "max_depth": 1.0}, "min_depth < max_depth"),
        ({"input_height": 100}, "divisible by 32"),
        ({"input_width": 64.0}, "input_width"),
        ({"mean": [0.5, 0.5]}, "list of 3 numbers"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be positive"),
        ({"arch": 3}, "arch"),
        ({"arch_config": []}, "arch_config"),
        ({"focal_px": -5}, "focal_px"),
        ({"max_depth": "ten"}, "max_depth"),
        ({"colour": "blue"}, "unknown field(s): colour"),
        ({"input_height": 32000}, "input_height must be at most 4096"),
        ({"input_width": 4128}, "input_width must be at most 4096"),
        ({"input_width": 10**30}, "input_width must be at most 4096"),
        ({"min_depth": 0.0}, "need 0 < min_depth < max_depth"),
        ({"min_depth": -1.0}, "need 0 < min_depth < max_depth"),
        ({"focal_px": 0}, "focal_px must be positive or null"),
        ({"std": [0.2, 0.2, -0.2]}, "std must be positive"),
        ({"mean": [0.5, 0.5, "x"]}, "mean[2] must be a finite number"),
        ({"max_depth": True}, "max_depth must be a finite number"),
    ],
)
def test_model_info_rejects_bad_fields(change, fragment):
    data = json.loads(make_info().to_json())
    data.update(change)
    with pytest.raises(ValueError) as excinfo:
        ModelInfo.from_json(json.dumps(data))
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize("name", ["min_depth", "max_depth", "focal_px"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_model_info_rejects_non_finite_numbers(name, value):
    """JSON has no NaN/Infinity, but Python's json module reads them; a header may carry them."""
    data = json.loads(make_info().to_json())
    data[name] = value
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        ModelInfo.from_json(json.dumps(data))


def test_model_info_accepts_the_largest_size():
    assert make_info(input_height=4096, input_width=4096).input_height == 4096


def test_model_info_names_missing_fields():
    data = json.loads(make_info().to_json())
    del data["std"], data["focal_px"]  # focal_px is optional, std is not
    with pytest.raises(ValueError, match=r"missing field\(s\): std$"):
        ModelInfo.from_json(json.dumps(data))


# --- broken files -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.safetensors", "no such file")


def test_directory_is_named_as_one(tmp_path, ckpt):
    """A folder as model_path (or eval --model) must not read as 'no such file' when it plainly exists."""
    message = expect_error(tmp_path, "is a directory, not a checkpoint file")
    assert "no such file" not in message


def test_directory_through_the_node_estimator(tmp_path):
    """The node's path: DepthEstimator(model_path) raises the same CheckpointError, not an IsADirectoryError."""
    folder = tmp_path / "student.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=f"^{folder}: is a directory"):
        DepthEstimator(folder, device="cpu")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    expect_error(path, "not a safetensors file")


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"abc")
    expect_error(path, "not a safetensors file")


def test_truncated_data(tmp_path, ckpt):
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size * 2 // 3])
    expect_error(path, "truncated")


def test_truncated_inside_header(tmp_path, ckpt):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(ckpt.read_bytes()[:100])
    expect_error(path, "truncated")


def test_corrupt_header_json(tmp_path, ckpt):
    data = bytearray(ckpt.read_bytes())
    data[8:12] = b"\xff\xfe{["
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(bytes(data))
    expect_error(path, "not a safetensors file", "corrupt header")


def test_safetensors_without_metadata(tmp_path, trained_model):
    path = tmp_path / "plain.safetensors"
    save_file(raw_tensors(trained_model), path)
    expect_error(path, "no format tag", FORMAT)


def test_wrong_format_tag(tmp_path, trained_model):
    path = tmp_path / "future.safetensors"
    save_file(raw_tensors(trained_model), path,
              metadata={"format": "depth_kd_ros.checkpoint/2", "info": make_info().to_json()})
    expect_error(path, "unsupported format tag 'depth_kd_ros.checkpoint/2'")


def test_bad_info_json(tmp_path, trained_model):
    path = tmp_path / "badinfo.safetensors"
    save_file(raw_tensors(trained_model), path, metadata={"format": FORMAT, "info": "{not json"})
    expect_error(path, "bad model info", "not valid JSON")


def test_invalid_info_field(tmp_path, trained_model):
    info = json.loads(make_info().to_json())
    info["input_width"] = 100
    path = tmp_path / "badsize.safetensors"
    save_file(raw_tensors(trained_model), path, metadata={"format": FORMAT, "info": json.dumps(info)})
    expect_error(path, "bad model info", "input_width", "divisible by 32")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("input_height", 32000, "input_height must be at most 4096"),
    ("min_depth", 0, "need 0 < min_depth < max_depth"),
    ("focal_px", -1.0, "focal_px must be positive or null"),
    ("std", [0.2, 0.0, 0.2], "std must be positive"),
])
def test_absurd_header_numbers_are_refused_on_load(tmp_path, trained_model, field, value, fragment):
    """A header written by hand or by another tool is checked as strictly as one written by save_checkpoint."""
    info = json.loads(make_info().to_json())
    info[field] = value
    path = tmp_path / "absurd.safetensors"
    save_file(raw_tensors(trained_model), path, metadata={"format": FORMAT, "info": json.dumps(info)})
    expect_error(path, "bad model info", fragment)


def test_unknown_architecture(tmp_path, trained_model):
    info = json.loads(make_info().to_json())
    info["arch"] = "efficientnet_mff"
    path = tmp_path / "arch.safetensors"
    save_file(raw_tensors(trained_model), path, metadata={"format": FORMAT, "info": json.dumps(info)})
    expect_error(path, "unknown architecture 'efficientnet_mff'", "mobilenetv2_mff")


def test_missing_key(tmp_path, trained_model):
    tensors = raw_tensors(trained_model)
    del tensors["decoder.refine.1.bias"]
    path = tmp_path / "missing.safetensors"
    save_file(tensors, path, metadata={"format": FORMAT, "info": make_info().to_json()})
    expect_error(path, "missing tensors (1): decoder.refine.1.bias")


def test_unexpected_key(tmp_path, trained_model):
    tensors = raw_tensors(trained_model)
    tensors["decoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.safetensors"
    save_file(tensors, path, metadata={"format": FORMAT, "info": make_info().to_json()})
    expect_error(path, "unexpected tensors (1): decoder.extra.weight")


def test_wrong_shape(tmp_path, trained_model):
    tensors = raw_tensors(trained_model)
    tensors["decoder.refine.1.weight"] = torch.zeros(1, 16, 3, 3)
    path = tmp_path / "shape.safetensors"
    save_file(tensors, path, metadata={"format": FORMAT, "info": make_info().to_json()})
    expect_error(path, "shape mismatch for decoder.refine.1.weight", "(1, 16, 3, 3)", "(1, 16, 5, 5)")
