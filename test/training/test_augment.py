"""Random views (depth_kd.augment): pixels, targets and intrinsics move together, and the trainer's targets
follow the view (cached or labelled on the fly) and are given for one canonical camera."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from depth_kd.augment import Views, jitter_colour, paste, sample_mix, sample_views, views_intrinsics, warp
from depth_kd.config import ConfigError, TrainConfig
from depth_kd.render.record import record_sequence
from depth_kd.trainer import Trainer
from depth_kd_ros.checkpoint import ModelInfo, save_checkpoint
from depth_kd_ros.models import build_model

TINY = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
H, W = 48, 64
FX, FY, CX, CY = 50.0, 52.0, 30.0, 25.0


def _rays() -> torch.Tensor:
    """2 x H x W: X/Z and Y/Z of the ray through each pixel centre of a camera (FX, FY, CX, CY)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    return torch.stack([(u - CX) / FX, (v - CY) / FY])


def test_warped_pixels_see_the_rays_the_new_intrinsics_say():
    torch.manual_seed(0)
    views = sample_views(6, scale_max=2.0, flip=0.5)
    views.flip[:2] = torch.tensor([True, False])  # both kinds present
    warped = warp(_rays().expand(6, 2, H, W).clone(), views)
    k = views_intrinsics(torch.tensor([[FX, FY, CX, CY]], dtype=torch.float64).expand(6, 4), views, H, W)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    inner = (slice(None), slice(2, -2), slice(2, -2))  # bilinear is exact on a linear ramp away from the border
    for i in range(6):
        mirror = -1.0 if views.flip[i] else 1.0  # a mirrored image is a camera looking at the mirrored world
        assert k[i, 0] == pytest.approx(FX * float(views.scale[i]))
        expected = torch.stack([mirror * (u - k[i, 2]) / k[i, 0], (v - k[i, 3]) / k[i, 1]])
        assert torch.allclose(warped[i][inner], expected[inner], atol=1e-6), i


def test_identity_views_change_nothing_and_depth_never_blends():
    images = torch.rand(3, 3, H, W)
    views = sample_views(3)
    assert not views.geometric and warp(images, views) is images
    assert torch.allclose(jitter_colour(images, views), images, atol=1e-6)
    assert torch.equal(views_intrinsics(torch.tensor([[FX, FY, CX, CY]] * 3), views, H, W),
                       torch.tensor([[FX, FY, CX, CY]] * 3))
    depth = torch.full((3, 1, H, W), 2.0)
    depth[:, :, ::2] = float("nan")
    depth[:, :, 1::4] = 5.0
    out = warp(depth, sample_views(3, scale_max=1.7, flip=0.5), "nearest")
    finite = out[torch.isfinite(out)]
    assert set(finite.unique().tolist()) <= {2.0, 5.0} and torch.isnan(out).any()


def test_views_come_from_the_global_generator_and_colour_stays_in_range():
    torch.manual_seed(3)
    a = sample_views(4, 1.5, 0.5, 0.3)
    torch.manual_seed(3)
    b = sample_views(4, 1.5, 0.5, 0.3)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in Views.__dataclass_fields__)
    assert ((a.scale >= 1) & (a.scale <= 1.5)).all() and ((a.brightness - 1).abs() <= 0.3).all()
    out = jitter_colour(torch.rand(4, 3, H, W), a)
    assert out.min() >= 0 and out.max() <= 1


# ---- in the trainer -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    paths = {name: record_sequence(root / name, "indoor", 6, seed, 96, 72, fx=80.0, progress=False).path
             for name, seed in (("x", 1), ("u", 2))}
    torch.manual_seed(5)  # a random teacher that says it is metric for fx = 0.5 x its input width
    info = ModelInfo("mobilenetv2_mff", TINY, 64, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.1, 10.0,
                     focal_px=32.0)
    paths["teacher"] = root / "teacher.safetensors"
    save_checkpoint(paths["teacher"], build_model("mobilenetv2_mff", TINY), info)
    return paths


