"""The one-channel output layer, as a plain convolution and as models.mff.OneChannelConv2d, in ONNX Runtime.

    .venv/bin/python docs/experiments/profile_head.py [--model depth_kd_ros/weights/student_default.safetensors]

Exports the checkpoint's network twice to float32 ONNX, identical except for the last layer (a plain k x k
nn.Conv2d to one channel, as before, against OneChannelConv2d: depthwise, then a sum over channels), and times
both on the CPU, interleaved, 1 thread, at the checkpoint's processing size; then ONNX Runtime's own profile of
the last layer in each, and the same two networks in torch (1 thread). Medians in ms, ratio to the plain
convolution; docs/node_profile.md has a run.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from depth_kd_ros.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def session(path: Path, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one core's cost, as in docs/node_profile.md's figures
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def head_ms(path: Path, x: np.ndarray, runs: int) -> float:
    """Mean ms per run that ONNX Runtime's profiler books to nodes of the last layer (/decoder/refine/refine.1/)."""
    profiled = session(path, profile=True)
    for _ in range(runs):
        profiled.run(None, {"image": x})
    events = json.loads(Path(profiled.end_profiling()).read_text())
    total = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total["/decoder/refine/refine.1/" in event["name"]] += event["dur"]
    return total[True] / runs / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "depth_kd_ros/weights/student_default.safetensors")
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    model, info = load_checkpoint(args.model)
    model.eval()
    ours = model.decoder.refine[-1]
    plain = nn.Conv2d(ours.in_channels, 1, ours.kernel_size, padding=ours.padding)
    plain.load_state_dict(ours.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 3, info.input_height, info.input_width)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, head in (("plain nn.Conv2d", plain), ("OneChannelConv2d", ours)):
            model.decoder.refine[-1] = head
            paths[name] = Path(tmp) / f"{len(paths)}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.from_numpy(x),), str(paths[name]), input_names=["image"],
                                  output_names=["depth"], opset_version=17, dynamo=False)
        sessions = {name: session(path) for name, path in paths.items()}
        outputs = {name: s.run(None, {"image": x})[0] for name, s in sessions.items()}
        samples = {name: [] for name in sessions}
        for _ in range(args.runs):  # interleaved: both see the same machine load
            for name, s in sessions.items():
                start = time.perf_counter()
                s.run(None, {"image": x})
                samples[name].append(time.perf_counter() - start)
        heads = {name: head_ms(path, x, args.runs // 2) for name, path in paths.items()}
    torch.set_num_threads(1)
    torch_samples = {name: [] for name in sessions}
    with torch.inference_mode():
        for _ in range(args.runs // 3):
            for name, head in (("plain nn.Conv2d", plain), ("OneChannelConv2d", ours)):
                model.decoder.refine[-1] = head
                start = time.perf_counter()
                model(torch.from_numpy(x))
                torch_samples[name].append(time.perf_counter() - start)
    base = np.median(samples["plain nn.Conv2d"])
    print(f"{info.arch} at {info.input_width}x{info.input_height}, ONNX Runtime {ort.__version__} float32, 1 thread, "
          f"median of {args.runs}; outputs differ by at most "
          f"{np.abs(outputs['plain nn.Conv2d'] - outputs['OneChannelConv2d']).max():.2g} m")
    torch_base = np.median(torch_samples["plain nn.Conv2d"])
    print(f"{'last layer':20s} {'network ms':>11s} {'ratio':>6s} {'last layer ms':>14s} {'torch ms':>9s} {'ratio':>6s}")
    for name in sessions:
        median, in_torch = np.median(samples[name]), np.median(torch_samples[name])
        print(f"{name:20s} {1e3 * median:11.2f} {median / base:6.3f} {heads[name]:14.2f} {1e3 * in_torch:9.2f} "
              f"{in_torch / torch_base:6.3f}")


if __name__ == "__main__":
    main()
