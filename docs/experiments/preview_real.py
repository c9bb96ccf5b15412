"""RGB | predicted depth | ground truth on real frames, for the README (docs/real_preview.png).

    .venv/bin/python docs/experiments/preview_real.py --shared ../shared --out docs/real_preview.png

Rows: a frame of the redkitchen recording's held-out last part (never trained on) and a TUM RGB-D frame,
through the node's own path with the default weights (or ``--model``). Colours: the node's colour map over
0.5-4 m, shared by prediction and ground truth; black = no ground truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import depth_kd_ros
from depth_kd.data import ImageFolder
from depth_kd.data.sources import open_source
from depth_kd_ros.image_codec import colorize_depth
from depth_kd_ros.inference import DepthEstimator

NEAR, FAR = 0.5, 4.0
TUM_FX = 535.4  # fr3 (../shared/data/real/PROVENANCE.md)


def row(estimator: DepthEstimator, frame: dict, height: int = 240) -> np.ndarray:
    pred = estimator.predict(frame["rgb"], fx=frame["fx"])
    panels = [frame["rgb"][..., ::-1], colorize_depth(pred, NEAR, FAR), colorize_depth(frame["depth"], NEAR, FAR)]
    width = round(frame["rgb"].shape[1] * height / frame["rgb"].shape[0])
    return np.concatenate([cv2.resize(p, (width, height), interpolation=cv2.INTER_AREA) for p in panels], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    default = Path(depth_kd_ros.__file__).parent / "weights" / "student_default.safetensors"
    parser.add_argument("--model", type=Path, default=default, help="checkpoint (default: the package's weights)")
    parser.add_argument("--out", type=Path, default=Path("docs/real_preview.png"))
    args = parser.parse_args()
    estimator = DepthEstimator(args.model, device="cpu")
    kitchen = open_source(str(args.shared / "data/real/bags/redkitchen_7scenes#frames=420:421"),
                          depth_topic="/camera/depth/image", require_depth=True).load(0)
    tum = ImageFolder(args.shared / "data/real/tum_rgbd", depth_scale=5000.0, depth_tolerance_s=0.02).load(3)
    tum["fx"] = TUM_FX
    cv2.imwrite(str(args.out), np.concatenate([row(estimator, kitchen), row(estimator, tum)], axis=0))
    print(args.out)


if __name__ == "__main__":
    main()
