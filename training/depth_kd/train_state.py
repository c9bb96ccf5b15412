"""The resumable training state: everything needed to continue a run exactly where it stopped.

One file, ``out/state.safetensors``: model and optimiser tensors as safetensors, and as JSON in its metadata
the config, the optimiser's scalars and param groups, and the loop's state (step, scheduler, AMP scaler,
the data streams' positions, Python/NumPy/torch RNG states, last eval metrics). A mode that trains more than
the student (data-free distillation's transformation network) adds its networks and optimisers as named
``parts``, stored the same way under ``<part>/model.*`` and ``<part>/optim.*``. Written atomically; never
unpickled. Resuming with settings other than :data:`RESUMABLE_CHANGES` is refused (:class:`TrainStateError`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from depth_kd.config import TrainConfig
from depth_kd.metrics import json_metrics
from depth_kd.train_data import Stream
from depth_kd_ros.checkpoint import write_atomically

STATE_NAME = "state.safetensors"
STATE_FORMAT = "depth_kd.train_state/1"
# Settings that may change between a run and its resumption (they do not alter the weights' path...
# except optim.steps, which stretches the schedule when raised).
RESUMABLE_CHANGES = ("optim.steps", "run.eval_every", "run.checkpoint_every", "run.log_every", "run.resume",
                     "run.device", "data.num_workers", "data.eval", "data.eval_max_frames")


_HINT = "delete it, or start over with --no-resume / a new --out"


class TrainStateError(ValueError):
    """A training-state file that cannot be resumed from; the message names the file."""


def loop_state(step: int, scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
               streams: dict[str, Stream | None], metrics: dict[str, float] | None) -> dict[str, Any]:
    """The loop's part of the state (JSON-able): ``extra`` for :func:`save_train_state`."""
    return {"step": step, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "streams": {name: s.state() for name, s in streams.items() if s is not None},
            "rng": _rng_state(), "metrics": json_metrics(metrics)}


def restore_loop_state(state: dict[str, Any], scheduler: torch.optim.lr_scheduler.LRScheduler,
                       scaler: torch.amp.GradScaler, amp: bool, streams: dict[str, Stream | None]) -> None:
    """Put back what :func:`loop_state` saved (the caller takes ``step`` and ``metrics``) and the RNGs."""
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] and amp:  # empty when saved without AMP (e.g. on the CPU)
        scaler.load_state_dict(state["scaler"])
    for name, stream in streams.items():
        if stream is not None:
            stream.load_state(state["streams"][name])
    _set_rng_state(state["rng"])


Parts = dict[str, tuple[nn.Module, torch.optim.Optimizer]]


def save_train_state(path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     extra: dict[str, Any], parts: Parts | None = None) -> None:
    """Model + optimiser tensors (safetensors) with the config and ``extra`` (JSON), written atomically; ``parts``
    (name -> network, optimiser) are saved alongside."""
    tensors, main = _tensors("", model, optimizer)
    meta = {"config": config.to_dict(), **main, **extra, "parts": {}}
    for name, (part_model, part_optimizer) in (parts or {}).items():
        part_tensors, meta["parts"][name] = _tensors(f"{name}/", part_model, part_optimizer)
        tensors.update(part_tensors)
    data = safetensors.torch.save(tensors, metadata={"format": STATE_FORMAT, "state": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def load_train_state(path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     parts: Parts | None = None) -> dict[str, Any]:
    """Restore model, optimiser and ``parts`` from ``path``; returns the JSON part. Raises TrainStateError."""
    meta, tensors = _read(path)
    changed = _config_changes(meta.get("config", {}), config.to_dict())
    if changed:
        raise TrainStateError(f"{path} was written with different settings ({'; '.join(changed)}); resume with "
                              f"the same settings, or {_HINT}")
    try:
        _restore("", tensors, meta, model, optimizer)
        for name, (part_model, part_optimizer) in (parts or {}).items():
            _restore(f"{name}/", tensors, meta.get("parts", {})[name], part_model, part_optimizer)
    except (RuntimeError, ValueError, KeyError) as err:
        raise TrainStateError(f"{path}: does not fit this model/optimiser ({err}); {_HINT}") from err
    return meta


def load_part(path: Path, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The run's config and the weights of its part ``name`` (e.g. the data-free mode's ``"g"``), for tools that
    read a run's state without resuming it. Raises TrainStateError."""
    meta, tensors = _read(path)
    weights = _model_weights(f"{name}/", tensors)
    if not weights:
        raise TrainStateError(f"{path}: no part {name!r} in this training state "
                              f"(parts: {', '.join(meta.get('parts', {})) or 'none'})")
    return meta["config"], weights


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON part and the tensors of a state file; TrainStateError names the file when it is not one."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != STATE_FORMAT:
            raise ValueError(f"format tag {metadata.get('format')!r}, expected {STATE_FORMAT!r}")
        return json.loads(metadata["state"]), safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, KeyError) as err:
        raise TrainStateError(f"{path}: corrupt or unreadable training state ({err}); {_HINT}") from err


def _tensors(prefix: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                                      dict[str, Any]]:
    """``model``'s and ``optimizer``'s tensors under ``prefix``, and the optimiser's JSON part."""
    tensors = {f"{prefix}model.{n}": t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
    optim = optimizer.state_dict()
    scalars = {}
    for pid, entries in optim["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": optim["param_groups"], "optim_scalars": scalars}


def _model_weights(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model state dict that :func:`_tensors` saved under ``prefix``."""
    start = f"{prefix}model."
    return {n[len(start):]: t for n, t in tensors.items() if n.startswith(start)}


def _restore(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], model: nn.Module,
             optimizer: torch.optim.Optimizer) -> None:
    """Load what :func:`_tensors` saved under ``prefix`` into ``model`` and ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith(f"{prefix}optim."):
            _, pid, key = name[len(prefix):].split(".", 2)
            state.setdefault(int(pid), {})[key] = tensor
    for name, value in meta["optim_scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    model.load_state_dict(_model_weights(prefix, tensors))
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _config_changes(saved: dict, current: dict) -> list[str]:
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    return [f"{k}: {flat_saved.get(k)!r} -> {flat_current.get(k)!r}"
            for k in sorted(flat_saved.keys() | flat_current.keys())
            if k not in RESUMABLE_CHANGES and flat_saved.get(k) != flat_current.get(k)]


def _flatten(config: dict) -> dict[str, Any]:
    return {f"{group}.{key}": value for group, values in config.items() for key, value in values.items()}


def _rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-able values (torch's as byte lists)."""
    np_state = np.random.get_state()
    state = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [np_state[0], np_state[1].tolist(), *(v for v in np_state[2:])],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
