"""A training run that can die right after writing its training state at a chosen step, for the resume tests
(test_resume.py, test_datafree.py). Imported as ``killed_run`` (test/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch

from depth_kd.config import TrainConfig
from depth_kd.trainer import Trainer


class Killed(Exception):
    """Stands in for the process dying."""


def run(config: TrainConfig, kill_at: int | None = None) -> Path:
    """Train to the end (returns the final checkpoint), or raise Killed once the state of step ``kill_at`` is
    written."""
    trainer = Trainer(config, torch.device("cpu"))
    if kill_at is not None:
        save = trainer.save_state

        def save_then_die() -> Path:
            path = save()
            if trainer.step == kill_at:
                raise Killed
            return path

        trainer.save_state = save_then_die
    return trainer.train()
