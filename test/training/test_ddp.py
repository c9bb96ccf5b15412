"""Two-rank DDP on the CPU (gloo) through real torchrun and the real CLI: the run finishes, rank 0 alone writes
one checkpoint and prints its path, the ranks train on disjoint frames, and eval metrics are pooled over ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from depth_kd.data import FrameDataset, TrainingTransform
from depth_kd.metrics import DepthMetricAccumulator
from depth_kd.render.record import record_sequence
from depth_kd.train_data import open_sources
from depth_kd_ros.checkpoint import load_checkpoint

TORCHRUN = Path(sys.executable).with_name("torchrun")
TINY = "model.arch_config={width_mult: 0.35, branch_channels: 4, fuse_channels: 8, refine_channels: 8}"

# Runs the real CLI on each rank, recording which dataset indices the training sampler hands this rank.
DRIVER = """
import json, os, sys
from depth_kd.data import EpochSampler
from depth_kd.train_commands import main

seen = []
order = EpochSampler.__iter__
def recording(self):
    for index in order(self):
        seen.append(index)
        yield index
EpochSampler.__iter__ = recording
code = main(sys.argv[2:])
with open(os.path.join(sys.argv[1], f"seen_rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(seen, f)
sys.exit(code)
"""


@pytest.mark.skipif(not TORCHRUN.exists(), reason=f"no torchrun next to {sys.executable}")
def test_two_ranks_on_gloo_train_disjoint_frames_and_write_one_checkpoint(tmp_path):
    x = record_sequence(tmp_path / "x", "indoor", 8, 1, 96, 72, progress=False).path
    held_out = record_sequence(tmp_path / "eval", "indoor", 3, 2, 96, 72, progress=False).path
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    # 8 frames over 2 ranks = 4 per rank per epoch; 2 steps of 2 frames = exactly one epoch per rank.
    args = ["train-teacher", "--arch", "mobilenetv2_mff", "--data", str(x), "--eval-data", str(held_out),
            "--steps", "2", "--out", str(out), "--size", "64x64", "--batch-size", "2", "--num-workers", "0",
            "--device", "cpu", "--set", TINY]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(driver), str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    final = out / "final.safetensors"
    lines = done.stdout.splitlines()
    assert lines[-1] == str(final) and lines.count(str(final)) == 1  # rank 0 alone prints
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "final.safetensors", "state.safetensors", "tb"]
    assert len(list((out / "tb").iterdir())) == 1  # one TensorBoard writer

    seen = [json.loads((tmp_path / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 4
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(8))

    # The eval metrics in the checkpoint are pooled over both ranks' shards (2 + 1 frames), not rank 0's alone.
    model, info = load_checkpoint(final)
    assert info.provenance["world_size"] == 2
    data = FrameDataset(open_sources([str(held_out)], _config(info.provenance["config"]), "/camera/depth/image"),
                        TrainingTransform(64, 64))
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)

    acc = DepthMetricAccumulator(info.min_depth, info.max_depth)
    with torch.no_grad():
        for i in range(len(data)):
            sample = data[i]
            acc.update(model((sample["rgb"][None] - mean) / std), sample["depth"][None])
    assert info.provenance["eval"]["pixels"] == acc.count  # rank 0 alone would have 2 frames' pixels
    for name, value in acc.compute().items():  # (batched vs single-frame convolutions differ in the last digits)
        assert info.provenance["eval"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def _config(data: dict):
    from depth_kd.config import TrainConfig

    return TrainConfig.from_dict(data)
