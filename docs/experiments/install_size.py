"""Install size of the node's runtime with ONNX Runtime only vs with PyTorch, from this environment's wheels.

    .venv/bin/python docs/experiments/install_size.py

For each set of top-level requirements, walks the installed distributions' dependency closure
(importlib.metadata) and sums the sizes of the files each one installed. rclpy and the ROS message packages
are left out of both sets: a robot has them from its ROS distro either way.
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

RUNTIME = ["numpy", "opencv-python-headless", "rosbags"]  # what the node imports besides ROS
SETS = {
    "runtime + onnxruntime (backend:=onnxruntime, .onnx model)": RUNTIME + ["onnxruntime"],
    "runtime + torch (backend:=torch, .safetensors model)": RUNTIME + ["torch", "torchvision", "safetensors"],
}


def _name(requirement: str) -> str:
    return re.split(r"[\s;\[<>=!~(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(names: list[str]) -> set[str]:
    """The distributions these requirements pull in (extras and environment-marked ones skipped)."""
    seen, todo = set(), [_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for requirement in dist.requires or []:
            if ";" in requirement and "extra ==" in requirement:
                continue
            todo.append(_name(requirement))
    return seen


def installed_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    for label, names in SETS.items():
        dists = closure(names)
        sizes = {d: installed_bytes(d) for d in dists}
        largest = ", ".join(f"{d} {s / 2**20:.0f}" for d, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:4])
        print(f"{label}: {sum(sizes.values()) / 2**20:.0f} MiB in {len(dists)} distributions "
              f"(largest, MiB: {largest})")


if __name__ == "__main__":
    main()
