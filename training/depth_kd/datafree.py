"""Data-free distillation (Hu et al., "Data-free Dense Depth Distillation", arXiv 2208.12464): the student learns
from the teacher on simulated images only, for a teacher whose training data cannot be had.

One micro-batch: simulated frames (data.train) -> object-wise mixing (mixing.py) -> the run's random views
(augment.py) -> the transformation network G (transform_net.py), after ``g_steps`` updates of G on this very
batch -> the teacher labels G's output online -> the Trainer's distillation loss between student and teacher
on G's output. The simulated depth is never a target; it only orders occlusions when mixing.

G is trained to make the teacher's BatchNorm layers see their running statistics (bn_stats.py), i.e. images
like the teacher's training images, with ``content_weight`` x L1(G(x), x) keeping the scene the same: loss_G =
``bn_weight`` x BN-statistics loss + ``content_weight`` x L1. G and the student alternate (G first), G with its
own Adam at a constant ``g_lr``; under DDP, G is wrapped in DistributedDataParallel so its gradients are
averaged over ranks. G's weights and optimiser are part of the resumable state (``state_parts``). Logged:
``g_bn`` and ``g_content`` (G's loss terms at its last update of the step) and, with mixing, ``mix_share``
(the share of pasted pixels); a KD loss that climbs while ``g_bn`` falls means G is making images the teacher
cannot read (raise ``content_weight`` or lower ``g_bound``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from depth_kd.augment import random_views
from depth_kd.bn_stats import BatchNormStatistics
from depth_kd.config import ConfigError, TrainConfig
from depth_kd.distributed import DistContext
from depth_kd.mixing import MixSettings, mix_objects, mix_rng
from depth_kd.teachers import Teacher
from depth_kd.train_data import Stream
from depth_kd.transform_net import TransformNet

logger = logging.getLogger(__name__)


def teacher_statistics(teacher: Teacher) -> BatchNormStatistics:
    """Hooks on the teacher's BatchNorm layers, its parameters frozen; ConfigError for a teacher without them."""
    network = teacher.network
    hint = (f"the transformation network matches the teacher's BatchNorm statistics, but teacher {teacher.name} "
            f"({type(teacher).__name__}) {{}}; object-wise mixing still works without it: "
            "--set datafree.transform=false")
    if network is None:
        raise ConfigError(hint.format("does not run in torch, so its layers cannot be read"))
    try:
        stats = BatchNormStatistics(network)
    except ValueError:
        raise ConfigError(hint.format("has no BatchNorm2d layers with running statistics")) from None
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    logger.info("data-free: G matches the statistics of %d BatchNorm layers of %s", len(stats.layers), teacher.name)
    return stats


class DatafreeMode:
    """The ``datafree`` distillation mode (see the module docstring and modes.py)."""

    def __init__(self, config: TrainConfig, teacher: Teacher, stream: Stream, device: torch.device,
                 ctx: DistContext) -> None:
        f = config.datafree
        self.config, self.teacher, self.stream, self.device, self.ctx = config, teacher, stream, device, ctx
        self.mixing = (MixSettings(f.mix_prob, f.mix_max_objects, f.mix_scale_min, f.mix_scale_max)
                       if f.mixing else None)
        self.g_net: TransformNet | None = None
        if f.transform:
            self.stats = teacher_statistics(teacher)
            self.g_net = TransformNet(f.g_width, f.g_bound).to(device)
            self.g: nn.Module = self.g_net
            if ctx.enabled:
                self.g = DistributedDataParallel(self.g_net, device_ids=[device.index] if device.type == "cuda"
                                                 else None)
            self.g_optimizer = torch.optim.Adam(self.g_net.parameters(), lr=f.g_lr)
        logger.info("data-free distillation: mixing %s, transformation network %s", "on" if f.mixing else "off",
                    "on" if f.transform else "off")

    def next_batch(self, step: int, micro: int) -> dict[str, Any]:
        """Simulated frames, mixed, viewed and transformed, with the teacher's targets for all of them."""
        c = self.config
        part = self.stream.next()
        rgb = part["rgb"].to(self.device, non_blocking=True)
        log: dict[str, torch.Tensor] = {}
        if self.mixing is not None:
            mixed = mix_objects(rgb, part["instances"].to(self.device), part["depth"].to(self.device), self.mixing,
                                mix_rng(c.run.seed, step, micro, self.ctx.rank))
            rgb = mixed.rgb
            log["mix_share"] = mixed.pasted.float().mean()
        a = c.augment
        rgb, _ = random_views(rgb, a.scale_max, a.flip, a.colour)
        if self.g_net is not None:
            log.update(self.update_g(rgb))
            with torch.no_grad():
                rgb = self.g(rgb)
        kd = self.teacher.predict(rgb).to(self.device)
        return {"rgb": rgb, "n_x": 0, "kd": kd, "kd_rows": slice(0, len(rgb)), "log": log}

    def g_loss(self, rgb: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss on ``rgb`` (with its graph) and its terms (detached)."""
        f = self.config.datafree
        out = self.g(rgb)
        with self.stats.recording():
            self.teacher.forward(out)
        bn = self.stats.loss()
        content = (out - rgb).abs().mean()
        return f.bn_weight * bn + f.content_weight * content, {"g_bn": bn.detach(), "g_content": content.detach()}

    def update_g(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``g_steps`` Adam steps of G on ``rgb``; returns the terms of the last one."""
        terms: dict[str, torch.Tensor] = {}
        for _ in range(self.config.datafree.g_steps):
            total, terms = self.g_loss(rgb)
            self.g_optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.g_optimizer.step()
        return terms

    def state_parts(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
        """G and its optimiser, when G is on."""
        return {} if self.g_net is None else {"g": (self.g_net, self.g_optimizer)}