def _config(out: Path, inputs: dict[str, Path], **groups: dict) -> TrainConfig:
    config = TrainConfig()
    config.update({"model": {"arch_config": TINY, "height": 64, "width": 64},
                   "data": {"train": [str(inputs["x"])], "aux": [str(inputs["u"])], "num_workers": 0},
                   "optim": {"batch_size": 4, "steps": 3, "warmup_steps": 0},
                   "distill": {"mode": "kd_xu", "teacher": str(inputs["teacher"])},
                   "augment": {"scale_max": 1.6, "flip": 0.5, "colour": 0.2},
                   "run": {"out": str(out), "device": "cpu", "eval_every": 0}})
    config.update(groups)
    return config


def test_online_teacher_labels_the_view_the_student_sees(tmp_path, inputs):
    trainer = Trainer(_config(tmp_path, inputs, distill={"online_teacher": True}), torch.device("cpu"))
    batch = trainer._next_batch()
    assert torch.equal(batch["kd"], trainer.teacher.predict(batch["rgb"]))


def _first_batch_and_its_frames(trainer: Trainer) -> tuple[dict, torch.Tensor]:
    """The trainer's first batch under seed 11, and the plain frames it was made of (X then U); the global
    generator is left where the trainer found it, so a test can draw the same views again."""
    torch.manual_seed(11)
    batch = trainer._next_batch()
    trainer.x_stream.load_state({"epoch": 0, "position": 0})
    trainer.u_stream.load_state({"epoch": 0, "position": 0})
    plain = torch.cat([trainer.x_stream.next()["rgb"], trainer.u_stream.next()["rgb"]])
    torch.manual_seed(11)
    return batch, plain


def test_cached_targets_are_warped_like_the_view(tmp_path, inputs):
    trainer = Trainer(_config(tmp_path, inputs, augment={"colour": 0.0}), torch.device("cpu"))
    batch, plain = _first_batch_and_its_frames(trainer)
    views = sample_views(4, 1.6, 0.5, 0.0)
    assert views.geometric and torch.equal(batch["rgb"], warp(plain, views))
    # A zoom by s makes things look s times nearer: the cached target is divided by s, as a teacher labelling the
    # view itself would say, and as the ground truth's canonical factor does.
    expected = warp(trainer.teacher.predict(plain), views) / views.scale.view(-1, 1, 1, 1)
    assert torch.allclose(batch["kd"], expected, atol=1e-3)  # cache is float16


def test_targets_are_given_for_the_teachers_camera(tmp_path, inputs):
    """fx of the canonical camera = the teacher's (0.5 x width); ground truth of a frame with fx f is scaled by
    canonical / f, so that GT and teacher agree on what depth a given image means."""
    trainer = Trainer(_config(tmp_path, inputs, augment={"scale_max": 1.0, "flip": 0.0, "colour": 0.0}),
                      torch.device("cpu"))
    assert trainer.focal_px == pytest.approx(32.0)  # recorded in the student's checkpoint
    factors = trainer._canonical_factors(torch.tensor([[64.0, 64, 32, 32], [32.0, 32, 32, 32],
                                                       [float("nan"), 0, 0, 0]]))
    assert factors.tolist() == pytest.approx([0.5, 1.0, 1.0])
    batch = trainer._next_batch()
    trainer.x_stream.load_state({"epoch": 0, "position": 0})
    raw = trainer.x_stream.next()
    fx = float(raw["intrinsics"][0, 0])  # 80 px at 96 wide -> 80 * 96/72 * 64/96 at the 64 x 64 crop
    assert torch.allclose(batch["gt"], raw["depth"] * 32.0 / fx, equal_nan=True)


def test_frozen_encoder_batchnorm_keeps_its_statistics(tmp_path, inputs):
    trainer = Trainer(_config(tmp_path, inputs, model={"freeze_encoder_bn": True}), torch.device("cpu"))
    encoder_bn = trainer.net.encoder.features[1].conv[0][1]
    decoder_bn = trainer.net.decoder.fuse[1]
    before = encoder_bn.running_mean.clone(), decoder_bn.running_mean.clone(), encoder_bn.weight.detach().clone()
    trainer.train_step()
    assert torch.equal(encoder_bn.running_mean, before[0])
    assert not torch.equal(decoder_bn.running_mean, before[1])
    assert not torch.equal(encoder_bn.weight, before[2])  # affine parameters still learn


