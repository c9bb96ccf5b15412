"""Data-free distillation (Hu et al., arXiv 2208.12464) on real rendered bags with real tiny teachers: the
BatchNorm-statistics loss against a hand computation, the bag reader's instance ids, object-wise mixing (pasted
pixels, instance map, depth order), G learning the teacher's statistics, the student moving towards the teacher,
exact resume with G, the clear error for a teacher without BatchNorm, and two gloo ranks under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from killed_run import Killed, run
from safetensors.torch import load_file
from torch import nn

from depth_kd.bn_stats import BatchNormStatistics
from depth_kd.config import ConfigError, TrainConfig
from depth_kd.data import BagError, BagSource, DataError, FrameDataset, TrainingTransform, open_source
from depth_kd.mixing import MixSettings, mix_objects, mix_rng
from depth_kd.render.families import family_config
from depth_kd.render.record import make_intrinsics, record_sequence
from depth_kd.render.sequence import render_sequence
from depth_kd.train_state import STATE_NAME, TrainStateError, load_part
from depth_kd.trainer import Trainer
from depth_kd.transform_net import TransformNet
from depth_kd_ros.checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, load_checkpoint, save_checkpoint
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.models import build_model

TINY = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
CPU = torch.device("cpu")
WIDTH, HEIGHT, FRAMES = 64, 48, 6
IMAGE_TOPIC = "/camera/image_raw"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def real_like(rgb: torch.Tensor) -> torch.Tensor:
    """The 'real' domain of these tests: the simulated images with less contrast and a warm tint."""
    return 0.5 * rgb + torch.tensor([0.35, 0.2, 0.05]).view(1, 3, 1, 1)


def _teacher_with_statistics_of(images: torch.Tensor, path: Path) -> Path:
    """A tiny random MFF teacher whose BatchNorm running statistics are exactly those of ``images``."""
    torch.manual_seed(5)
    model = build_model("mobilenetv2_mff", TINY)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model((images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    info = ModelInfo("mobilenetv2_mff", TINY, 64, 64, IMAGENET_MEAN, IMAGENET_STD, 0.1, 10.0)
    save_checkpoint(path, model.eval(), info)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A rendered (simulated) bag and a teacher whose BatchNorm statistics are the 'real' domain's."""
    root = tmp_path_factory.mktemp("inputs")
    sim = record_sequence(root / "sim", "indoor", FRAMES, 1, WIDTH, HEIGHT, progress=False).path
    data = FrameDataset([open_source(str(sim))], TrainingTransform(64, 64))
    rgb = torch.stack([data[i]["rgb"] for i in range(len(data))])
    return {"sim": sim, "teacher": _teacher_with_statistics_of(real_like(rgb), root / "teacher.safetensors")}


def datafree_config(out: Path, inputs: dict[str, Path], **groups: dict) -> TrainConfig:
    config = TrainConfig()
    config.update({"model": {"arch_config": TINY, "height": 64, "width": 64},
                   "data": {"train": [str(inputs["sim"])], "num_workers": 0},
                   "optim": {"batch_size": 4, "steps": 30, "lr": 2e-3, "warmup_steps": 0},
                   "distill": {"mode": "datafree", "teacher": str(inputs["teacher"])},
                   "datafree": {"mix_prob": 1.0, "g_lr": 3e-3},
                   "run": {"out": str(out), "device": "cpu", "eval_every": 0, "log_every": 5}})
    for group, values in groups.items():
        config.update({group: values})
    return config


# ---- the BatchNorm-statistics loss --------------------------------------------------------------


