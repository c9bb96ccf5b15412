"""Exact resume: a distillation run killed right after its checkpoint at step k and resumed ends with the same
weights and optimiser state as an uninterrupted run; bad or mismatched training states are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors
import torch
from killed_run import Killed, run
from safetensors.torch import load_file

from depth_kd.config import ConfigError, TrainConfig
from depth_kd.render.record import record_sequence
from depth_kd.train_state import STATE_NAME, TrainStateError
from depth_kd.trainer import Trainer
from depth_kd_ros.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from depth_kd_ros.models import build_model

TINY = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
STEPS, KILL_AT = 7, 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    paths = {name: record_sequence(root / name, "indoor", 6, seed, 96, 72, progress=False).path
             for name, seed in (("x", 1), ("u", 2))}
    torch.manual_seed(5)
    info = ModelInfo("mobilenetv2_mff", TINY, 64, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.1, 10.0)
    paths["teacher"] = root / "teacher.safetensors"
    save_checkpoint(paths["teacher"], build_model("mobilenetv2_mff", TINY), info)
    return paths


def config_for(out: Path, inputs: dict[str, Path], **changes) -> TrainConfig:
    """kd_xu with 2 X + 2 U frames per batch: both streams wrap into a second epoch within 7 steps."""
    config = TrainConfig()
    config.update({"model": {"arch_config": TINY, "height": 64, "width": 64},
                   "data": {"train": [str(inputs["x"])], "aux": [str(inputs["u"])], "num_workers": 0},
                   "optim": {"batch_size": 4, "steps": STEPS, "lr": 1e-3, "warmup_steps": 2, "grad_accum": 1},
                   "distill": {"mode": "kd_xu", "teacher": str(inputs["teacher"])},
                   "run": {"out": str(out), "device": "cpu", "checkpoint_every": KILL_AT, "eval_every": 0,
                           "deterministic": True}})
    config.update(changes)
    return config


def _state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
    return load_file(path), meta


AUGMENTED = {"augment": {"scale_max": 1.5, "flip": 0.5, "colour": 0.2}, "distill": {"online_teacher": True},
             "model": {"freeze_encoder_bn": True}}


@pytest.mark.parametrize("grad_accum, extra", [(1, {}), (2, {}), (1, AUGMENTED)], ids=["plain", "accum", "views"])
def test_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, inputs, grad_accum, extra):
    changes = {"optim": {"grad_accum": grad_accum}, **extra}
    whole = run(config_for(tmp_path / "whole", inputs, **changes))

    with pytest.raises(Killed):
        run(config_for(tmp_path / "killed", inputs, **changes), kill_at=KILL_AT)
    assert not (tmp_path / "killed" / "final.safetensors").exists()
    _, meta = _state(tmp_path / "killed" / STATE_NAME)
    assert meta["step"] == KILL_AT
    resumed = run(config_for(tmp_path / "killed", inputs, **changes))  # auto-resume: out/ has a state

    a, _ = load_checkpoint(whole)
    b, info = load_checkpoint(resumed)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert info.provenance["steps"] == STEPS
    (ta, ma), (tb, mb) = _state(whole.parent / STATE_NAME), _state(resumed.parent / STATE_NAME)
    assert ta.keys() == tb.keys() and any(k.startswith("optim.") for k in ta)
    for name in ta:  # model, Adam moments and step counts
        assert torch.equal(ta[name], tb[name]), name
    for key in ("step", "streams", "scheduler", "scaler", "param_groups"):
        assert ma[key] == mb[key], key
    batches = STEPS * grad_accum  # of 2 X frames each, 3 per epoch: the X stream wrapped into later epochs
    assert ma["streams"]["x"] == {"epoch": batches // 3, "position": 2 * (batches % 3)}
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # atomic writes leave no temp files


def test_corrupt_state_is_refused_naming_the_file(tmp_path, inputs):
    run(config_for(tmp_path / "run", inputs, optim={"steps": KILL_AT}))
    state = tmp_path / "run" / STATE_NAME
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(TrainStateError, match=f"{state}: corrupt or unreadable training state"):
        Trainer(config_for(tmp_path / "run", inputs, optim={"steps": STEPS}), torch.device("cpu"))
    state.write_bytes(b"not a safetensors file at all")
    with pytest.raises(TrainStateError, match=str(state)):
        Trainer(config_for(tmp_path / "run", inputs), torch.device("cpu"))


def test_resume_with_other_settings_is_refused_but_more_steps_are_fine(tmp_path, inputs):
    run(config_for(tmp_path / "run", inputs, optim={"steps": KILL_AT}))
    with pytest.raises(TrainStateError, match=r"optim.lr: 0.001 -> 0.002"):
        Trainer(config_for(tmp_path / "run", inputs, optim={"lr": 2e-3}), torch.device("cpu"))
    trainer = Trainer(config_for(tmp_path / "run", inputs, optim={"steps": KILL_AT + 1}), torch.device("cpu"))
    assert trainer.step == KILL_AT
    fresh = Trainer(config_for(tmp_path / "run", inputs, run={"resume": "never"}), torch.device("cpu"))
    assert fresh.step == 0
    with pytest.raises(ConfigError, match="no training state"):
        Trainer(config_for(tmp_path / "other", inputs, run={"resume": "always"}), torch.device("cpu"))
