"""Distillation modes that build their own batches; the Trainer asks the one its config names.

A mode object turns the run's data into what the Trainer's loss step needs and names what it trains besides
the student:

* ``next_batch(step, micro)`` -> dict with ``rgb`` (the student's input, N x 3 x H x W on the device), ``n_x``
  (leading rows with ground truth ``gt``; 0 for none), ``kd`` and ``kd_rows`` (teacher targets and the rows
  they belong to) and ``log`` (extra detached scalars to log, the same names on every step and rank);
* ``state_parts()`` -> ``{name: (network, optimiser)}``, saved in and restored from the resumable state.

Modes here: ``datafree`` (datafree.py). The four teacher / ground-truth modes of Hu et al. (arXiv 2105.06143)
are still built by :meth:`depth_kd.trainer.Trainer._next_batch` itself.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from depth_kd.config import TrainConfig
from depth_kd.distributed import DistContext
from depth_kd.teachers import Teacher
from depth_kd.train_data import Stream


class DistillMode(Protocol):
    """What the Trainer asks a mode (see the module docstring)."""

    def next_batch(self, step: int, micro: int) -> dict[str, Any]:
        """The batch of optimiser step ``step``, micro-batch ``micro``."""
        ...

    def state_parts(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
        """Networks and optimisers the mode trains besides the student, by name."""
        ...


def open_mode(config: TrainConfig, teacher: Teacher | None, streams: dict[str, Stream | None],
              device: torch.device, ctx: DistContext) -> DistillMode | None:
    """The mode object for ``distill.mode``, or None when the Trainer builds the batches itself."""
    if config.distill.mode == "datafree":
        from depth_kd.datafree import DatafreeMode

        assert teacher is not None and streams["x"] is not None
        return DatafreeMode(config, teacher, streams["x"], device, ctx)
    return None
