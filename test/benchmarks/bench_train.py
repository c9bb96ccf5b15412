"""Benchmark distillation throughput (images/s) with the teacher cache cold vs warm, in the same run.

    .venv/bin/python test/benchmarks/bench_train.py [--frames 40] [--size 128x160] [--batch 4] [--device cpu]

The paper's pair at a small size: ResNet-34 MFF teacher (random weights; speed does not depend on them) and
the MobileNetV2 MFF student, kd_x on one rendered bag. Epoch 1 runs the teacher on every frame and fills the
cache (cold); epoch 2 reads the cache (warm). Supervised training of the same student (no teacher at all) is
the upper bound a warm cache can reach. The first step of each epoch is left out (lazy initialisation, new
DataLoader iterator).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from depth_kd.config import TrainConfig, parse_size
from depth_kd.render.record import record_sequence
from depth_kd.trainer import Trainer
from depth_kd_ros.checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, save_checkpoint
from depth_kd_ros.models import build_model


def epoch_rates(trainer: Trainer, epochs: int, steps_per_epoch: int, batch: int) -> list[float]:
    """Images per second of each epoch, first step of each excluded."""
    rates = []
    for _ in range(epochs):
        trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps_per_epoch - 1):
            trainer.train_step()
        rates.append((steps_per_epoch - 1) * batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames in the bag (one epoch)")
    parser.add_argument("--size", default="128x160", help="training size HxW")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    height, width = parse_size(args.size)
    device = torch.device(args.device)
    steps = args.frames // args.batch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bag = record_sequence(root / "x", "indoor", args.frames, 1, width, height, progress=False).path
        teacher = root / "teacher.safetensors"
        info = ModelInfo("resnet34_mff", {}, height, width, IMAGENET_MEAN, IMAGENET_STD, 0.1, 10.0)
        save_checkpoint(teacher, build_model("resnet34_mff"), info)

        def config(mode: str, out: str) -> TrainConfig:
            c = TrainConfig()
            c.update({"model": {"height": height, "width": width},
                      "data": {"train": [str(bag)], "num_workers": 0},
                      "optim": {"batch_size": args.batch, "steps": 10**6, "warmup_steps": 0},
                      "distill": {"mode": mode, "teacher": str(teacher) if mode != "supervised" else None},
                      "run": {"out": str(root / out), "device": args.device}})
            return c

        cold, warm = epoch_rates(Trainer(config("kd_x", "kd"), device), 2, steps, args.batch)
        (alone,) = epoch_rates(Trainer(config("supervised", "sup"), device), 1, steps, args.batch)

    print(f"distillation throughput, student mobilenetv2_mff <- teacher resnet34_mff, {width}x{height}, "
          f"batch {args.batch}, {args.device}, {torch.get_num_threads()} threads")
    print(f"  cache cold (teacher runs):  {cold:6.2f} images/s")
    print(f"  cache warm (teacher cached): {warm:6.2f} images/s")
    print(f"  warm / cold:                 {warm / cold:6.2f}x")
    print(f"  no teacher (supervised):     {alone:6.2f} images/s  (upper bound for warm)")


if __name__ == "__main__":
    main()
