"""Distillation on real rendered bags with a real (tiny, briefly trained) teacher: the student moves towards the
teacher, the modes draw and weigh the right data, the teacher runs once per frame thanks to the cache, and a
relative-depth teacher is made metric with a fitted scale/shift that the student's checkpoint records."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from depth_kd.config import ConfigError, TrainConfig
from depth_kd.render.record import record_sequence
from depth_kd.trainer import Trainer
from depth_kd_ros.checkpoint import load_checkpoint

TINY = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Bags X (with depth) and U, and a teacher trained on X with ground truth for 30 steps."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {name: record_sequence(root / name, "indoor", 8, seed, 96, 72, progress=False).path
             for name, seed in (("x", 1), ("u", 2))}
    config = TrainConfig()
    config.update({"model": {"arch_config": TINY, "height": 64, "width": 64},
                   "data": {"train": [str(paths["x"])], "num_workers": 0},
                   "optim": {"batch_size": 4, "steps": 30, "lr": 2e-3, "warmup_steps": 0},
                   "run": {"out": str(root / "teacher"), "device": "cpu", "eval_every": 0, "seed": 7}})
    paths["teacher"] = Trainer(config, CPU).train()
    return paths


def student_config(out: Path, inputs: dict[str, Path], mode: str, **changes) -> TrainConfig:
    config = TrainConfig()
    config.update({"model": {"arch_config": TINY, "height": 64, "width": 64},
                   "data": {"train": [str(inputs["x"])], "aux": [str(inputs["u"])], "num_workers": 0},
                   "optim": {"batch_size": 4, "steps": 30, "lr": 2e-3, "warmup_steps": 0},
                   "distill": {"mode": mode, "teacher": str(inputs["teacher"])},
                   "run": {"out": str(out), "device": "cpu", "eval_every": 0}})
    config.update(changes)
    return config


def _student_teacher_error(trainer: Trainer, rgb: torch.Tensor, target: torch.Tensor) -> float:
    trainer.net.eval()
    with torch.no_grad():
        return float((trainer.net(trainer._normalise(rgb)) - target).abs().mean())


def test_distillation_moves_the_student_towards_the_teacher(tmp_path, inputs):
    # 60 steps: after 30 the eval-mode student (BatchNorm running statistics still catching up) is only ~10% closer
    trainer = Trainer(student_config(tmp_path / "kd", inputs, "kd_xu", optim={"steps": 60}), CPU)
    assert (trainer.n_x, trainer.n_aux) == (2, 2)
    frames = [trainer.x_data[i] for i in range(4)] + [trainer.u_data[i] for i in range(4)]
    rgb = torch.stack([f["rgb"] for f in frames])
    target = trainer.teacher.predict(rgb)
    before = _student_teacher_error(trainer, rgb, target)
    final = trainer.train()
    after = _student_teacher_error(trainer, rgb, target)
    assert after < 0.7 * before, (before, after)

    _, info = load_checkpoint(final)
    record = info.provenance["teacher"]
    assert record["kind"] == "mff" and record["metric"] == "native" and record["path"] == str(inputs["teacher"])
    assert record["cache_id"] == trainer.teacher.cache_id
    assert info.provenance["config"]["distill"]["mode"] == "kd_xu"
    assert info.provenance["frames"] == {"train": 8, "aux": 8, "eval": 0}


@pytest.mark.parametrize("mode, n_x, n_aux, terms", [
    ("supervised", 4, 0, {"gt", "total"}),
    ("kd_x", 4, 0, {"gt", "kd", "total"}),
    ("kd_u", 0, 4, {"kd", "total"}),
    ("kd_xu", 3, 1, {"gt", "kd", "total"}),
])
def test_each_mode_draws_and_weighs_the_right_data(tmp_path, inputs, mode, n_x, n_aux, terms):
    config = student_config(tmp_path, inputs, mode, distill={"aux_share": 0.25, "gt_weight": 2.0, "kd_weight": 0.5})
    trainer = Trainer(config, CPU)
    assert (trainer.n_x, trainer.n_aux) == (n_x, n_aux)
    assert (trainer.teacher is None) == (mode == "supervised")
    got = trainer.train_step()
    assert set(got) == terms
    expected = 2.0 * got.get("gt", 0.0) + 0.5 * got.get("kd", 0.0)
    assert float(got["total"]) == pytest.approx(float(expected), rel=1e-5)


def test_the_teacher_runs_once_per_frame_and_a_warm_cache_skips_it(tmp_path, inputs):
    def counting(trainer: Trainer) -> list[int]:
        calls: list[int] = []
        predict = trainer.teacher._predict
        trainer.teacher._predict = lambda rgb: (calls.append(len(rgb)), predict(rgb))[1]
        return calls

    cache = tmp_path / "cache"
    config = student_config(tmp_path / "a", inputs, "kd_x", optim={"steps": 6}, distill={"cache_dir": str(cache)})
    trainer = Trainer(config, CPU)
    calls = counting(trainer)
    trainer.train()  # 6 steps x 4 frames = 3 epochs of the 8 X frames
    assert sum(calls) == 8 and len(list(cache.rglob("*.npz"))) == 8

    config = student_config(tmp_path / "b", inputs, "kd_x", optim={"steps": 2}, distill={"cache_dir": str(cache)})
    trainer = Trainer(config, CPU)
    calls = counting(trainer)
    trainer.train()
    assert calls == []


class _Relative(torch.nn.Module):
    """A metric model turned 'relative': 2 / depth + 0.3 (affine in inverse depth, like MiDaS)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 / self.model(x).clamp(min=0.1) + 0.3


def _relative_onnx(teacher_checkpoint: Path, path: Path) -> Path:
    """The teacher as a plain ONNX relative-depth model (no metadata)."""
    relative = _Relative(load_checkpoint(teacher_checkpoint)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(relative, (torch.rand(1, 3, 64, 64),), str(path), input_names=["image"],
                          output_names=["rel"], dynamic_axes={"image": {0: "n"}, "rel": {0: "n"}}, dynamo=False)
    return path


def test_relative_teacher_gets_a_fitted_metric_scale_recorded_in_the_student(tmp_path, inputs):
    onnx_path = _relative_onnx(inputs["teacher"], tmp_path / "relative.onnx")
    with pytest.raises(ConfigError, match="cannot tell whether this ONNX model outputs metric or relative"):
        Trainer(student_config(tmp_path / "r", inputs, "kd_x", distill={"teacher": str(onnx_path)}), CPU)

    config = student_config(tmp_path / "r", inputs, "kd_x", optim={"steps": 2},
                            distill={"teacher": str(onnx_path), "teacher_output": "relative_inverse"})
    trainer = Trainer(config, CPU)
    assert trainer.teacher.output_kind == "metric"
    sample = [trainer.x_data[i] for i in range(4)]
    metric = trainer.teacher.predict(torch.stack([s["rgb"] for s in sample]))
    gt = torch.stack([s["depth"] for s in sample])
    ratio = float(metric[gt > 0].median() / gt[gt > 0].median())
    assert 0.5 < ratio < 2.0  # metres, not relative units

    _, info = load_checkpoint(trainer.train())
    record = info.provenance["teacher"]
    assert record["kind"] == "onnx" and record["output_kind"] == "relative_inverse"
    assert record["metric"] == "fitted" and record["fit_frames"] == 8 and record["fit_topic"] == "/camera/depth/image"
    fit = record["scale_shift"]
    assert fit["method"] == "trimmed_least_squares_inverse_depth" and fit["n_samples"] > 8 * 64 * 32
    assert fit["scale"] > 0
