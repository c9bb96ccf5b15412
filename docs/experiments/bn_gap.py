"""How far each source's frames are from a teacher's training images, as its BatchNorm layers see them.

    .venv/bin/python docs/experiments/bn_gap.py --teacher runs/kd_real/kd_xu_bn_train/final.safetensors \
        --source "kitchen X=../shared/data/real/bags/redkitchen_7scenes#frames=0:150" \
        --source "rendered=runs/datafree/data/indoor_s301" [--transform runs/datafree/df_mix_g] \
        [--preview g.jpg] [--size 96x128] [--batches 4]

Prints, per source, the BatchNorm-statistics loss that the data-free mode's transformation network G minimises
(docs/datafree.md; ``depth_kd.bn_stats``) on random batches of 8 whole frames resized to ``--size`` (the
students' size in datafree.sh; the teacher resizes them to its own). The frames a teacher trained on should score
lowest; the gap between them and the simulated frames is what G has to close. ``--transform RUN`` adds a column
with the frames passed through the G of a data-free run (its last saved state), ``--preview`` saves the first
four frames of each source over their G output.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from depth_kd.data.sources import open_source
from depth_kd.datafree import teacher_statistics
from depth_kd.teachers import MffTeacher
from depth_kd.train_state import STATE_NAME, load_part
from depth_kd.transform_net import TransformNet


def load_g(run: Path) -> TransformNet:
    """The G of a data-free run's last saved state (run/state.safetensors)."""
    config, weights = load_part(run / STATE_NAME, "g")
    g = TransformNet(config["datafree"]["g_width"], config["datafree"]["g_bound"])
    g.load_state_dict(weights)
    return g.eval()


def batches(spec: str, size: tuple[int, int], count: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """``count`` random batches of 8 whole frames of ``spec`` (RGB in [0, 1]) resized to ``size``."""
    source = open_source(spec)  # the default image topic, or a bag's only one
    out = []
    for _ in range(count):
        picks = rng.choice(len(source), size=min(8, len(source)), replace=False)
        frames = [torch.from_numpy(source.load(int(i))["rgb"]).permute(2, 0, 1).float() / 255 for i in picks]
        out.append(torch.cat([F.interpolate(f[None], size=size, mode="bilinear", antialias=True) for f in frames]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a node checkpoint with BatchNorm layers")
    parser.add_argument("--source", action="append", required=True, metavar="NAME=SPEC",
                        help="a bag or image folder (PATH#frames=A:B selects part of one)")
    parser.add_argument("--transform", type=Path, metavar="RUN", help="a data-free run folder whose G to apply")
    parser.add_argument("--preview", type=Path, help="image file (.png, .jpg): first frames of each source over G's")
    parser.add_argument("--size", default="96x128", help="HxW the frames are resized to first")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    teacher = MffTeacher(args.teacher, "cpu")
    stats = teacher_statistics(teacher)
    g = load_g(args.transform) if args.transform else None
    size = tuple(int(v) for v in args.size.split("x"))

    def loss(rgb: torch.Tensor) -> float:
        with torch.no_grad(), stats.recording():
            teacher.forward(rgb)
            return stats.loss().item()

    print("| frames | BN-statistics loss, mean (per batch) |" + (" after G |" if g else "")
          + "\n|---|---|" + ("---|" if g else ""))
    tiles = []
    for item in args.source:
        name, _, spec = item.partition("=")
        raw = batches(spec, size, args.batches, np.random.default_rng(args.seed))
        plain = [loss(b) for b in raw]
        row = f"| {name} | {statistics.mean(plain):.0f} ({', '.join(f'{v:.0f}' for v in plain)}) |"
        if g is not None:
            with torch.no_grad():
                moved = [g(b) for b in raw]
            after = [loss(b) for b in moved]
            row += f" {statistics.mean(after):.0f} ({', '.join(f'{v:.0f}' for v in after)}) |"
            pad = [torch.zeros_like(raw[0][0])] * max(0, 4 - len(raw[0]))  # a source of fewer than 4 frames
            tiles.append(torch.cat([torch.cat([*raw[0][:4], *pad], dim=2), torch.cat([*moved[0][:4], *pad], dim=2)],
                                   dim=1))
        print(row, flush=True)
    if args.preview and tiles:
        image = (torch.cat(tiles, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(args.preview), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
