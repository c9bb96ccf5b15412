"""Depth metrics against hand-computed values; the accumulator is exact across batches and ranks."""

import math

import pytest
import torch

from depth_kd.metrics import METRIC_NAMES, DepthMetricAccumulator, depth_metrics


def _row(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def test_two_pixel_hand_values():
    m = depth_metrics(_row([1.5, 2.0]), _row([1.0, 2.0]))
    assert m["abs_rel"] == pytest.approx(0.25)  # (0.5 / 1 + 0) / 2
    assert m["sq_rel"] == pytest.approx(0.125)  # (0.25 / 1 + 0) / 2
    assert m["rmse"] == pytest.approx(math.sqrt(0.125))
    assert m["rmse_log"] == pytest.approx(math.sqrt(math.log(1.5) ** 2 / 2))
    assert m["log10"] == pytest.approx(math.log10(1.5) / 2)
    # ratios 1.5 and 1: 1.5 >= 1.25 but < 1.25^2 = 1.5625
    assert (m["d1"], m["d2"], m["d3"]) == (0.5, 1.0, 1.0)


def test_ratio_is_symmetric_for_underestimates():
    m = depth_metrics(_row([1.0]), _row([2.0]))
    assert m["d3"] == 0.0  # ratio 2 > 1.25^3 = 1.953
    assert m["abs_rel"] == pytest.approx(0.5)


def test_invalid_and_out_of_range_gt_are_skipped_and_pred_is_clamped():
    gt = _row([1.0, float("nan"), 0.0, 20.0, 4.0])
    pred = _row([1.0, 7.0, 7.0, 7.0, 50.0])  # 50 is clamped to max_depth 8
    m = depth_metrics(pred, gt, max_depth=8.0)
    assert m["abs_rel"] == pytest.approx((0 + 4.0 / 4.0) / 2)
    assert m["rmse"] == pytest.approx(math.sqrt(16 / 2))

    mask = torch.tensor([True, True, True, True, False]).reshape(1, 1, 1, -1)
    assert depth_metrics(pred, gt, mask, max_depth=8.0)["abs_rel"] == 0.0


def test_nan_prediction_counts_as_a_miss():
    m = depth_metrics(_row([float("nan")]), _row([2.0]), min_depth=0.5)
    assert m["abs_rel"] == pytest.approx(0.75)
    assert m["d3"] == 0.0


def test_accumulator_is_exact_over_uneven_batches_not_a_mean_of_means():
    torch.manual_seed(0)
    gt = torch.rand(1, 1, 10, 10) * 5 + 0.5
    pred = gt * (1 + 0.3 * torch.randn_like(gt)).abs()
    gt_a, gt_b = gt.clone(), gt.clone()
    gt_a[..., 2:, :] = float("nan")  # batch a: 20 valid pixels, batch b: 80
    gt_b[..., :2, :] = float("nan")

    acc = DepthMetricAccumulator()
    acc.update(pred, gt_a)
    acc.update(pred, gt_b)
    whole = depth_metrics(pred, gt)
    assert acc.count == 100
    for name in METRIC_NAMES:
        assert acc.compute()[name] == pytest.approx(whole[name], rel=1e-12)
    mean_of_means = (depth_metrics(pred, gt_a)["abs_rel"] + depth_metrics(pred, gt_b)["abs_rel"]) / 2
    assert mean_of_means != pytest.approx(whole["abs_rel"], rel=1e-6)


def test_merge_and_state_round_trip_like_an_all_reduce():
    torch.manual_seed(1)
    gts = [torch.rand(2, 1, 4, 4) + 0.5 for _ in range(2)]
    preds = [g + 0.1 * torch.randn_like(g) for g in gts]
    ranks = [DepthMetricAccumulator() for _ in range(2)]
    for acc, p, g in zip(ranks, preds, gts, strict=True):
        acc.update(p, g)
    expected = depth_metrics(torch.cat(preds), torch.cat(gts))

    reduced = ranks[0].state() + ranks[1].state()  # what dist.all_reduce(SUM) does
    assert reduced.dtype == torch.float64
    fresh = DepthMetricAccumulator()
    fresh.load_state(reduced)
    ranks[0].merge(ranks[1])
    for name in METRIC_NAMES:
        assert fresh.compute()[name] == pytest.approx(expected[name], rel=1e-12)
        assert ranks[0].compute()[name] == pytest.approx(expected[name], rel=1e-12)

    with pytest.raises(ValueError, match="different depth ranges"):
        ranks[0].merge(DepthMetricAccumulator(max_depth=80.0))


def test_empty_gives_nan():
    acc = DepthMetricAccumulator()
    acc.update(_row([1.0]), _row([float("nan")]))
    assert all(math.isnan(v) for v in acc.compute().values())