def test_bn_statistics_loss_matches_a_hand_computation_and_is_zero_at_the_running_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)).eval()
    for layer in (net[0], net[2]):
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    x = torch.rand(2, 3, 5, 6, requires_grad=True)
    stats = BatchNormStatistics(net)
    with stats.recording():
        net(x)
    loss = stats.loss()

    # By hand, in float64 numpy: the first BN sees x, the second the eval-mode BN of x through the 1x1 conv.
    xs = x.detach().double().numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    bn0, bn2 = net[0], net[2]
    normed = ((xs - bn0.running_mean.double().numpy()[:, None]) / np.sqrt(bn0.running_var.double().numpy()[:, None]
              + bn0.eps) * bn0.weight.double().numpy()[:, None] + bn0.bias.double().numpy()[:, None])
    ys = net[1].weight.double().numpy()[:, :, 0, 0] @ normed
    expected = sum(np.linalg.norm(v.mean(1) - layer.running_mean.double().numpy())
                   + np.linalg.norm(v.var(1) - layer.running_var.double().numpy())
                   for v, layer in ((xs, bn0), (ys, bn2)))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)

    loss.backward()  # the network is frozen, the gradient reaches the input
    assert x.grad is not None and float(x.grad.abs().sum()) > 0

    # Running statistics set to exactly what the layers see: the loss is zero.
    bn0.running_mean.copy_(torch.from_numpy(xs.mean(1)))
    bn0.running_var.copy_(torch.from_numpy(xs.var(1)))
    normed = ((xs - xs.mean(1)[:, None]) / np.sqrt(xs.var(1)[:, None] + bn0.eps) * bn0.weight.double().numpy()[:, None]
              + bn0.bias.double().numpy()[:, None])
    ys = net[1].weight.double().numpy()[:, :, 0, 0] @ normed
    bn2.running_mean.copy_(torch.from_numpy(ys.mean(1)))
    bn2.running_var.copy_(torch.from_numpy(ys.var(1)))
    with stats.recording():
        net(x)
    assert float(stats.loss().detach()) == pytest.approx(0.0, abs=1e-5)

    with pytest.raises(ValueError, match="no BatchNorm2d layers"):
        BatchNormStatistics(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()))


# ---- instance ids from the bag reader -------------------------------------------------------------


def test_bags_deliver_the_rendered_instance_ids_and_the_transform_resizes_them_nearest(inputs, tmp_path):
    source = BagSource(inputs["sim"], IMAGE_TOPIC, instances_topic="/camera/instances")
    rendered = list(render_sequence(family_config("indoor"), FRAMES, 1, make_intrinsics(WIDTH, HEIGHT), "drive",
                                    10.0, "cpu"))
    for i in (0, FRAMES - 1):
        frame = source.load(i)
        assert frame["instances"].dtype == np.uint16
        assert np.array_equal(frame["instances"], rendered[i].numpy().instances)
    ids = source.load(0)["instances"]
    assert len(np.unique(ids)) > 2  # structure and several objects in view
    assert "instances" not in BagSource(inputs["sim"], IMAGE_TOPIC).load(0)  # only read when asked for

    sample = TrainingTransform(32, 32)(source.load(0))
    assert sample["instances"].shape == (1, 32, 32) and sample["instances"].dtype == torch.int64
    assert set(sample["instances"].unique().tolist()) <= set(np.unique(ids).tolist())  # no blended ids

    with pytest.raises(BagError, match="instance-id topic '/camera/nope' is missing; object-wise mixing"):
        BagSource(inputs["sim"], IMAGE_TOPIC, instances_topic="/camera/nope")
    folder = tmp_path / "folder"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="image folder has no instance ids"):
        open_source(str(folder), instances_topic="/camera/instances")


# ---- object-wise mixing ---------------------------------------------------------------------------


def _two_frames(inputs: dict[str, Path]) -> dict[str, torch.Tensor]:
    source = open_source(str(inputs["sim"]), depth_topic="/camera/depth/image", instances_topic="/camera/instances")
    data = FrameDataset([source], TrainingTransform(HEIGHT, WIDTH))
    frames = [data[0], data[FRAMES - 1]]
    return {key: torch.stack([f[key] for f in frames]) for key in ("rgb", "depth", "instances")}


