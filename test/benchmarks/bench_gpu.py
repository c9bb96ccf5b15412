"""GPU figures for depth_node's backends, each against torch float32 on the same GPU in the same run.

    python3 test/benchmarks/bench_gpu.py [--model CKPT.safetensors] [--onnx MODEL.onnx] [--repeats 200]

(TensorRT's fp16 wants a float32 ONNX model, not the int8 one: for the default weights that is the shipped
depth_kd_ros/weights/student_default_fp32.onnx, used unless --onnx says otherwise; for another checkpoint
`depth-kd export --model CKPT --onnx MODEL.onnx`, done here when --onnx is not given.)

Rows, each skipped with its reason where this machine lacks it:
- torch fp32 and fp16 on CUDA;
- ONNX Runtime with TensorRT, fp16: the engine is built on the first session and cached on disk
  (engine_cache_dir), so the row's start-up is printed twice, built and from the cache;
- ONNX Runtime with CUDA, fp32.
Per row: predict at 640x480 input (resizes included, median of --repeats), frames/s, ratio to torch fp32 on the
GPU, start-up (session + first frame), and agreement with torch fp32 on the CPU on a real frame (median and p99
of |relative difference| over the pixels). With the default weights or --onnx it imports neither rclpy nor the
training package, so it runs from a bare checkout on a GPU machine that has torch (and onnxruntime-gpu with
TensorRT for those rows).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from frames import FX, REPO, cpu_description, latencies, real_frame  # noqa: E402

from depth_kd_ros.backends.onnxruntime_backend import CUDA, TENSORRT  # noqa: E402
from depth_kd_ros.inference import DepthEstimator  # noqa: E402

WEIGHTS = REPO / "depth_kd_ros" / "weights"


def agreement(depth: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Median and p99 of |depth - reference| / reference over the pixels both call valid."""
    valid = np.isfinite(depth) & np.isfinite(reference)
    rel = np.abs(depth[valid] - reference[valid]) / reference[valid]
    return float(np.median(rel)), float(np.percentile(rel, 99))


def rows(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path, bool]]:
    """(name, model file, fp16) for each configuration this machine can run; prints why the others are skipped.
    Without --onnx, the float32 export for ONNX Runtime's GPU providers is written into ``tmp``."""
    import onnxruntime as ort
    import torch

    found = []
    if torch.cuda.is_available():
        found += [("torch fp32", args.model, False), ("torch fp16", args.model, True)]
    else:
        print(f"torch rows: skipped (torch {torch.__version__} sees no CUDA device)")
    providers = ort.get_available_providers()
    onnx = args.onnx
    if {TENSORRT, CUDA} & set(providers) and onnx is None:
        from depth_kd.export import export_onnx

        onnx = tmp / f"{args.model.stem}.onnx"
        export_onnx(args.model, onnx)
    for provider, name, fp16 in [(TENSORRT, "onnxruntime TensorRT fp16", True), (CUDA, "onnxruntime CUDA fp32", False)]:
        if provider in providers:
            found.append((name, onnx, fp16))
        else:
            print(f"{name}: skipped (onnxruntime {ort.__version__} has {', '.join(providers)})")
    return found


def measure(configurations: list[tuple[str, Path, bool]], rgb: np.ndarray, reference: np.ndarray, repeats: int,
            device: str = "cuda") -> dict[str, tuple[float, list[float], tuple[float, float], str]]:
    """{name: (median predict seconds, start-up seconds (built, cached for TensorRT), agreement, where it ran)}.
    A provider that cannot start falls back (with the backend's warning); "where it ran" shows it. ``device="cpu"``
    runs this loop without a GPU, to check the script itself."""
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DEPTH_KD_ROS_CACHE"] = cache  # a fresh engine cache: the first TensorRT start-up builds
        for name, path, fp16 in configurations:
            starts = []
            for _ in range(2 if name.startswith("onnxruntime TensorRT") else 1):
                started = time.perf_counter()
                estimator = DepthEstimator(path, device=device, fp16=fp16)
                depth = estimator.predict(rgb, fx=FX)
                starts.append(time.perf_counter() - started)
            ms = float(np.median(latencies(lambda e=estimator: e.predict(rgb, fx=FX), repeats)))
            results[name] = ms, starts, agreement(depth, reference), estimator.device
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=WEIGHTS / "student_default.safetensors",
                        help="student checkpoint for the torch rows")
    parser.add_argument("--onnx", type=Path, help="the same model as float32 ONNX for the ONNX Runtime rows "
                        "(default: the shipped float32 ONNX for the default --model, else exported here from "
                        "--model, which needs the training package)")
    parser.add_argument("--repeats", type=int, default=200, help="repeats for each predict timing")
    args = parser.parse_args()
    if args.onnx is None and args.model == WEIGHTS / "student_default.safetensors":
        args.onnx = WEIGHTS / "student_default_fp32.onnx"
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        report(args, rows(args, Path(tmp)))


def report(args: argparse.Namespace, configurations: list[tuple[str, Path, bool]]) -> None:
    """Measure ``configurations`` and print the table."""
    if not configurations:
        print("nothing to measure on this machine")
        return
    import torch

    rgb = real_frame()
    reference = DepthEstimator(args.model, device="cpu").predict(rgb, fx=FX)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU that torch sees"
    print(f"GPU: {gpu}; CPU: {cpu_description()}")
    print(f"\nGPU predict at {rgb.shape[1]}x{rgb.shape[0]} input (resizes included), model {args.model.name}, "
          f"median of {args.repeats}; agreement: |relative difference| to torch fp32 on the CPU")
    print(f"{'backend':28s} {'ms':>7s} {'frames/s':>9s} {'vs torch fp32':>14s} {'start-up s':>11s} "
          f"{'median rel':>11s} {'p99 rel':>8s}  ran on")
    results = measure(configurations, rgb, reference, args.repeats)
    base = results.get("torch fp32", (None,))[0]
    for name, (ms, starts, (median_rel, p99_rel), ran_on) in results.items():
        ratio = f"{ms / base:14.3f}" if base else f"{'-':>14s}"
        start_up = " / ".join(f"{s:.1f}" for s in starts)
        print(f"{name:28s} {ms * 1e3:7.2f} {1 / ms:9.1f} {ratio} {start_up:>11s} {median_rel:11.4f} {p99_rel:8.4f}  "
              f"{ran_on}")
    if any(n.startswith("onnxruntime TensorRT") for n, _, _ in configurations):
        print("(TensorRT start-up: engine built / loaded from the on-disk cache)")
    print("(the first row's start-up includes CUDA's own initialisation)")


if __name__ == "__main__":
    main()
