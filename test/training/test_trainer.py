"""Supervised training on real rendered bags: the config (YAML, overrides, defaults), the loss going down,
the node-format checkpoint it writes (ModelInfo, provenance) and what lands in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from depth_kd.config import ConfigError, TrainConfig, all_keys, help_text, load_config, parse_size
from depth_kd.losses import depth_grad_normal_loss
from depth_kd.render.record import record_sequence
from depth_kd.trainer import Trainer
from depth_kd_ros.checkpoint import IMAGENET_MEAN, IMAGENET_STD, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"
TINY = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
WIDTH, HEIGHT, FX = 96, 72, 80.0


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    return {name: record_sequence(root / name, "indoor", frames, seed, WIDTH, HEIGHT, fx=FX, progress=False).path
            for name, frames, seed in (("x", 8, 1), ("eval", 4, 2))}


def tiny_config(out: Path, train: Path, **groups: dict) -> TrainConfig:
    """A tiny student at 64x64 on the CPU, evaluating and logging often."""
    config = TrainConfig()
    config.update({"model": {"arch_config": TINY, "height": 64, "width": 64},
                   "data": {"train": [str(train)], "num_workers": 0},
                   "optim": {"batch_size": 4, "steps": 40, "lr": 2e-3, "warmup_steps": 2},
                   "run": {"out": str(out), "device": "cpu", "log_every": 10, "eval_every": 20,
                           "checkpoint_every": 0}})
    config.update(groups)
    return config


# ---- configuration --------------------------------------------------------------------------------


FASTDEPTH_DIFFERS = {"distill.mode", "distill.teacher", "distill.teacher_output", "distill.teacher_focal_px",
                     "distill.teacher_focal_width"}


@pytest.mark.parametrize("name, differs", [("teacher.yaml", {"model.arch"}), ("distill.yaml", {"distill.mode"}),
                                           ("distill_fastdepth.yaml", FASTDEPTH_DIFFERS),
                                           ("datafree.yaml", {"distill.mode"})])
def test_yaml_configs_list_every_key_and_agree_with_code_defaults(name, differs):
    data = yaml.safe_load((CONFIGS / name).read_text())
    flat = {f"{g}.{k}": v for g, values in data.items() for k, v in values.items()}
    assert list(flat) == all_keys()
    defaults = TrainConfig().to_dict()
    disagree = {k for k, v in flat.items() if defaults[k.split(".")[0]][k.split(".")[1]] != v}
    assert disagree == differs
    lines = (CONFIGS / name).read_text().splitlines()
    for key in differs:  # what differs on purpose says so next to the value
        line = next(line for line in lines if line.strip().startswith(f"{key.split('.')[1]}:"))
        assert "DIFFERS" in line, line
    assert sum("DIFFERS" in line for line in lines) == len(differs)
    load_config(CONFIGS / name)  # loads cleanly


def test_precedence_is_defaults_preset_yaml_set_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.5, steps: 7}\nmodel: {arch: resnet34_mff}\n")
    config = load_config(path, ["optim.lr=3e-4", "data.aux=u.bag"], {"optim.steps": 9, "run.seed": None},
                         preset={"model.arch": "mobilenetv2_mff", "optim.batch_size": 3})
    assert config.model.arch == "resnet34_mff"  # YAML beats the preset
    assert config.optim.batch_size == 3  # preset beats the code default
    assert config.optim.lr == pytest.approx(3e-4)  # --set beats YAML, and YAML 1.1's "3e-4" string is a float
    assert config.optim.steps == 9 and config.run.seed == 0  # flags beat all; None = flag not given
    assert config.data.aux == ["u.bag"]
    assert all(help_text(key) for key in all_keys())


@pytest.mark.parametrize("text, message", [
    ("optim.lr=fast", "optim.lr must be float"),
    ("optim.steps=2.5", "optim.steps must be int"),
    ("optim.lrr=1", "unknown key 'optim.lrr'"),
    ("nonsense", "--set expects group.key=value"),
])
def test_bad_overrides_name_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [text])


def test_validation_names_the_problem(tmp_path, bags):
    config = tiny_config(tmp_path, bags["x"], model={"height": 50})
    with pytest.raises(ConfigError, match="model.height must be a positive multiple of 32"):
        config.validate()
    config = tiny_config(tmp_path, bags["x"], distill={"mode": "kd_x"})
    with pytest.raises(ConfigError, match="needs a teacher"):
        config.validate()
    config = tiny_config(tmp_path, tmp_path / "missing")
    with pytest.raises(ConfigError, match="no such bag or image folder: .*missing"):
        config.validate()
    config = tiny_config(tmp_path, bags["x"], model={"height": 4128})
    with pytest.raises(ConfigError, match="model.height must be a positive multiple of 32 up to 4096, got 4128"):
        config.validate()
    config = tiny_config(tmp_path, bags["x"], model={"min_depth": 0.0})  # ModelInfo would refuse it at the end
    with pytest.raises(ConfigError, match=r"need 0 < model.min_depth < model.max_depth, got 0.0, 10.0"):
        config.validate()
    assert parse_size("64x96") == (64, 96)
    with pytest.raises(ConfigError, match="multiples of 32"):
        parse_size("64x90")


@pytest.mark.parametrize("text, line, problem", [
    ("optim:\n  lr: 0.1\n bad: 3\n", 3, "expected <block end>, but found '<block mapping start>'"),
    ("optim: {lr: 0.1\n", 2, "expected ',' or '}', but got '<stream end>'"),
    ("optim:\n\tlr: 1\n", 2, "found character '\\t' that cannot start any token"),
])
def test_malformed_yaml_is_one_line_with_the_line_number(tmp_path, text, line, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path}, line {line}, column ") and message.endswith(f": not valid YAML: {problem}")


def test_unreadable_config_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path}: cannot read config: Is a directory$"):
        load_config(tmp_path)
    binary = tmp_path / "weights.safetensors"
    binary.write_bytes(b"\x80\x81 not text")
    with pytest.raises(ConfigError, match=f"^{binary}: not a text file \\(byte 0 is not UTF-8\\)$"):
        load_config(binary)


def test_out_must_be_a_writable_folder_or_creatable(tmp_path, bags):
    config = tiny_config(tmp_path / "new" / "run", bags["x"])
    config.validate()  # created later by the trainer; validation creates nothing
    assert not (tmp_path / "new").exists()
    taken = tmp_path / "taken"
    taken.write_text("")
    for out, what in ((taken, "exists and is not a folder"),
                      (taken / "run", f"cannot be created: {taken} is not a folder")):
        with pytest.raises(ConfigError, match=f"^run.out: {out} {what}$"):
            tiny_config(out, bags["x"]).validate()


# ---- training ---------------------------------------------------------------------------------------


def _gt_loss(trainer: Trainer, frames: list[dict]) -> float:
    """The ground-truth loss of the current weights on fixed frames (eval mode, no update)."""
    trainer.net.eval()
    with torch.no_grad():
        rgb = torch.stack([f["rgb"] for f in frames])
        depth = torch.stack([f["depth"] for f in frames])
        return float(depth_grad_normal_loss(trainer.net(trainer._normalise(rgb)), depth).total)


def test_supervised_training_lowers_the_loss_and_writes_a_node_checkpoint(tmp_path, bags):
    config = tiny_config(tmp_path / "run", bags["x"], data={"eval": [str(bags["eval"])]})
    trainer = Trainer(config, torch.device("cpu"), command=["depth-kd", "train-teacher", "..."])
    frames = [trainer.x_data[i] for i in range(len(trainer.x_data))]
    before = _gt_loss(trainer, frames)
    final = trainer.train()
    after = _gt_loss(trainer, frames)
    # 40 steps lower it by 0.05 (1 thread) to over 0.1 (2 threads): float summation order differs
    assert after < before - 0.03, (before, after)

    assert final == tmp_path / "run" / "final.safetensors"
    model, info = load_checkpoint(final)
    assert (info.arch, info.arch_config, info.input_height, info.input_width) == ("mobilenetv2_mff", TINY, 64, 64)
    assert (info.mean, info.std, info.min_depth, info.max_depth) == (IMAGENET_MEAN, IMAGENET_STD, 0.1, 10.0)
    # 96x72 frames are scaled by 64/72 to cover 64x64 (then cropped): fx at the training width.
    assert info.focal_px == pytest.approx(FX * round(WIDTH * 64 / 72) / WIDTH, rel=1e-6)
    prov = info.provenance
    assert prov["config"] == config.to_dict() and prov["steps"] == 40
    assert prov["command"] == ["depth-kd", "train-teacher", "..."] and "git_revision" in prov
    assert set(prov["eval"]) >= {"abs_rel", "rmse", "d1"} and prov["teacher"] is None
    for name, tensor in trainer.net.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == config.to_dict()

    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/total", "loss/gt", "lr", "eval/abs_rel", "eval/rmse", "eval/d1"} <= scalars
    assert [e.step for e in events.Scalars("loss/total")] == [10, 20, 30, 40]
    assert [e.step for e in events.Scalars("eval/rmse")] == [20, 40]
    lrs = [e.value for e in events.Scalars("lr")]
    assert lrs[0] > lrs[-1]  # cosine decay after warm-up
    image = events.Images("eval/image_target_prediction")[-1]
    assert (image.width, image.height) == (3 * 64, 4 * 64)  # rgb | target | prediction, one row per frame


def test_encoder_starts_from_torchvision_weights_and_wrong_ones_are_refused(tmp_path, bags):
    from torchvision.models import mobilenet_v2, resnet18

    torch.manual_seed(1)
    imagenet = mobilenet_v2(weights=None, width_mult=0.35)
    torch.save(imagenet.state_dict(), tmp_path / "mobilenet_v2.pth")
    config = tiny_config(tmp_path / "run", bags["x"], model={"encoder_weights": str(tmp_path / "mobilenet_v2.pth")})
    trainer = Trainer(config, torch.device("cpu"))
    for name, tensor in trainer.net.encoder.state_dict().items():
        assert torch.equal(tensor, imagenet.state_dict()[name]), name

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    config = tiny_config(tmp_path / "run", bags["x"], model={"encoder_weights": str(tmp_path / "resnet18.pth")})
    with pytest.raises(ConfigError, match="matches only 0 of the encoder's"):
        Trainer(config, torch.device("cpu"))


def test_the_shared_imagenet_weights_fill_every_encoder_tensor(tmp_path):
    from depth_kd.trainer import load_encoder_weights
    from depth_kd_ros.models import build_model

    path = SHARED_MODELS / "imagenet" / "mobilenet_v2_imagenet.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} is not here (../shared holds the ImageNet weights)")
    net = build_model("mobilenetv2_mff")
    load_encoder_weights(net, path)
    imagenet = safetensors.torch.load_file(str(path))
    loaded = net.encoder.state_dict()
    assert len(loaded) == 288 and all(torch.equal(t, imagenet[n]) for n, t in loaded.items())

    narrow = build_model("mobilenetv2_mff", {"width_mult": 0.5})  # other widths: every tensor has another shape
    with pytest.raises(ConfigError, match=r"matches only \d+ of the encoder's 288 tensors"):
        load_encoder_weights(narrow, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="cannot read .*junk.safetensors"):
        load_encoder_weights(net, tmp_path / "junk.safetensors")