@pytest.mark.parametrize("groups, message", [
    ({"augment": {"scale_max": 0.5}}, "augment.scale_max >= 1"),
    ({"augment": {"flip": 2.0}}, "augment.flip"),
    ({"augment": {"mix": 1.5}}, "augment.mix <= 1"),
    ({"augment": {"mix": 0.5}, "distill": {"mode": "kd_x"}}, "mode kd_x has none of"),
    ({"distill": {"mode": "supervised", "online_teacher": True}}, "online_teacher needs a teacher"),
])
def test_bad_view_settings_are_refused(tmp_path, inputs, groups, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, inputs, **groups).validate()


def test_a_short_last_batch_of_x_keeps_rows_and_views_aligned(tmp_path, inputs):
    """6 X frames drawn 4 at a time: every second batch of X holds 2 frames; ground truth, teacher rows and views
    must follow what arrived, not the nominal split."""
    trainer = Trainer(_config(tmp_path, inputs, optim={"batch_size": 5}, distill={"aux_share": 0.2}),
                      torch.device("cpu"))
    assert (trainer.n_x, trainer.n_aux) == (4, 1)
    sizes = []
    for _ in range(2):
        batch = trainer._next_batch()
        sizes.append((batch["n_x"], len(batch["gt"]), len(batch["kd"]), len(batch["rgb"])))
    assert sizes == [(4, 4, 5, 5), (2, 2, 3, 3)]
    trainer.train_step()  # the third batch of X starts a new epoch


def test_a_mixed_frame_holds_a_box_of_another_frame_and_nothing_else_moves():
    torch.manual_seed(3)
    images = torch.rand(6, 3, H, W)
    mix = sample_mix(6, H, W, prob=0.7)
    assert mix.mixed.any() and not mix.mixed.all() and (mix.source != torch.arange(6)).all()
    out = paste(images, mix)
    for i in range(6):
        box = (slice(None), slice(int(mix.top[i]), int(mix.bottom[i])), slice(int(mix.left[i]), int(mix.right[i])))
        if not mix.mixed[i]:
            assert torch.equal(out[i], images[i])
            continue
        assert 0.09 <= (mix.bottom[i] - mix.top[i]) * (mix.right[i] - mix.left[i]) / (H * W) <= 0.51
        assert torch.equal(out[i][box], images[mix.source[i]][box])
        outside = torch.ones(H, W, dtype=torch.bool)
        outside[box[1:]] = False
        assert torch.equal(out[i][:, outside], images[i][:, outside])


@pytest.mark.parametrize("online", [True, False])
def test_mixed_unlabeled_rows_get_targets_of_what_they_show(tmp_path, inputs, online):
    """kd_xu, 2 X + 2 U rows, every U row mixed: X rows untouched; online, the teacher labels the collage;
    cached, the targets are pasted with the same boxes."""
    config = _config(tmp_path, inputs, augment={"mix": 1.0, "colour": 0.0}, distill={"online_teacher": online})
    trainer = Trainer(config, torch.device("cpu"))
    batch, plain = _first_batch_and_its_frames(trainer)
    views = sample_views(4, 1.6, 0.5, 0.0)
    mix = sample_mix(2, 64, 64, 1.0)
    viewed = warp(plain, views)
    assert mix.mixed.all() and torch.equal(batch["rgb"][:2], viewed[:2])
    assert torch.equal(batch["rgb"][2:], paste(viewed[2:], mix)) and not torch.equal(batch["rgb"][2:], viewed[2:])
    if online:
        assert torch.equal(batch["kd"], trainer.teacher.predict(batch["rgb"]))
    else:
        targets = warp(trainer.teacher.predict(plain), views) / views.scale.view(-1, 1, 1, 1)
        expected = torch.cat([targets[:2], paste(targets[2:], mix)])
        assert torch.allclose(batch["kd"], expected, atol=1e-3)  # cache is float16
