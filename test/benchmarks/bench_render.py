"""Frames per second of the synthetic renderer per scene family and image size (a script, not a test).

    .venv/bin/python test/benchmarks/bench_render.py --device cpu [--threads 2] [--frames 40]

For each family and size it renders one seeded trajectory (after warm-up frames) and reports frames/s
(1 / median frame time). The
baseline, measured in the same run at the same size and device, is the same Renderer on a one-plane scene:
the floor cost every frame pays (ray rotation, culling, one intersection batch, texture, shading, uint8).
``x baseline`` = family frame time / baseline frame time, i.e. how much the family's content (primitive
count, screen coverage, materials) costs on top of that floor; it is comparable across machines and loads,
unlike raw frames/s.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch

from depth_kd.render.camera import Intrinsics
from depth_kd.render.families import FAMILIES
from depth_kd.render.renderer import Renderer
from depth_kd.render.scene import SceneBuilder
from depth_kd.render.sequence import make_world
from depth_kd.render.textures import Material

log = logging.getLogger("bench_render")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(renderer: Renderer, poses: np.ndarray, warmup: int = 3) -> tuple[float, float]:
    """(1 / median wall time, median process CPU ms) per frame over ``poses``, after ``warmup`` frames.

    Results stay on the device. The median, not the mean, so that a stall caused by another process on a
    shared machine does not count; CPU time (all threads of this process) is what a frame costs without
    contention when running one thread.
    """
    for pose in poses[:warmup]:
        renderer.render(pose)
    times, cpu = [], []
    for pose in poses:
        _sync(renderer.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        renderer.render(pose)
        _sync(renderer.device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1.0 / float(np.median(times)), 1e3 * float(np.median(cpu))


def baseline_renderer(intrinsics: Intrinsics, device: torch.device) -> Renderer:
    """One fronto-parallel textured plane filling the view."""
    builder = SceneBuilder()
    builder.add_quad((0.0, 0.0, 3.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (100.0, 100.0), Material("noise"))
    return Renderer(builder.build(device), intrinsics)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--sizes", default="320x240,640x480")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    log.info(
        "device: %s; torch %s; load average %.2f; %d timed frames per row",
        name,
        torch.__version__,
        os.getloadavg()[0],
        args.frames,
    )
    log.info(
        "%-14s %-9s %6s %10s %10s %10s %12s",
        "family",
        "size",
        "prims",
        "frames/s",
        "ms/frame",
        "cpu ms",
        "x baseline",
    )
    for width, height in sizes:
        k = Intrinsics.from_fov(width, height, 60.0)
        base_poses = np.repeat(np.eye(4)[None], args.frames + 3, axis=0)
        base, base_cpu = frames_per_second(baseline_renderer(k, device), base_poses)
        log.info(
            "%-14s %-9s %6d %10.1f %10.2f %10.2f %12s",
            "(baseline)",
            f"{width}x{height}",
            1,
            base,
            1e3 / base,
            base_cpu,
            "1.00",
        )
        for family in FAMILIES:
            world = make_world(family, args.frames + 3, args.seed, "drive", 10.0, device)
            fps, cpu = frames_per_second(Renderer(world.scene, k), world.poses)
            prims = sum(len(s) for s in world.scene.shapes)
            log.info(
                "%-14s %-9s %6d %10.1f %10.2f %10.2f %12.2f",
                family,
                f"{width}x{height}",
                prims,
                fps,
                1e3 / fps,
                cpu,
                base / fps,
            )


if __name__ == "__main__":
    main()
