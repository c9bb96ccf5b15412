"""Metric anchoring measured: the node's scale sources on frames whose true depth is known.

    .venv/bin/python docs/experiments/scale_anchoring.py [--shared ../shared] [--frames 60] > table.md

1. Rendered (``indoor``, a robot's level camera 0.45 m above the floor, 320x240): the default student with a
   deliberately wrong scale (x1.5), without anchoring, with ``scale_source: depth`` (the ground truth kept at
   ~1% of pixels, a sparse sensor) and with ``scale_source: ground`` (the camera's true height above the floor
   and its up direction, from the rendered pose: what the camera_height / camera_pitch parameters give).
2. Real (the redkitchen recording's test part, frames 350-499): the default student as it is, without and
   with ``depth`` (the sensor's depth at ~1% of pixels). No ``ground`` row: the handheld camera's height is
   unknown.

Per source, one ScaleFilter runs over the sequence as in the node (depth_kd_ros/scale.py, the same code).
AbsRel and d1 pooled over pixels in 0.1-10 m.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from depth_kd.data.sources import open_source
from depth_kd.metrics import DepthMetricAccumulator
from depth_kd.render import Intrinsics, Renderer, make_world
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.node import default_model
from depth_kd_ros.scale import ScaleFilter, scale_from_depth, scale_from_ground

SPARSE = 0.01  # share of pixels a sparse sensor measures
WRONG = 1.5
TRAJECTORY = "drive"  # a robot's camera, 0.45 m above the floor, level


def rendered(frames: int) -> Iterator[tuple[np.ndarray, np.ndarray, tuple, float, np.ndarray]]:
    """(rgb, depth, intrinsics, camera height, up in the optical frame) of a handheld walk through a room."""
    intrinsics = Intrinsics.from_fov(320, 240)
    world = make_world("indoor", frames, seed=7, trajectory=TRAJECTORY)
    renderer = Renderer(world.scene, intrinsics)
    floor = world.scene.layout.floor_z
    for pose in world.poses:
        frame = renderer.render(pose).numpy()
        rotation = frame.pose[:3, :3]  # world from camera
        yield (frame.rgb, frame.depth, (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy),
               float(frame.pose[2, 3] - floor), rotation.T @ np.array([0.0, 0.0, 1.0]))


def real(shared: Path) -> Iterator[tuple[np.ndarray, np.ndarray, tuple, None, None]]:
    source = open_source(f"{shared}/data/real/bags/redkitchen_7scenes#frames=350:500",
                         depth_topic="/camera/depth/image", require_depth=True)
    for index in range(len(source)):
        f = source.load(index)
        yield f["rgb"], f["depth"], (f["fx"], f["fy"], f["cx"], f["cy"]), None, None


def sparse(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    keep = rng.random(depth.shape) < SPARSE
    return np.where(keep, depth, np.nan).astype(np.float32)


def measure(frames, estimator: DepthEstimator, wrong: float, sources: list[str]) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    filters = {name: ScaleFilter() for name in sources}
    accs = {name: DepthMetricAccumulator(0.1, 10.0) for name in ["none", *sources]}
    supports: dict[str, list[int]] = {name: [] for name in sources}
    for rgb, gt, intrinsics, height, up in frames:
        predicted = estimator.predict(rgb, fx=intrinsics[0]) * np.float32(wrong)
        estimates = {}
        if "depth" in sources:
            estimates["depth"] = scale_from_depth(predicted, sparse(gt, rng))
        if "ground" in sources:
            estimates["ground"] = scale_from_ground(predicted, intrinsics, height, up)
        outputs = {"none": predicted}
        for name, estimate in estimates.items():
            supports[name].append(0 if estimate is None else estimate.support)
            outputs[name] = predicted * np.float32(filters[name].update(estimate))
        target = torch.from_numpy(np.nan_to_num(gt, nan=0.0))[None, None]
        for name, depth in outputs.items():
            accs[name].update(torch.from_numpy(np.nan_to_num(depth, nan=0.0))[None, None], target)
    result = {name: acc.compute() for name, acc in accs.items()}
    for name in sources:
        result[name]["frames with support"] = sum(s > 0 for s in supports[name]) / len(supports[name])
        result[name]["final scale"] = filters[name].current
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared")
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    estimator = DepthEstimator(default_model("auto"), threads=1)
    runs = [(f"rendered indoor, {TRAJECTORY}, model x1.5", rendered(args.frames), WRONG, ["depth", "ground"])]
    if (args.shared / "data/real/bags/redkitchen_7scenes").exists():
        runs.append(("real redkitchen 350-499, model as is", real(args.shared), 1.0, ["depth"]))
    print("| frames | scale source | AbsRel | d1 | frames with support | final scale |")
    print("|---|---|---|---|---|---|")
    for label, frames, wrong, sources in runs:
        for name, m in measure(frames, estimator, wrong, sources).items():
            support = f"{m['frames with support']:.0%}" if name != "none" else ""
            scale = f"{m['final scale']:.3f}" if name != "none" else ""
            print(f"| {label} | {name} | {m['abs_rel']:.3f} | {m['d1']:.3f} | {support} | {scale} |")


if __name__ == "__main__":
    main()
