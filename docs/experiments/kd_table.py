"""Markdown table of the rendered-data KD experiment: metrics from each run's eval.json, params and MACs.

    .venv/bin/python docs/experiments/kd_table.py runs/kd > docs/kd_rendered_table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from depth_kd_ros.checkpoint import load_checkpoint

RUNS = {
    "teacher": "teacher (ResNet-34 + MFF), GT on X",
    "student_supervised": "student, supervised only (GT on X)",
    "student_kd_x": "student, KD on X (+ GT on X)",
    "student_kd_u": "student, KD on U only",
    "student_kd_xu": "student, KD on X and U (+ GT on X)",
}


def macs(model: torch.nn.Module, height: int, width: int) -> float:
    """Multiply-accumulates of one forward pass (FLOP counter / 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() / 2


def main(runs: Path) -> None:
    print("| model | AbsRel | RMSE (m) | d1 | params | GMACs |")
    print("|---|---|---|---|---|---|")
    for run, label in RUNS.items():
        ckpt, result = runs / run / "final.safetensors", runs / run / "eval.json"
        if not (ckpt.exists() and result.exists()):
            continue
        metrics = json.loads(result.read_text())
        model, info = load_checkpoint(ckpt)
        params = sum(p.numel() for p in model.parameters())
        gmacs = macs(model, info.input_height, info.input_width) / 1e9
        print(f"| {label} | {metrics['abs_rel']:.3f} | {metrics['rmse']:.3f} | {metrics['d1']:.3f} "
              f"| {params / 1e6:.2f}M | {gmacs:.2f} at {info.input_height}x{info.input_width} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/kd"))
