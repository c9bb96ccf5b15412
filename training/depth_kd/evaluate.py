"""Scoring a finished node checkpoint on bags with ground truth, through the node's own inference path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from depth_kd.config import DEFAULT_IMAGE_TOPIC
from depth_kd.data import open_source, resize_and_crop
from depth_kd.metrics import DepthMetricAccumulator, json_metrics
from depth_kd_ros.inference import DepthEstimator


def evaluate_checkpoint(checkpoint: str | Path, bags: list[str], depth_topic: str,
                        image_topic: str | None = DEFAULT_IMAGE_TOPIC,
                        size: tuple[int, int] | None = None, device: str = "auto",
                        max_frames: int = 0) -> dict[str, Any]:
    """Metrics of a node-format checkpoint on ``bags`` through the node's own inference path.

    ``bags`` are data paths as the training commands take them (bags or image folders with a ``depth/``
    folder, ``#frames=A:B``/``#time=T0:T1`` allowed), opened by the same :func:`~depth_kd.data.open_source`.

    Each frame goes through :class:`~depth_kd_ros.inference.DepthEstimator` exactly as on the robot
    (resize to the processing size, the camera's fx for the focal rescale, clamp to the depth range),
    optionally after resizing/cropping the frame to ``size`` (height, width). Returns the metrics of
    ``metrics.METRIC_NAMES`` pooled over all valid pixels (NaN -> None), plus ``frames`` and ``pixels``.
    """
    estimator = DepthEstimator(checkpoint, device=device)
    info = estimator.info
    acc = DepthMetricAccumulator(info.min_depth, info.max_depth)
    frames = 0
    for bag in bags:
        source = open_source(bag, image_topic=image_topic, depth_topic=depth_topic, require_depth=True)
        for index in range(len(source)):
            if max_frames and frames >= max_frames:
                break
            frame = source.load(index)
            if size is not None:
                frame = resize_and_crop(frame, *size)
            fx = frame["fx"] if math.isfinite(frame["fx"]) else None
            pred = estimator.predict(frame["rgb"], fx=fx)
            acc.update(torch.from_numpy(pred), torch.from_numpy(frame["depth"]))
            frames += 1
    result: dict[str, Any] = dict(json_metrics(acc.compute()) or {})
    result.update(frames=frames, pixels=acc.count)
    return result
