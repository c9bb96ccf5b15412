"""Losses against values worked out by hand on tiny maps."""

import math

import pytest
import torch

from depth_kd.losses import build_loss, depth_grad_normal_loss, scale_invariant_loss, sobel


def _map(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, *torch.tensor(values).shape)


def test_identical_maps_give_three_log_half():
    target = torch.rand(2, 1, 6, 7, dtype=torch.float64) + 1.0
    result = depth_grad_normal_loss(target.clone(), target)
    assert result.terms["normal"].item() == pytest.approx(0.0, abs=1e-12)
    assert result.total.item() == pytest.approx(3 * math.log(0.5))


def test_constant_offset_only_moves_the_depth_term():
    target = torch.rand(1, 1, 5, 5, dtype=torch.float64) + 1.0
    result = depth_grad_normal_loss(target + 0.25, target)
    assert result.terms["depth"].item() == pytest.approx(math.log(0.75))
    assert result.terms["grad_x"].item() == pytest.approx(math.log(0.5))
    assert result.terms["grad_y"].item() == pytest.approx(math.log(0.5))


def test_ramp_against_flat_target():
    # pred = 2 + a * column: Sobel x of a ramp of slope a is (1 + 2 + 1) * 2a = 8a, Sobel y is 0.
    a = 0.1
    target = torch.full((1, 1, 4, 5), 2.0, dtype=torch.float64)
    pred = 2.0 + a * torch.arange(5, dtype=torch.float64).expand(1, 1, 4, 5)
    dx, dy = sobel(pred)
    assert dx.shape == (1, 1, 2, 3)
    assert torch.allclose(dx, torch.full_like(dx, 8 * a)) and torch.allclose(dy, torch.zeros_like(dy))

    terms = depth_grad_normal_loss(pred, target).terms
    expected_depth = sum(math.log(a * c + 0.5) for c in range(5)) / 5
    assert terms["depth"].item() == pytest.approx(expected_depth)
    assert terms["grad_x"].item() == pytest.approx(math.log(8 * a + 0.5))
    assert terms["grad_y"].item() == pytest.approx(math.log(0.5))
    # normals (-0.8, 0, 1) and (0, 0, 1)
    assert terms["normal"].item() == pytest.approx(1 - 1 / math.sqrt(0.64 + 1))


def test_invalid_target_pixels_are_excluded_everywhere():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 6, 6, dtype=torch.float64) + 1.0
    pred = (torch.rand(1, 1, 6, 6, dtype=torch.float64) + 1.0).requires_grad_()
    holed = target.clone()
    holed[0, 0, 0, 0] = float("nan")  # touches only the Sobel window of interior pixel (1, 1)
    holed[0, 0, 5, 5] = 0.0  # ... and of interior pixel (4, 4)

    result = depth_grad_normal_loss(pred, holed)
    result.total.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 0, 0] == 0 and pred.grad[0, 0, 5, 5] == 0

    # Hand-built reference: depth over the 34 valid pixels, gradients over the 14 clean interior pixels.
    keep = torch.ones(6, 6, dtype=torch.bool)
    keep[0, 0] = keep[5, 5] = False
    depth_ref = torch.log((pred - target).abs() + 0.5)[0, 0][keep].mean()
    assert result.terms["depth"].item() == pytest.approx(depth_ref.item())
    inner = torch.ones(4, 4, dtype=torch.bool)
    inner[0, 0] = inner[3, 3] = False
    (pdx, _), (tdx, _) = sobel(pred.detach()), sobel(target)
    grad_ref = torch.log((pdx - tdx).abs() + 0.5)[0, 0][inner].mean()
    assert result.terms["grad_x"].item() == pytest.approx(grad_ref.item())

    # Values of pred under invalid target pixels cannot change the loss.
    changed = pred.detach().clone()
    changed[0, 0, 0, 0] = 1e3
    assert depth_grad_normal_loss(changed, holed).total.item() == pytest.approx(result.total.item())


def test_explicit_mask_matches_nan_target():
    target = torch.rand(1, 1, 5, 5) + 1.0
    pred = torch.rand(1, 1, 5, 5) + 1.0
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, 0, 2, 3] = False
    holed = target.clone()
    holed[0, 0, 2, 3] = float("nan")
    assert depth_grad_normal_loss(pred, target, mask).total.item() == pytest.approx(
        depth_grad_normal_loss(pred, holed).total.item()
    )


def test_all_invalid_gives_zero_with_a_graph():
    pred = torch.rand(1, 1, 4, 4, requires_grad=True)
    for loss in (depth_grad_normal_loss, scale_invariant_loss):
        result = loss(pred, torch.full((1, 1, 4, 4), float("nan")))
        assert result.total.item() == 0.0
        result.total.backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))
        pred.grad = None


def test_silog_hand_values():
    target = _map([[1.0, 2.0]])
    pred = _map([[2.0, 2.0]])
    # g = [log 2, 0]: mean(g^2) = (log 2)^2 / 2, mean(g)^2 = (log 2)^2 / 4
    log2 = math.log(2)
    assert scale_invariant_loss(pred, target, lam=0.5).total.item() == pytest.approx(
        log2**2 / 2 - 0.5 * log2**2 / 4
    )
    # A global scale k costs (1 - lam) * (log k)^2 and nothing when lam = 1.
    target = torch.rand(1, 1, 4, 4, dtype=torch.float64) + 0.5
    assert scale_invariant_loss(3 * target, target, lam=0.85).total.item() == pytest.approx(
        0.15 * math.log(3) ** 2
    )
    assert scale_invariant_loss(3 * target, target, lam=1.0).total.item() == pytest.approx(0.0, abs=1e-12)


def test_silog_is_per_image_and_masked():
    target = torch.rand(2, 1, 3, 3, dtype=torch.float64) + 0.5
    pred = target * torch.tensor([2.0, 5.0], dtype=torch.float64).view(2, 1, 1, 1)
    pred[1, 0, 0, 0] = 100.0  # outlier under an invalid target pixel
    target[1, 0, 0, 0] = -1.0
    # Each image has its own scale: scale invariant per image, whatever the other image does.
    assert scale_invariant_loss(pred, target, lam=1.0).total.item() == pytest.approx(0.0, abs=1e-12)


def test_build_loss_lookup():
    assert build_loss("grad_normal") is depth_grad_normal_loss
    assert build_loss("silog") is scale_invariant_loss
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("l1")


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        depth_grad_normal_loss(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))
