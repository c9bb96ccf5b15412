"""Data-parallel set-up for torchrun: which rank this is, its device, and the few collectives training needs.

Launched plainly (``WORLD_SIZE`` unset or 1) everything here is a no-op, so the trainer has one code path.
Under ``torchrun --nproc_per_node=N`` the process group is initialised with NCCL when training on CUDA
(each rank on ``cuda:LOCAL_RANK``) and Gloo on the CPU. Only rank 0 writes files, logs progress and prints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from depth_kd_ros.backends.torch_backend import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the one rank that writes checkpoints, TensorBoard, progress and stdout."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one rank (a process group exists)."""
        return self.world_size > 1


def setup(device_spec: str) -> tuple[DistContext, torch.device]:
    """Read torchrun's environment, initialise the process group if needed, and pick this rank's device.

    ``device_spec`` is the config's ``run.device`` (``auto``/``cpu``/``cuda``/``cuda:N``); under torchrun a
    CUDA device becomes ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_spec)
    if world_size <= 1:
        return DistContext(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    logger.info("rank %d/%d on %s (%s)", rank, world_size, device, backend)
    return DistContext(rank, world_size, local_rank), device


def teardown(ctx: DistContext) -> None:
    """Destroy the process group (if this job has one)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum ``tensor`` over ranks (returned on the tensor's original device; no-op in a single process).

    NCCL needs the tensor on the GPU, so it travels via ``device`` there.
    """
    if not ctx.enabled:
        return tensor
    home = tensor.device
    work = tensor.to(device) if dist.get_backend() == "nccl" else tensor.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(home)
