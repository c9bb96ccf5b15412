"""The train-teacher / distill / eval / export commands as a user runs them: real processes for the output
contracts (last line = checkpoint path; eval --json = one JSON object on stdout), in-process for bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from depth_kd.metrics import METRIC_NAMES
from depth_kd.render.record import record_sequence
from depth_kd.train_commands import add_train_commands, main
from depth_kd_ros.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from depth_kd_ros.models import build_model

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"
DEFAULT_WEIGHTS = REPO / "depth_kd_ros" / "weights" / "student_default.safetensors"

TINY = "model.arch_config={width_mult: 0.35, branch_channels: 4, fuse_channels: 8, refine_channels: 8}"
SMALL = ["--size", "64x64", "--batch-size", "2", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    return {name: record_sequence(root / name, "indoor", 4, seed, 96, 72, progress=False).path
            for name, seed in (("x", 1), ("eval", 2))}


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = {"width_mult": 0.35, "branch_channels": 4, "fuse_channels": 8, "refine_channels": 8}
    info = ModelInfo("mobilenetv2_mff", config, 64, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.1, 10.0)
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    save_checkpoint(path, build_model("mobilenetv2_mff", config), info)
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "depth_kd.train_commands", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_train_teacher_prints_the_checkpoint_path_last(tmp_path, bags):
    out = tmp_path / "teacher"
    done = _run("train-teacher", "--data", str(bags["x"]), "--steps", "2", "--out", str(out),
                "--set", "model.arch_config={branch_channels: 4, fuse_channels: 8, refine_channels: 8}", *SMALL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(out / "final.safetensors")
    _, info = load_checkpoint(out / "final.safetensors")
    assert info.arch == "resnet34_mff" and info.provenance["config"]["distill"]["mode"] == "supervised"
    assert "train-teacher" in info.provenance["command"]


def test_eval_json_is_one_object_with_every_metric(bags, student):
    done = _run("eval", "--model", str(student), "--data", str(bags["eval"]), str(bags["x"]), "--json",
                "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    metrics = json.loads(done.stdout)
    assert set(metrics) == {*METRIC_NAMES, "frames", "pixels"}
    assert metrics["frames"] == 8 and metrics["pixels"] > 8 * 96 * 72 // 2
    assert all(isinstance(metrics[name], float) for name in METRIC_NAMES)


def test_eval_takes_an_onnx_model_and_scores_it_as_its_checkpoint(tmp_path, bags, student, capsys):
    onnx_model = tmp_path / "student.onnx"
    assert main(["export", "--model", str(student), "--onnx", str(onnx_model)]) == 0
    scores = []
    for model in (student, onnx_model):
        capsys.readouterr()
        assert main(["eval", "--model", str(model), "--data", str(bags["eval"]), "--json", "--device", "cpu"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0]["frames"] == scores[1]["frames"] == 4
    for name in METRIC_NAMES:
        assert scores[1][name] == pytest.approx(scores[0][name], rel=1e-3, abs=1e-4), name


@pytest.mark.skipif(not (REAL / "bags" / "redkitchen_7scenes").is_dir(), reason=f"no real sample bags at {REAL}")
def test_eval_on_a_realsense_style_bag_picks_its_topics(capsys):
    """compressedDepth depth, jpeg colour and CameraInfo under RealSense names: no topic flags needed."""
    assert main(["eval", "--model", str(DEFAULT_WEIGHTS), "--data", str(REAL / "bags" / "redkitchen_7scenes"),
                 "--json", "--device", "cpu", "--max-frames", "3"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["frames"] == 3 and metrics["pixels"] > 3 * 640 * 480 // 2
    assert 0 < metrics["abs_rel"] < 1 and 0.1 < metrics["rmse"] < 2


@pytest.mark.skipif(not (REAL / "nyu_v2").is_dir(), reason=f"no real sample data at {REAL}")
def test_eval_on_an_image_folder_with_depth(capsys):
    assert main(["eval", "--model", str(DEFAULT_WEIGHTS), "--data", f"{REAL / 'nyu_v2'}#frames=1:", "--json",
                 "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["frames"] == 2 and metrics["pixels"] > 2 * 640 * 480 // 2


def test_distill_and_export_in_process(tmp_path, bags, student, capsys):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(student), "--data", str(bags["x"]), "--steps", "2", "--out", str(out),
                 "--set", TINY, "--set", "run.eval_every=0", *SMALL]) == 0
    final = out / "final.safetensors"
    assert capsys.readouterr().out.splitlines()[-1] == str(final)
    _, info = load_checkpoint(final)
    assert info.provenance["config"]["distill"]["mode"] == "kd_x"  # no --aux: KD + GT on X
    assert info.provenance["teacher"]["path"] == str(student)

    assert main(["eval", "--model", str(final), "--data", str(bags["eval"]), "--size", "64x64", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in METRIC_NAMES)

    assert main(["export", "--model", str(final), "--onnx", str(tmp_path / "s.onnx"),
                 "--fp16-safetensors", str(tmp_path / "s16.safetensors")]) == 0
    assert "max abs difference to PyTorch" in capsys.readouterr().out
    assert (tmp_path / "s.onnx").is_file() and (tmp_path / "s16.safetensors").is_file()


@pytest.mark.parametrize("make_args, message", [
    (lambda t, b, s: ["train-teacher", "--data", str(t / "nope"), "--out", str(t)],
     "depth-kd train-teacher: error: data.train: no such bag or image folder: {t}/nope"),
    (lambda t, b, s: ["train-teacher", "--data", f"{b['x']}#frames=4:2", "--out", str(t)],
     "depth-kd train-teacher: error: {x}: selection #frames=4:2: empty range, the start must be below the end"),
    (lambda t, b, s: ["distill", "--teacher", str(t / "missing.safetensors"), "--data", str(b["x"]), "--out", str(t)],
     "depth-kd distill: error: distill.teacher: no such file or folder: {t}/missing.safetensors"),
    (lambda t, b, s: ["distill", "--data", str(b["x"]), "--out", str(t)],
     "depth-kd distill: error: mode kd_x needs a teacher (--teacher / distill.teacher)"),
    (lambda t, b, s: ["eval", "--model", str(t / "none.safetensors"), "--data", str(b["x"])],
     "depth-kd eval: error: {t}/none.safetensors: no such file"),
    (lambda t, b, s: ["export", "--model", str(s)],
     "depth-kd export: error: nothing to do: give --onnx OUT, --int8 OUT and/or --fp16-safetensors OUT"),
    (lambda t, b, s: ["train-teacher", "--data", str(b["x"]), "--out", str(t), "--set", "optim.lr=fast"],
     "depth-kd train-teacher: error: --set optim.lr=fast: optim.lr must be float, got 'fast'"),
])
def test_bad_input_gives_one_error_line_and_exit_code_2(tmp_path, bags, student, capsys, make_args, message):
    assert main(make_args(tmp_path, bags, student)) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message.format(t=tmp_path, x=bags["x"])
    assert captured.out == ""


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["distill", "train-teacher"])
@pytest.mark.parametrize("under", [False, True])
def test_out_that_is_a_file_fails_before_data_and_teacher_load(tmp_path, capsys, command, under):
    """Data and teacher here would each fail to load (an empty folder, junk bytes): the --out error must come
    first, so a typo in --out costs nothing."""
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "teacher.safetensors").write_bytes(b"junk" * 10)
    out = taken / "run" if under else taken
    teacher = ["--teacher", str(tmp_path / "teacher.safetensors")] if command == "distill" else []
    assert main([command, *teacher, "--data", str(tmp_path / "empty"), "--out", str(out), *SMALL]) == 2
    what = f"cannot be created: {taken} is not a folder" if under else "exists and is not a folder"
    assert _one_error_line(capsys) == f"depth-kd {command}: error: run.out: {out} {what}"
    assert taken.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder_fails_at_once(tmp_path, bags, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["train-teacher", "--data", str(bags["x"]), "--out", str(locked / "run"), *SMALL]) == 2
    assert _one_error_line(capsys) == (f"depth-kd train-teacher: error: run.out: {locked / 'run'} cannot be "
                                       f"created: {locked} is not writable")


@pytest.mark.parametrize("device, message", [
    ("bogus", "--device: bad device 'bogus': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    pytest.param("cuda", "--device: device 'cuda' requested but CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ("cuda:99", "--device: device 'cuda:99' requested but"),  # no CUDA here, or not 100 GPUs
])
def test_eval_on_an_unusable_device_is_one_error_line(bags, student, capsys, device, message):
    assert main(["eval", "--model", str(student), "--data", str(bags["x"]), "--device", device]) == 2
    assert _one_error_line(capsys).startswith(f"depth-kd eval: error: {message}")


def test_distill_on_an_unusable_device_is_one_error_line(tmp_path, bags, student, capsys):
    assert main(["distill", "--teacher", str(student), "--data", str(bags["x"]), "--out", str(tmp_path / "s"),
                 "--device", "bogus"]) == 2
    assert _one_error_line(capsys) == ("depth-kd distill: error: --device: bad device 'bogus': expected 'auto', "
                                       "'cpu', 'cuda' or 'cuda:N'")
    assert not (tmp_path / "s").exists()


def test_eval_with_a_folder_as_model_says_so(tmp_path, bags, capsys):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    assert main(["eval", "--model", str(save_dir), "--data", str(bags["x"]), "--device", "cpu"]) == 2
    assert _one_error_line(capsys) == (f"depth-kd eval: error: {save_dir}: is a directory, not a checkpoint file "
                                       "(give the .safetensors or .onnx file in it)")


def test_malformed_config_names_the_file_and_line(tmp_path, bags, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  steps: [1, 2\nrun:\n  out: x\n")
    assert main(["train-teacher", "--config", str(bad), "--data", str(bags["x"]), "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == (f"depth-kd train-teacher: error: {bad}, line 4, column 4: not valid YAML: "
                                       "expected ',' or ']', but got ':'")


def test_corrupt_training_state_is_named(tmp_path, bags, capsys):
    (tmp_path / "state.safetensors").write_bytes(b"\x00" * 100)
    args = ["train-teacher", "--data", str(bags["x"]), "--out", str(tmp_path), "--steps", "1", "--set", TINY,
            "--arch", "mobilenetv2_mff", *SMALL]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(f"depth-kd train-teacher: error: {tmp_path}/state.safetensors: "
                                                 "corrupt or unreadable training state")
    assert "--no-resume" in err[0]


@pytest.mark.parametrize("size", ["64x50", "64", "axb", "0x64"])
def test_bad_size_is_an_argparse_error(size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-teacher", "--data", "x", "--size", size])
    assert exit_info.value.code == 2
    assert "argument --size:" in capsys.readouterr().err


def test_commands_plug_into_another_parser():
    parser = argparse.ArgumentParser(prog="depth-kd")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_train_commands(sub)
    args = parser.parse_args(["distill", "--teacher", "t", "--data", "a", "b", "--aux", "u", "--mode", "kd_u"])
    assert (args.data, args.aux, args.mode) == (["a", "b"], ["u"], "kd_u") and callable(args.handler)
    assert set(sub.choices) == {"train-teacher", "distill", "eval", "export"}