def test_mixing_pastes_whole_objects_with_their_own_pixels_new_ids_and_depth_order(inputs):
    batch = _two_frames(inputs)
    rgb, ids = batch["rgb"], batch["instances"]
    one = MixSettings(probability=1.0, max_objects=2, scale_min=1.0, scale_max=1.0)
    no_depth = torch.full_like(batch["depth"], float("nan"))

    free = mix_objects(rgb, ids, no_depth, one, mix_rng(0, 3))
    hidden = shown = 0
    for i in (0, 1):  # with two frames, each gets objects of the other
        j, pasted = 1 - i, free.pasted[i, 0]
        assert pasted.any()
        offset = int(ids[i].max())
        new_ids = free.instances[i, 0][pasted]
        assert int(new_ids.min()) > offset  # unique: above every id the frame had
        objects = set((new_ids - offset).unique().tolist())
        assert 1 <= len(objects) <= 2 and objects <= set(ids[j].unique().tolist()) - {0}
        # Scale 1 and nothing occludes: the chosen objects, whole, shifted; every pixel its own source pixel.
        source_mask = torch.isin(ids[j, 0], torch.tensor(sorted(objects)))
        dy, dx = (torch.nonzero(pasted).min(0).values - torch.nonzero(source_mask).min(0).values).tolist()
        assert int(pasted.sum()) == int(source_mask.sum())
        ys, xs = torch.nonzero(pasted, as_tuple=True)
        assert torch.equal(source_mask[ys - dy, xs - dx], torch.ones_like(ys, dtype=torch.bool))
        assert torch.equal(free.rgb[i][:, ys, xs], rgb[j][:, ys - dy, xs - dx])
        assert torch.equal(free.instances[i, 0, ys, xs], ids[j, 0, ys - dy, xs - dx] + offset)
        # Everything else is untouched.
        assert torch.equal(free.rgb[i][:, ~pasted], rgb[i][:, ~pasted])
        assert torch.equal(free.instances[i, 0][~pasted], ids[i, 0][~pasted])

        # With both frames' depth, the same placement pastes only where the object is nearer.
        ordered = mix_objects(rgb, ids, batch["depth"], one, mix_rng(0, 3))
        near = torch.full_like(batch["depth"][i, 0], float("inf"))
        near[ys, xs] = batch["depth"][j, 0, ys - dy, xs - dx]
        expected = pasted & (near < batch["depth"][i, 0])
        assert torch.equal(ordered.pasted[i, 0], expected)
        hidden += int(pasted.sum()) - int(expected.sum())
        shown += int(expected.sum())
        assert torch.equal(ordered.depth[i, 0][expected], near[expected])
        assert torch.equal(ordered.depth[i, 0][~expected], batch["depth"][i, 0][~expected])

    assert hidden > 0 and shown > 0  # in these frames the rendered depth decides some pixels either way

    # A destination nearer than everything hides every pasted pixel; one beyond everything shows them all.
    wall = batch["depth"].clone()
    wall[0, :, : HEIGHT // 2] = 1e-3
    wall[0, :, HEIGHT // 2 :] = 1e3
    half = mix_objects(rgb, ids, wall, one, mix_rng(0, 3))
    bottom = torch.zeros_like(free.pasted[0])
    bottom[:, HEIGHT // 2 :] = True
    assert torch.equal(half.pasted[0], free.pasted[0] & bottom)

    # Deterministic in (seed, step, micro, rank); another step draws another paste; the inputs stay as they were.
    again = mix_objects(rgb, ids, no_depth, one, mix_rng(0, 3))
    assert torch.equal(again.rgb, free.rgb) and torch.equal(again.instances, free.instances)
    other = mix_objects(rgb, ids, no_depth, one, mix_rng(0, 4))
    assert not torch.equal(other.instances, free.instances)
    assert torch.equal(ids, _two_frames(inputs)["instances"])
    never = mix_objects(rgb, ids, no_depth, MixSettings(probability=0.0), mix_rng(0, 3))
    assert not never.pasted.any() and torch.equal(never.rgb, rgb)


def test_mixing_at_twice_the_size_pastes_source_pixels_twice_as_near(inputs):
    batch = _two_frames(inputs)
    far = batch["depth"].clone()
    far[0] = 1e3  # the destination: behind every pasted pixel
    double = mix_objects(batch["rgb"], batch["instances"], far, MixSettings(1.0, 1, 2.0, 2.0), mix_rng(1, 0))
    i, j = 0, 1
    pasted = double.pasted[i, 0]
    object_id = int((double.instances[i, 0][pasted] - int(batch["instances"][i].max())).unique().item())
    source = batch["instances"][j, 0] == object_id
    assert int(pasted.sum()) > 2 * int(source.sum())  # about 4x, less what falls off the image
    source_rgb = {tuple(p) for p in batch["rgb"][j][:, source].T.tolist()}
    assert {tuple(p) for p in double.rgb[i][:, pasted].T.tolist()} <= source_rgb
    assert set(double.depth[i, 0][pasted].tolist()) <= set((batch["depth"][j, 0][source] / 2).tolist())


# ---- the transformation network and the mode -----------------------------------------------------


def test_a_few_g_steps_lower_the_bn_statistics_loss_of_a_tiny_teacher(tmp_path, inputs):
    trainer = Trainer(datafree_config(tmp_path / "g", inputs, datafree={"mixing": False}), CPU)
    mode = trainer.mode
    rgb = trainer.x_stream.next()["rgb"]
    with torch.no_grad():
        assert torch.equal(mode.g(rgb), rgb)  # G starts as the identity
        with mode.stats.recording():
            trainer.teacher.forward(real_like(rgb))
        real = float(mode.stats.loss())
        before, _ = mode.g_loss(rgb)
    assert float(before) > 5 * real  # the teacher's statistics tell the simulated images from the 'real' ones
    for _ in range(30):
        mode.update_g(rgb)
    with torch.no_grad():
        after, terms = mode.g_loss(rgb)
    assert float(after) < 0.95 * float(before), (float(before), float(after))
    assert 0 < float(terms["g_content"]) <= trainer.config.datafree.g_bound
    assert all(p.grad is None for p in trainer.teacher.network.parameters())  # the teacher stays frozen


def _student_teacher_error(trainer: Trainer, rgb: torch.Tensor) -> float:
    trainer.net.eval()
    with torch.no_grad():
        return float((trainer.net(trainer._normalise(rgb)) - trainer.teacher.predict(rgb)).abs().mean())


def test_datafree_steps_move_the_student_towards_the_teacher_and_the_node_runs_the_result(tmp_path, inputs):
    trainer = Trainer(datafree_config(tmp_path / "run", inputs, optim={"lr": 5e-3}), CPU)
    rgb = torch.stack([trainer.x_data[i]["rgb"] for i in range(FRAMES)])
    before = _student_teacher_error(trainer, rgb)
    assert set(trainer.train_step()) == {"kd", "total", "g_bn", "g_content", "mix_share"}
    trainer.step += 1  # as train() counts it
    final = trainer.train()
    after = _student_teacher_error(trainer, rgb)
    # Measured on the plain simulated frames, not on the mixed and transformed ones it learnt from, by the
    # eval-mode student whose BatchNorm running statistics lag behind (test_distill): 0.77 here after 30 steps.
    assert after < 0.85 * before, (before, after)

    _, info = load_checkpoint(final)
    assert info.provenance["config"]["distill"]["mode"] == "datafree"
    assert info.provenance["config"]["datafree"]["transform"] is True
    frame = BagSource(inputs["sim"], IMAGE_TOPIC).load(0)
    depth = DepthEstimator(final, device="cpu").predict(frame["rgb"])
    assert depth.shape == (HEIGHT, WIDTH) and np.isfinite(depth).mean() > 0.99


def test_killed_and_resumed_datafree_run_ends_with_the_same_student_and_g(tmp_path, inputs):
    changes = {"optim": {"steps": 5}, "run": {"checkpoint_every": 2, "deterministic": True},
               "augment": {"flip": 0.5, "scale_max": 1.3}}
    whole = run(datafree_config(tmp_path / "whole", inputs, **changes))
    with pytest.raises(Killed):
        run(datafree_config(tmp_path / "killed", inputs, **changes), kill_at=2)
    resumed = run(datafree_config(tmp_path / "killed", inputs, **changes))

    a, b = load_file(whole.parent / STATE_NAME), load_file(resumed.parent / STATE_NAME)
    assert a.keys() == b.keys()
    g_keys = [k for k in a if k.startswith("g/")]
    assert any(k.startswith("g/model.") for k in g_keys) and any(k.startswith("g/optim.") for k in g_keys)
    for name in a:  # student, its Adam moments, G and G's Adam moments
        assert torch.equal(a[name], b[name]), name
    assert float(a["g/model.residual.6.weight"].abs().sum()) > 0  # G trained (its last layer started at zero)

    # Tools read G back without resuming the run (docs/experiments/bn_gap.py).
    config, weights = load_part(whole.parent / STATE_NAME, "g")
    g = TransformNet(config["datafree"]["g_width"], config["datafree"]["g_bound"])
    g.load_state_dict(weights)  # strict: every tensor of G, nothing else
    assert torch.equal(g.residual[6].weight, a["g/model.residual.6.weight"])
    with pytest.raises(TrainStateError, match="no part 'critic'.*parts: g"):
        load_part(whole.parent / STATE_NAME, "critic")

    with pytest.raises(TrainStateError, match="datafree.g_lr"):  # G's settings are part of what must not change
        run(datafree_config(tmp_path / "killed", inputs, **changes, datafree={"mix_prob": 1.0, "g_lr": 1e-2}))


def test_teacher_without_batchnorm_layers_is_refused_for_g_and_mixing_alone_still_runs(tmp_path, inputs):
    from depth_kd.export import export_onnx

    onnx = tmp_path / "teacher.onnx"
    export_onnx(inputs["teacher"], onnx, dynamic_batch=True)
    config = datafree_config(tmp_path / "onnx", inputs, distill={"teacher": str(onnx)})
    with pytest.raises(ConfigError, match=r"teacher onnx:teacher\.onnx \(OnnxTeacher\) does not run in torch.* "
                                          r"mixing still works .*datafree\.transform=false"):
        Trainer(config, CPU)
    config = datafree_config(tmp_path / "onnx", inputs, distill={"teacher": str(onnx)}, datafree={"transform": False})
    terms = Trainer(config, CPU).train_step()
    assert set(terms) == {"kd", "total", "mix_share"} and float(terms["mix_share"]) > 0


def test_config_checks_the_datafree_group():
    for values, message in (({"mix_prob": 1.5}, "datafree.mix_prob"), ({"g_steps": 0}, "datafree.g_steps"),
                            ({"mix_scale_min": 2.0, "mix_scale_max": 1.0}, "mix_scale_min"),
                            ({"g_bound": 0.0}, "datafree.g_bound")):
        config = TrainConfig()
        config.update({"datafree": values})
        with pytest.raises(ConfigError, match=message):
            config.validate()
    config = TrainConfig()
    config.update({"distill": {"mode": "datafree", "teacher": "t"}})
    with pytest.raises(ConfigError, match="mode datafree needs simulated bags"):
        config.validate()


# ---- two gloo ranks -----------------------------------------------------------------------------

# Runs the real CLI on each rank and keeps this rank's G after training.
DRIVER = """
import os, sys
from safetensors.torch import save_file
from depth_kd import trainer
from depth_kd.train_commands import main

save_final = trainer.Trainer.save_final
def keeping_g(self):
    g = {k: v.contiguous() for k, v in self.mode.g_net.state_dict().items()}
    save_file(g, os.path.join(sys.argv[1], f"g_rank{os.environ['RANK']}.safetensors"))
    return save_final(self)
trainer.Trainer.save_final = keeping_g
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(not TORCHRUN.exists(), reason=f"no torchrun next to {sys.executable}")
def test_datafree_under_torchrun_with_two_gloo_ranks_averages_g_and_prints_the_checkpoint(tmp_path, inputs):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    arch = "model.arch_config=" + json.dumps(TINY)
    args = ["distill", "--mode", "datafree", "--teacher", str(inputs["teacher"]), "--data", str(inputs["sim"]),
            "--steps", "3", "--out", str(out), "--size", "64x64", "--batch-size", "2", "--num-workers", "0",
            "--device", "cpu", "--set", arch, "--set", "datafree.mix_prob=1.0", "--set", "datafree.g_lr=0.003"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(driver), str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    final = out / "final.safetensors"
    assert done.stdout.splitlines()[-1] == str(final)
    _, info = load_checkpoint(final)
    assert info.provenance["world_size"] == 2 and info.provenance["config"]["distill"]["mode"] == "datafree"

    # The ranks saw different frames, yet their G is the same: its gradients were averaged.
    g0, g1 = (load_file(tmp_path / f"g_rank{r}.safetensors") for r in (0, 1))
    assert float(g0["residual.6.weight"].abs().sum()) > 0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-6), name
    assert any(k.startswith("g/model.") for k in load_file(out / STATE_NAME))
