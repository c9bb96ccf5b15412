"""Student/teacher architectures: sizes, shapes, non-negativity, registry behaviour."""
import pytest
import torch

from depth_kd_ros.models import ARCHITECTURES, UnknownArchitectureError, build_model
from depth_kd_ros.models.mff import OneChannelConv2d


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mobilenetv2_mff").eval()


def test_student_size_matches_paper(student):
    assert 1.5e6 < n_params(student) < 2.0e6


def test_teacher_is_much_larger_and_runs():
    teacher = build_model("resnet34_mff").eval()
    assert n_params(teacher) > 15e6
    with torch.no_grad():
        out = teacher(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 1, 64, 96)
    assert (out >= 0).all()


@pytest.mark.parametrize(("height", "width"), [(64, 96), (96, 128), (128, 64)])
def test_student_output_follows_input_size(student, height, width):
    with torch.no_grad():
        out = student(torch.randn(2, 3, height, width) * 3)
    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()
    assert (out >= 0).all()


def test_student_taps_have_paper_channels_and_strides(student):
    with torch.no_grad():
        taps = student.encoder(torch.randn(1, 3, 64, 96))
    assert [t.shape[1] for t in taps] == [24, 32, 96, 160]
    assert [t.shape[-2:] for t in taps] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_teacher_taps_have_resnet_channels():
    encoder = build_model("resnet34_mff").encoder
    with torch.no_grad():
        taps = encoder(torch.randn(1, 3, 64, 64))
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512]
    assert [t.shape[-1] for t in taps] == [16, 8, 4, 2]


def test_decoder_widths_are_configurable(student):
    small = build_model("mobilenetv2_mff", {"branch_channels": 8, "fuse_channels": 32, "refine_channels": 32,
                                            "kernel_size": 3})
    assert small.decoder.fuse[0].out_channels == 32
    assert small.decoder.fuse[0].kernel_size == (3, 3)
    assert n_params(small) < n_params(student) - 200_000
    with torch.no_grad():
        assert small.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_width_mult_derives_tap_channels():
    model = build_model("mobilenetv2_mff", {"width_mult": 0.5}).eval()
    assert model.encoder.out_channels == (16, 16, 48, 80)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_gradients_reach_the_encoder():
    model = build_model("mobilenetv2_mff", {"branch_channels": 4, "fuse_channels": 8, "refine_channels": 8})
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    first_conv = model.encoder.features[0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_registry_lists_both_architectures():
    assert {"mobilenetv2_mff", "resnet34_mff"} <= set(ARCHITECTURES)


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(KeyError) as excinfo:
        build_model("mobilenetv3_mff")
    assert isinstance(excinfo.value, UnknownArchitectureError)
    message = str(excinfo.value)
    assert "'mobilenetv3_mff'" in message and "mobilenetv2_mff" in message and "resnet34_mff" in message


def test_bad_config_key_names_the_architecture():
    with pytest.raises(TypeError, match="mobilenetv2_mff.*fuse_chanels"):
        build_model("mobilenetv2_mff", {"fuse_chanels": 32})


def test_even_kernel_size_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        build_model("mobilenetv2_mff", {"kernel_size": 4})


def test_one_channel_conv_is_a_conv2d_computed_depthwise():
    torch.manual_seed(0)
    head = OneChannelConv2d(16, 5)
    plain = torch.nn.Conv2d(16, 1, 5, padding=2)
    plain.load_state_dict(head.state_dict())  # same keys and shapes: old checkpoints load unchanged
    x = torch.randn(2, 16, 12, 20, requires_grad=True)
    ours, theirs = head(x), plain(x)
    assert ours.shape == (2, 1, 12, 20)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad_x, grad_w = torch.autograd.grad(ours.square().sum(), (x, head.weight))
    expected_x, expected_w = torch.autograd.grad(theirs.square().sum(), (x, plain.weight))
    torch.testing.assert_close(grad_x, expected_x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_w, expected_w, rtol=1e-4, atol=1e-4)


def gmacs(model: torch.nn.Module, height: int, width: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() / 2e9


@pytest.mark.parametrize("arch", ["mobilenetv2_fast", "mobilenetv2_mff_lite"])
def test_real_time_students_cost_a_seventh_of_the_paper_student(student, arch):
    fast = build_model(arch)
    assert gmacs(fast, 224, 288) <= 0.6  # issue 8's budget; the MFF student needs ~3.7
    assert gmacs(student, 224, 288) > 6 * gmacs(fast, 224, 288)


def test_lite_student_fuses_at_a_quarter_with_separable_convolutions():
    lite = build_model("mobilenetv2_mff_lite")
    depthwise = [m for m in lite.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 4 + 1 + 1  # the four branches, the fusion and the first refinement conv
    assert lite.decoder.fuse_stride == 4
    depth = lite.eval()(torch.randn(1, 3, 64, 96))
    assert depth.shape == (1, 1, 64, 96) and (depth >= 0).all()
    with pytest.raises(ValueError, match="fuse_stride"):
        build_model("mobilenetv2_mff", {"fuse_stride": 3})


@pytest.mark.parametrize(("height", "width"), [(64, 96), (192, 256)])
def test_fast_student_output_follows_input_size_and_is_non_negative(height, width):
    torch.manual_seed(0)
    depth = build_model("mobilenetv2_fast").eval()(torch.randn(2, 3, height, width))
    assert depth.shape == (2, 1, height, width) and (depth >= 0).all()


def test_fast_student_uses_a_tap_at_every_scale():
    model = build_model("mobilenetv2_fast", {"channels": [32, 16, 16, 8, 8]})
    taps = model.encoder(torch.zeros(1, 3, 64, 96))
    assert [t.shape[-1] for t in taps] == [48, 24, 12, 6, 3]  # 1/2 .. 1/32
    assert [t.shape[1] for t in taps] == [16, 24, 32, 96, 160]
    model(torch.randn(1, 3, 64, 96)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())  # every stage is on the path to the output


def test_fast_student_needs_one_width_per_tap():
    with pytest.raises(ValueError, match="one decoder width per encoder tap"):
        build_model("mobilenetv2_fast", {"channels": [32, 16]})
