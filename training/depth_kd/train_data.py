"""The run's frames (bags and image folders, opened as the config says) and endless, resumable per-rank batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from depth_kd.config import ConfigError, TrainConfig
from depth_kd.data import BagSource, EpochSampler, FrameDataset, ImageFolder, open_source
from depth_kd.distributed import DistContext


def open_sources(paths: list[str], config: TrainConfig, depth_topic: str | None, require_depth: bool | None = None,
                 instances_topic: str | None = None) -> list[BagSource | ImageFolder]:
    """One source per data path (bag or image folder, ``#frames=``/``#time=`` allowed; see data.sources).

    With ``depth_topic`` only frames that have depth are kept, unless ``require_depth`` is False. With
    ``instances_topic`` frames carry their instance ids. Topics are chosen by BagSource's one rule.
    """
    d = config.data
    require = depth_topic is not None if require_depth is None else require_depth
    return [open_source(p, image_topic=d.image_topic, depth_topic=depth_topic, camera_info_topic=d.camera_info_topic,
                        stride=d.stride, depth_tolerance_s=d.depth_tolerance_s, require_depth=require,
                        assumed_fx=d.assumed_fx, instances_topic=instances_topic)
            for p in paths]


def open_train_sources(config: TrainConfig) -> list[BagSource | ImageFolder]:
    """The frames of ``data.train`` as the mode reads them: labeled (with depth) for the teacher / ground-truth
    modes; for ``datafree`` simulated frames whose depth (where present) only orders occlusions when mixing, with
    their instance ids when mixing is on."""
    d = config.data
    if config.distill.mode != "datafree":
        return open_sources(d.train, config, d.depth_topic)
    if not config.datafree.mixing:
        return open_sources(d.train, config, None)
    return open_sources(d.train, config, d.depth_topic, require_depth=False, instances_topic=d.instances_topic)


class Stream:
    """Endless, resumable batches of one dataset: epochs of an :class:`EpochSampler`, sharded by rank.

    ``position`` counts the frames this rank has consumed in the current epoch, so a resumed stream replays
    exactly the rest of the epoch (DataLoader prefetching does not count).
    """

    def __init__(self, dataset: FrameDataset, batch_size: int, seed: int, ctx: DistContext,
                 num_workers: int, pin_memory: bool) -> None:
        if len(dataset) == 0:
            raise ConfigError(f"no usable frames in {[s.source for s in dataset.sources]}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.sampler = EpochSampler(len(dataset), seed=seed, rank=ctx.rank, world_size=ctx.world_size)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch, self.position = 0, 0
        self._batches: Iterator[dict] | None = None

    def next(self) -> dict[str, Any]:
        """The next batch (a new epoch starts when this one is used up)."""
        for _ in range(2):
            if self._batches is None:
                self.sampler.set_epoch(self.epoch, start=self.position)
                loader = DataLoader(self.dataset, self.batch_size, sampler=self.sampler,
                                    num_workers=self.num_workers, pin_memory=self.pin_memory,
                                    generator=torch.Generator().manual_seed(self.seed + self.epoch))
                self._batches = iter(loader)
            batch = next(self._batches, None)
            if batch is not None:
                self.position += len(batch["key"])
                return batch
            self._batches, self.epoch, self.position = None, self.epoch + 1, 0
        raise RuntimeError("empty epoch")  # unreachable: datasets are non-empty

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._batches = int(state["epoch"]), int(state["position"]), None
