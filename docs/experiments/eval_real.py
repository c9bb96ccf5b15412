"""Students and the FastDepth teacher on real frames: the test part of the redkitchen recording, NYU and TUM.

    .venv/bin/python docs/experiments/eval_real.py --shared ../shared --runs runs/kd_real \
        [--model NAME=PATH ...] [--json results.json] > table.md

Every model sees whole frames and is scored against the sensor's depth (0.1-10 m, pooled over pixels):
students through the node's own path (:class:`~depth_kd_ros.inference.DepthEstimator`: resize to the
processing size, rescale by fx_camera / fx_model), the teacher through its resize protocol (whole frame to
224x224 and back) with the same focal-length rule. ``d1 (med)`` first scales each frame's prediction by
median(gt) / median(prediction): how good the shape is, whatever the scale (``--json`` also has each set's
``scale``, the geometric mean of median(prediction) / median(gt)). ``CPU ms``: one predict on a
640x480 frame here (torch's default threads; the teacher: ai-edge-litert, 2 threads), median of 20.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from depth_kd.data import ImageFolder
from depth_kd.data.sources import open_source
from depth_kd.metrics import DepthMetricAccumulator
from depth_kd_ros.checkpoint import load_checkpoint
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.models import build_model

MIN_DEPTH, MAX_DEPTH = 0.1, 10.0
TEACHER = "models/fastdepth/fast_depth_224_int8.tflite"
NYU_FOCAL = (518.8579, 640)  # ../shared/models/PROVENANCE.md
NYU_K = (518.8579, 519.46961, 325.58245, 253.73617)
TUM_K = {"1305": (517.3, 516.5, 318.6, 255.3), "1341": (535.4, 539.2, 320.1, 247.6)}  # fr1, fr3 by stamp
TEST_PART = "data/real/bags/redkitchen_7scenes#frames=350:500"  # the recording's last 10 s
ROWS = {  # run folder -> table label, in table order
    "supervised": "student, supervised only (GT on X)",
    "kd_x": "student, KD on X (+ GT on X)",
    "kd_u": "student, KD on U only",
    "kd_xu": "student, KD on X and U (+ GT on X)",
    "kd_xu_random_init": "student, KD on X and U, random init",
    "kd_xu_cached": "student, KD on X and U, cached targets",
    "kd_xu_bn_train": "student, KD on X and U, encoder BN statistics trained",
    "kd_xu_rendered": "student, KD on X and U, + rendered rooms in X",
    # datafree.sh (docs/datafree.md): students that never saw a real image, and the real-image upper bound
    "teacher_mff": "teacher: MobileNetV2 + MFF trained on real frames (TEACHER)",
    "df_kd_sim": "student, KD on raw simulated images",
    "df_mix": "student, KD on simulated images + object-wise mixing",
    "df_g": "student, KD on simulated images + transformation network",
    "df_mix_g": "student, KD on simulated images + mixing + transformation network",
    "df_mix_g_sixth": "student, + mixing + transformation network, 1/6 of the simulated images",
    "df_kd_real": "student, KD on the real images (upper bound)",
}

Predict = Callable[[np.ndarray, float], np.ndarray]  # (rgb, fx at the frame's width) -> depth, metres


def test_sets(shared: Path) -> dict[str, Callable[[], Iterator[dict]]]:
    """name -> a function yielding frames (rgb, depth, fx) of that set."""
    def redkitchen() -> Iterator[dict]:
        source = open_source(str(shared / TEST_PART), depth_topic="/camera/depth/image", require_depth=True)
        yield from (source.load(i) for i in range(len(source)))

    def nyu() -> Iterator[dict]:
        folder = ImageFolder(shared / "data/real/nyu_v2", intrinsics=NYU_K)
        yield from (folder.load(i) for i in range(len(folder)))

    def tum() -> Iterator[dict]:
        folder = ImageFolder(shared / "data/real/tum_rgbd", depth_scale=5000.0, depth_tolerance_s=0.02)
        for i in range(len(folder)):
            frame = folder.load(i)
            frame["fx"] = TUM_K[Path(frame["key"]).name[:4]][0]
            yield frame

    return {"redkitchen test": redkitchen, "NYU": nyu, "TUM": tum}


def score(predict: Predict, frames: Iterator[dict]) -> dict[str, float]:
    """AbsRel, RMSE, d1 and median-scaled d1, pooled over every valid pixel of ``frames``; ``scale``: the
    geometric mean over frames of median(prediction) / median(gt) (above 1: too far)."""
    metric, shape = DepthMetricAccumulator(MIN_DEPTH, MAX_DEPTH), DepthMetricAccumulator(MIN_DEPTH, MAX_DEPTH)
    log_ratios = []
    for frame in frames:
        gt = torch.from_numpy(frame["depth"])
        pred = torch.from_numpy(predict(frame["rgb"], frame["fx"]))
        metric.update(pred, gt)
        valid = torch.isfinite(gt) & (gt > MIN_DEPTH) & (gt <= MAX_DEPTH) & torch.isfinite(pred) & (pred > 0)
        ratio = pred[valid].median() / gt[valid].median()
        shape.update(pred / ratio, gt)
        log_ratios.append(math.log(ratio))
    m, s = metric.compute(), shape.compute()
    return {"abs_rel": m["abs_rel"], "rmse": m["rmse"], "d1": m["d1"], "d1_median": s["d1"],
            "scale": math.exp(statistics.fmean(log_ratios)), "frames": len(log_ratios)}


def student(path: Path) -> tuple[Predict, dict]:
    estimator = DepthEstimator(path, device="cpu")
    info = estimator.info
    # Counted in torch whatever the backend scoring it; an ONNX file's architecture is rebuilt from its ModelInfo
    # (the count does not depend on the weights).
    model = build_model(info.arch, info.arch_config) if path.suffix == ".onnx" else load_checkpoint(path)[0]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, info.input_height, info.input_width))
    facts = {"params": sum(p.numel() for p in model.parameters()), "gmacs": counter.get_total_flops() / 2e9,
             "size": f"{info.input_height}x{info.input_width}"}
    return (lambda rgb, fx: estimator.predict(rgb, fx=fx)), facts


def teacher(path: Path) -> tuple[Predict, dict]:
    from depth_kd.teachers.tflite import TfliteTeacher

    model = TfliteTeacher(path, "metric", num_threads=2, focal_px=NYU_FOCAL[0], focal_width=NYU_FOCAL[1])

    def predict(rgb: np.ndarray, fx: float) -> np.ndarray:
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        depth = model.predict(x)[0, 0].numpy()
        # The node's focal rule: depth scales with (fx / width) of the camera over that of the model's camera.
        return depth * (fx / rgb.shape[1]) / model.focal_norm if math.isfinite(fx) else depth

    return predict, {"params": None, "gmacs": 0.37, "size": "224x224"}  # FastDepth paper's count (pruned)


def cpu_ms(predict: Predict) -> float:
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    predict(rgb, 525.0)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        predict(rgb, 525.0)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--runs", type=Path, help="folder of runs named as in ROWS (each with final.safetensors)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="another checkpoint")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    models: dict[str, tuple[str, Callable[[], tuple[Predict, dict]]]] = {
        "teacher": ("teacher: FastDepth int8 TFLite (NYU-trained)", lambda: teacher(args.shared / TEACHER))}
    for run, label in ROWS.items():
        path = args.runs / run / "final.safetensors" if args.runs else None
        if path and path.exists():
            models[run] = (label, lambda p=path: student(p))
    for item in args.model:
        name, _, path = item.partition("=")
        models[name] = (ROWS.get(name, name), lambda p=Path(path): student(p))
    sets = test_sets(args.shared)
    results = {}
    for name, (label, load) in models.items():
        predict, facts = load()
        results[name] = {"label": label, **facts, "cpu_ms": cpu_ms(predict),
                         **{s: score(predict, frames()) for s, frames in sets.items()}}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("| model | " + " | ".join(f"{s} AbsRel / RMSE / d1 / d1 (med)" for s in sets)
          + " | params | GMACs | CPU ms |")
    print("|---|" + "---|" * len(sets) + "---|---|---|")
    for r in results.values():
        cells = [f"{r[s]['abs_rel']:.3f} / {r[s]['rmse']:.2f} / {r[s]['d1']:.3f} / {r[s]['d1_median']:.3f}"
                 for s in sets]
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "-"
        print(f"| {r['label']} | " + " | ".join(cells) + f" | {params} | {r['gmacs']:.2f} at {r['size']} "
              f"| {r['cpu_ms']:.1f} |")


if __name__ == "__main__":
    main()
