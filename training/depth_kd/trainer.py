"""The training loop: supervised (ground truth) and distillation (teacher) runs of any registry architecture.

:class:`Trainer` only orchestrates. Models come from the registry, frames from ``depth_kd.data``, targets
from the bags' depth and from ``depth_kd.teachers`` (through the on-disk cache), losses and metrics from
``losses.py`` / ``metrics.py``, and DDP plumbing from ``distributed.py``. Below the class, in this order:
ImageNet encoder initialisation (:func:`load_encoder_weights`), teacher set-up (:func:`load_teacher`,
:func:`make_metric`), the resumable training state (:func:`save_train_state`, :func:`load_train_state`:
safetensors tensors + JSON, written atomically, never unpickled) and :func:`evaluate_checkpoint`, which
scores a finished node checkpoint through the node's own inference path.

One optimiser step = ``optim.grad_accum`` micro-batches. A micro-batch holds ``batch_size`` frames: all
from X (supervised, kd_x), all from U (kd_u), or ``round(aux_share * batch_size)`` from U and the rest
from X (kd_xu). Losses per mode (Hu et al., arXiv 2105.06143):

=============  ======================  ==========================
mode           ground-truth loss       distillation loss
=============  ======================  ==========================
supervised     X                       --
kd_x           X                       X
kd_u           --                      U
kd_xu          X                       X and U
=============  ======================  ==========================
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from depth_kd import __version__
from depth_kd.config import ConfigError, DistillConfig, TrainConfig
from depth_kd.data import BagSource, EpochSampler, FrameDataset, TrainingTransform, bag_topics, resize_and_crop
from depth_kd.data.bags import COMPRESSED_IMAGE, IMAGE
from depth_kd.distributed import DistContext, all_reduce_sum, barrier
from depth_kd.losses import build_loss
from depth_kd.metrics import METRIC_NAMES, DepthMetricAccumulator
from depth_kd.teachers import (
    CacheKey,
    MffTeacher,
    ScaledTeacher,
    Teacher,
    TeacherCache,
    fit_global_scale_shift,
    predict_cached,
)
from depth_kd_ros.checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, save_checkpoint
from depth_kd_ros.image_codec import colorize_depth
from depth_kd_ros.inference import DepthEstimator
from depth_kd_ros.models import build_model

logger = logging.getLogger(__name__)

FINAL_NAME = "final.safetensors"
STATE_NAME = "state.safetensors"
_IMAGES_SHOWN = 4


def pick_image_topic(path: str | Path, topic: str | None, depth_topic: str | None) -> str | None:
    """``topic``, or else the bag's only image topic that is not ``depth_topic`` (None: let BagSource decide)."""
    if topic is not None:
        return topic
    images = [name for name, (kind, _) in bag_topics(path).items()
              if kind in (IMAGE, COMPRESSED_IMAGE) and name != depth_topic]
    return images[0] if len(images) == 1 else None


def open_sources(paths: list[str], config: TrainConfig, depth_topic: str | None) -> list[BagSource]:
    """One :class:`BagSource` per bag; with ``depth_topic`` only frames that have depth are kept."""
    d = config.data
    return [BagSource(p, pick_image_topic(p, d.image_topic, d.depth_topic), depth_topic=depth_topic,
                      camera_info_topic=d.camera_info_topic, stride=d.stride, depth_tolerance_s=d.depth_tolerance_s,
                      require_depth=depth_topic is not None)
            for p in paths]


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


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``optim.lr`` at optimiser step ``step``: linear warm-up, then the schedule."""
    o = config.optim
    if step < o.warmup_steps:
        return (step + 1) / (o.warmup_steps + 1)
    progress = min(1.0, (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps))
    if o.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if o.schedule == "poly":
        return (1.0 - progress) ** o.poly_power
    return 1.0


def git_revision() -> str | None:
    """The repository's HEAD commit (with ``-dirty`` if the tree has changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


class Trainer:
    """One training run as described by ``config`` on ``device`` (see the module docstring).

    ``command`` (the command line) goes into the checkpoints' provenance. ``ctx`` comes from
    :func:`depth_kd.distributed.setup`; the default is a single process.
    """

    def __init__(self, config: TrainConfig, device: torch.device, ctx: DistContext | None = None,
                 command: list[str] | None = None) -> None:
        config.validate()
        self.config, self.device, self.ctx = config, device, ctx or DistContext()
        self.command = command or []
        self.out = Path(config.run.out)
        self.step = 0
        self.last_metrics: dict[str, float] | None = None
        c, m = config, config.model
        if c.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = device.type == "cuda" and not c.run.deterministic
        _seed_everything(c.run.seed)

        self.net = build_model(m.arch, m.arch_config)
        if m.encoder_weights:
            load_encoder_weights(self.net, Path(m.encoder_weights))
        self.net.to(device)
        self.model: nn.Module = self.net
        if self.ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.optim.lr, weight_decay=c.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, c))
        self.amp = c.optim.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = build_loss(c.distill.loss)
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

        self._open_data()
        self.teacher, self.teacher_record = self._open_teacher()
        self.focal_px = self._training_focal()

        self._last: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None  # for TensorBoard images
        self._resume()
        self.writer = SummaryWriter(str(self.out / "tb")) if self.ctx.is_main else None

    # ---- set-up -----------------------------------------------------------------------------------

    def _open_data(self) -> None:
        c, mode = self.config, self.config.distill.mode
        transform = TrainingTransform(c.model.height, c.model.width)
        b = c.optim.batch_size
        self.n_aux = {"supervised": 0, "kd_x": 0, "kd_u": b,
                      "kd_xu": min(b - 1, max(1, round(c.distill.aux_share * b)))}[mode]
        self.n_x = b - self.n_aux
        pin = self.device.type == "cuda"
        self.x_data = FrameDataset(open_sources(c.data.train, c, c.data.depth_topic), transform)
        self.u_data = FrameDataset(open_sources(c.data.aux, c, None), transform)
        self.eval_data = FrameDataset(open_sources(c.data.eval, c, c.data.depth_topic), transform)
        self.x_stream = (Stream(self.x_data, self.n_x, c.run.seed, self.ctx, c.data.num_workers, pin)
                         if self.n_x else None)
        self.u_stream = (Stream(self.u_data, self.n_aux, c.run.seed + 1, self.ctx, c.data.num_workers, pin)
                         if self.n_aux else None)
        logger.info("mode %s: %d X frames, %d U frames, %d eval frames; per micro-batch %d from X, %d from U",
                    mode, len(self.x_data), len(self.u_data), len(self.eval_data), self.n_x, self.n_aux)

    def _open_teacher(self) -> tuple[Teacher | None, dict | None]:
        k = self.config.distill
        if k.mode == "supervised":
            return None, None
        teacher, record = load_teacher(k, self.device)
        if teacher.output_kind == "relative_inverse":
            teacher, fit = make_metric(teacher, self.config, self.x_data)
            record.update(fit)
        self.cache = TeacherCache(self.config.cache_dir, teacher.cache_id)
        record["cache_id"] = teacher.cache_id
        return teacher, record

    def _training_focal(self) -> float | None:
        """fx (pixels, at the training width) of the training frames: the focal length the scale assumes."""
        sources = self.x_data.sources if self.n_x else self.u_data.sources
        data = self.x_data if self.n_x else self.u_data
        values, start = [], 0
        for source in sources:
            values.append(float(data[start]["intrinsics"][0]))
            start += len(source)
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            logger.warning("no CameraInfo in the training bags: the checkpoint records no focal length, so the "
                           "node cannot rescale depth for other lenses")
            return None
        if max(finite) > 1.01 * min(finite):
            logger.warning("training bags have different focal lengths at the training size (%s); recording "
                           "the median", ", ".join(f"{v:.1f}" for v in finite))
        return float(np.median(finite))

    def _resume(self) -> None:
        path, policy = self.out / STATE_NAME, self.config.run.resume
        if policy == "never" or (policy == "auto" and not path.exists()):
            return
        if not path.exists():
            raise ConfigError(f"--resume: no training state at {path}")
        state = load_train_state(path, self.config, self.net, self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.amp:  # empty when saved without AMP (e.g. on the CPU)
            self.scaler.load_state_dict(state["scaler"])
        for name, stream in (("x", self.x_stream), ("u", self.u_stream)):
            if stream is not None:
                stream.load_state(state["streams"][name])
        self.step, self.last_metrics = state["step"], state.get("metrics")
        _set_rng_state(state["rng"])
        logger.info("resumed from %s at step %d", path, self.step)

    # ---- the loop ---------------------------------------------------------------------------------

    def train(self) -> Path:
        """Run to ``optim.steps``; returns the final node-format checkpoint (written by rank 0)."""
        steps = self.config.optim.steps
        with logging_redirect_tqdm():  # log lines do not tear the progress bar
            return self._train(steps)

    def _train(self, steps: int) -> Path:
        r = self.config.run
        bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", disable=not self.ctx.is_main,
                   dynamic_ncols=True)
        sums: dict[str, torch.Tensor] = {}
        summed = 0
        while self.step < steps:
            terms = self.train_step()
            self.step += 1
            bar.update(1)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            summed += 1
            if self.step % r.log_every == 0 or self.step == steps:
                logged = self._log_losses(sums, summed)
                bar.set_postfix(loss=f"{logged['loss/total']:.4f}")
                sums, summed = {}, 0
            if r.eval_every and self.step % r.eval_every == 0 and self.step < steps:
                self.evaluate()
            if r.checkpoint_every and self.step % r.checkpoint_every == 0 and self.step < steps:
                self.save_state()
        bar.close()
        self.evaluate()
        self.save_state()
        final = self.save_final()
        if self.writer:
            self.writer.close()
        return final

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimiser step over ``grad_accum`` micro-batches; returns the detached loss terms.

        ``train`` calls it and counts ``self.step``; call it directly only to time or inspect a step.
        """
        self.model.train()
        accum = self.config.optim.grad_accum
        totals: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = self._next_batch()
            sync = micro == accum - 1 or not self.ctx.enabled
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                    pred = self.model(self._normalise(batch["rgb"]))
                total, terms = self._losses(pred.float(), batch)
                self.scaler.scale(total / accum).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value / accum
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._last = (batch["rgb"], batch.get("gt"), pred.detach())
        return totals

    def _next_batch(self) -> dict[str, Any]:
        """RGB of X then U frames on the device, X's ground truth, and the teacher's targets where needed."""
        mode = self.config.distill.mode
        parts = [s.next() for s in (self.x_stream, self.u_stream) if s is not None]
        rgb = torch.cat([p["rgb"] for p in parts]).to(self.device, non_blocking=True)
        batch: dict[str, Any] = {"rgb": rgb}
        if self.x_stream is not None:
            batch["gt"] = parts[0]["depth"].to(self.device, non_blocking=True)
        if mode != "supervised":
            kd_rows = slice(0, len(rgb)) if mode in ("kd_x", "kd_xu") else slice(self.n_x, len(rgb))
            keys = [CacheKey(k, t, int(s)) for p in parts
                    for k, t, s in zip(p["key"], p["topic"], p["stamp_ns"], strict=True)][kd_rows]
            batch["kd_rows"] = kd_rows
            batch["kd"] = predict_cached(self.teacher, self.cache, keys, rgb[kd_rows]).to(self.device)
        return batch

    def _losses(self, pred: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        k, m = self.config.distill, self.config.model
        total = pred.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        if "gt" in batch and k.mode != "kd_u":
            gt = batch["gt"]
            in_range = (gt >= m.min_depth) & (gt <= m.max_depth)
            result = self.loss_fn(pred[: self.n_x], gt, in_range)
            total = total + k.gt_weight * result.total
            terms["gt"] = result.total.detach()
        if "kd" in batch:
            result = self.loss_fn(pred[batch["kd_rows"]], batch["kd"])
            total = total + k.kd_weight * result.total
            terms["kd"] = result.total.detach()
        terms["total"] = total.detach()
        return total, terms

    def _normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - self._mean) / self._std

    # ---- evaluation, logging, checkpoints ---------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """Metrics of the current weights on ``data.eval`` (pooled over all ranks); None without eval data."""
        if len(self.eval_data) == 0:
            if self._last is not None:
                self._log_images(*self._last, "train")
            return None
        c = self.config
        self.net.eval()
        limit = c.data.eval_max_frames or len(self.eval_data)
        indices = list(range(min(limit, len(self.eval_data))))[self.ctx.rank :: self.ctx.world_size]
        loader = DataLoader(self.eval_data, c.optim.batch_size, sampler=indices, num_workers=c.data.num_workers)
        acc = DepthMetricAccumulator(c.model.min_depth, c.model.max_depth)
        for i, batch in enumerate(loader):
            rgb, gt = batch["rgb"].to(self.device), batch["depth"].to(self.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                pred = self.net(self._normalise(rgb)).float()
            acc.update(pred, gt)
            if i == 0:
                self._log_images(rgb, gt, pred, "eval")
        acc.load_state(all_reduce_sum(self.ctx, acc.state(), self.device))
        metrics = {**acc.compute(), "pixels": float(acc.count)}  # pooled over every rank's frames
        self.last_metrics = metrics
        if self.writer:
            for name in METRIC_NAMES:
                self.writer.add_scalar(f"eval/{name}", metrics[name], self.step)
        logger.info("step %d eval: %s", self.step, " ".join(f"{n}={metrics[n]:.4f}" for n in METRIC_NAMES))
        return metrics

    def _log_losses(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        names = sorted(sums)
        values = torch.stack([torch.as_tensor(sums[n], dtype=torch.float32, device=self.device) for n in names])
        values = all_reduce_sum(self.ctx, values / count, self.device) / self.ctx.world_size
        logged = {f"loss/{n}": float(v) for n, v in zip(names, values.tolist(), strict=True)}
        logged["lr"] = self.scheduler.get_last_lr()[0]
        if self.writer:
            for name, value in logged.items():
                self.writer.add_scalar(name, value, self.step)
        logger.debug("step %d %s", self.step, logged)
        return logged

    def _log_images(self, rgb: torch.Tensor, gt: torch.Tensor | None, pred: torch.Tensor, tag: str) -> None:
        """A few rows of image | target | prediction, colour-mapped with the node's colour map."""
        if not self.writer:
            return
        m, rows = self.config.model, []
        for i in range(min(_IMAGES_SHOWN, len(pred))):
            image = (rgb[i].permute(1, 2, 0).float().cpu().numpy() * 255).astype(np.uint8)
            target = gt[i, 0].cpu().numpy() if gt is not None and i < len(gt) else np.full(image.shape[:2], np.nan)
            panels = [image] + [colorize_depth(d, m.min_depth, m.max_depth)[..., ::-1]
                                for d in (target, pred[i, 0].float().cpu().numpy())]
            rows.append(np.concatenate(panels, axis=1))
        self.writer.add_image(f"{tag}/image_target_prediction", np.concatenate(rows, axis=0), self.step,
                              dataformats="HWC")

    def save_state(self) -> Path:
        """Write the resumable training state (rank 0, atomically) and wait for every rank."""
        path = self.out / STATE_NAME
        if self.ctx.is_main:
            streams = {name: s.state() for name, s in (("x", self.x_stream), ("u", self.u_stream)) if s}
            save_train_state(path, config=self.config, model=self.net, optimizer=self.optimizer, extra={
                "step": self.step, "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "streams": streams, "rng": _rng_state(), "metrics": _json_metrics(self.last_metrics)})
            logger.info("step %d: training state written to %s", self.step, path)
        barrier(self.ctx)
        return path

    def model_info(self) -> ModelInfo:
        """What the node needs to run these weights, with the provenance of this run."""
        c, m = self.config, self.config.model
        provenance = {
            "tool": f"depth_kd {__version__}", "command": self.command, "git_revision": git_revision(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": c.to_dict(), "steps": self.step, "world_size": self.ctx.world_size,
            "frames": {"train": len(self.x_data), "aux": len(self.u_data), "eval": len(self.eval_data)},
            "teacher": self.teacher_record, "eval": _json_metrics(self.last_metrics),
        }
        return ModelInfo(arch=m.arch, arch_config=dict(m.arch_config), input_height=m.height, input_width=m.width,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, min_depth=m.min_depth, max_depth=m.max_depth,
                         focal_px=self.focal_px, provenance=provenance)

    def save_final(self) -> Path:
        """Write ``out/final.safetensors`` (node format) and ``out/config.yaml`` on rank 0."""
        path = self.out / FINAL_NAME
        if self.ctx.is_main:
            info = self.model_info()
            save_checkpoint(path, self.net, info)
            header = f"# resolved config of this run; command: {' '.join(self.command) or '(API)'}\n"
            (self.out / "config.yaml").write_text(header + yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            logger.info("final checkpoint: %s", path)
        barrier(self.ctx)
        return path


# ---- helpers -------------------------------------------------------------------------------------


def _json_metrics(metrics: dict[str, float] | None) -> dict[str, float | None] | None:
    """Metrics with NaN as None, so they fit in JSON."""
    return None if metrics is None else {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def load_encoder_weights(net: nn.Module, path: Path) -> None:
    """Initialise ``net.encoder`` from a torchvision ImageNet state dict (the paper's starting point).

    The encoders keep torchvision's module names, so the entries whose names and shapes match are copied
    (classifier / fc heads are left out). Read with ``weights_only=True`` or as safetensors: never unpickled.
    """
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / safetensors errors of every kind
        raise ConfigError(f"model.encoder_weights: cannot read {path}: {err}") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    own = net.encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and torch.is_tensor(v) and v.shape == own[k].shape}
    if len(matched) < 0.9 * len(own):
        raise ConfigError(f"model.encoder_weights: {path} matches only {len(matched)} of the encoder's {len(own)} "
                          "tensors; is it the torchvision ImageNet model for this architecture and width?")
    net.encoder.load_state_dict(matched, strict=False)
    logger.info("encoder initialised from %s (%d tensors)", path, len(matched))


# ---- teachers ------------------------------------------------------------------------------------


def teacher_kind(path: Path, kind: str) -> str:
    """``auto`` -> ``hf`` for a folder, ``onnx`` for a .onnx file, else ``mff`` (a node checkpoint)."""
    if kind != "auto":
        return kind
    if path.is_dir():
        return "hf"
    return "onnx" if path.suffix == ".onnx" else "mff"


def load_teacher(k: DistillConfig, device: torch.device) -> tuple[Teacher, dict[str, Any]]:
    """The teacher named by ``distill.teacher`` and a provenance record of it."""
    path = Path(k.teacher or "")
    if not path.exists():
        raise ConfigError(f"teacher not found: {path}")
    kind = teacher_kind(path, k.teacher_kind)
    output = None if k.teacher_output == "auto" else k.teacher_output
    if kind == "mff":
        if output == "relative_inverse":
            raise ConfigError(f"{path}: a node checkpoint teacher is metric; teacher_output cannot be {output}")
        teacher: Teacher = MffTeacher(path, device)
    elif kind == "hf":
        from depth_kd.teachers.hf import HfTeacher  # transformers is slow to import

        teacher = HfTeacher(path, device, output_kind=output)
    else:
        teacher = _onnx_teacher(path, output, device)
    record = {"path": str(path), "kind": kind, "name": teacher.name, "output_kind": teacher.output_kind,
              "metric": "native" if teacher.output_kind == "metric" else "fitted"}
    return teacher, record


def _onnx_teacher(path: Path, output: str | None, device: torch.device) -> Teacher:
    """An ONNX teacher; a model written by ``depth-kd export`` brings its own ModelInfo (metric, mean/std, size)."""
    import onnxruntime as ort

    from depth_kd.export import onnx_model_info
    from depth_kd.teachers.onnx import OnnxTeacher

    info = onnx_model_info(path)
    if output is None and info is None:
        raise ConfigError(f"{path}: cannot tell whether this ONNX model outputs metric or relative inverse depth; "
                          "pass --teacher-output metric|relative_inverse")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    if info is None:
        return OnnxTeacher(path, output, device=device, providers=providers)
    return OnnxTeacher(path, output or "metric", device=device, providers=providers, mean=info.mean, std=info.std,
                       input_size=(info.input_height, info.input_width))


def make_metric(teacher: Teacher, config: TrainConfig, x_data: FrameDataset) -> tuple[Teacher, dict[str, Any]]:
    """Fit scale/shift of a relative teacher against X's metric depth (``distill.scale_depth_topic``)."""
    k, d = config.distill, config.data
    if not d.train:
        raise ConfigError(f"teacher {teacher.name} outputs relative inverse depth; fitting it to metres needs "
                          "labeled bags X with a metric depth topic (--data)")
    topic = k.scale_depth_topic or d.depth_topic
    data = x_data if topic == d.depth_topic else FrameDataset(open_sources(d.train, config, topic), x_data.transform)
    if len(data) == 0:
        raise ConfigError(f"no frames with depth on {topic} in {d.train} to fit the teacher's scale")
    picks = sorted({int(i) for i in np.linspace(0, len(data) - 1, min(k.scale_fit_frames, len(data)))})
    pairs = []
    for start in range(0, len(picks), config.optim.batch_size):
        samples = [data[i] for i in picks[start : start + config.optim.batch_size]]
        rel = teacher.predict(torch.stack([s["rgb"] for s in samples]).to(teacher.device)).cpu()
        pairs += [(rel[j, 0], s["depth"][0]) for j, s in enumerate(samples)]
    fit = fit_global_scale_shift(pairs, seed=config.run.seed)
    logger.info("teacher %s made metric: depth = 1 / (%.6g * out + %.6g), %d of %d samples kept, RMS %.4g 1/m",
                teacher.name, fit.scale, fit.shift, fit.n_inliers, fit.n_samples, fit.rms_inverse)
    scaled = ScaledTeacher(teacher, fit, max_depth=config.model.max_depth)
    return scaled, {"scale_shift": fit.to_record(), "fit_frames": len(picks), "fit_topic": topic}


# ---- resumable training state --------------------------------------------------------------------

STATE_FORMAT = "depth_kd.train_state/1"
# Settings that may change between a run and its resumption (they do not alter the weights' path...
# except optim.steps, which stretches the schedule when raised).
RESUMABLE_CHANGES = ("optim.steps", "run.eval_every", "run.checkpoint_every", "run.log_every", "run.resume",
                     "run.device", "data.num_workers", "data.eval", "data.eval_max_frames")


class TrainStateError(ValueError):
    """A training-state file that cannot be resumed from; the message names the file."""


def save_train_state(path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                     extra: dict[str, Any]) -> None:
    """Model + optimiser tensors (safetensors) with the config and ``extra`` (JSON), written atomically."""
    tensors = {f"model.{n}": t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
    optim = optimizer.state_dict()
    scalars = {}
    for pid, entries in optim["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {"config": config.to_dict(), "param_groups": optim["param_groups"], "optim_scalars": scalars, **extra}
    data = safetensors.torch.save(tensors, metadata={"format": STATE_FORMAT, "state": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_train_state(path: Path, config: TrainConfig, model: nn.Module,
                     optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimiser from ``path``; returns the JSON part. Raises TrainStateError."""
    hint = "delete it, or start over with --no-resume / a new --out"
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != STATE_FORMAT:
            raise ValueError(f"format tag {metadata.get('format')!r}, expected {STATE_FORMAT!r}")
        meta = json.loads(metadata["state"])
        tensors = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, KeyError) as err:
        raise TrainStateError(f"{path}: corrupt or unreadable training state ({err}); {hint}") from err
    changed = _config_changes(meta.get("config", {}), config.to_dict())
    if changed:
        raise TrainStateError(f"{path} was written with different settings ({'; '.join(changed)}); resume with "
                              f"the same settings, or {hint}")
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = tensor
    for name, value in meta["optim_scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    try:
        model.load_state_dict({n[len("model."):]: t for n, t in tensors.items() if n.startswith("model.")})
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as err:
        raise TrainStateError(f"{path}: does not fit this model/optimiser ({err}); {hint}") from err
    return meta


def _config_changes(saved: dict, current: dict) -> list[str]:
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    return [f"{k}: {flat_saved.get(k)!r} -> {flat_current.get(k)!r}"
            for k in sorted(flat_saved.keys() | flat_current.keys())
            if k not in RESUMABLE_CHANGES and flat_saved.get(k) != flat_current.get(k)]


def _flatten(config: dict) -> dict[str, Any]:
    return {f"{group}.{key}": value for group, values in config.items() for key, value in values.items()}


# ---- evaluating a finished checkpoint ------------------------------------------------------------


def evaluate_checkpoint(checkpoint: str | Path, bags: list[str], depth_topic: str, image_topic: str | None = None,
                        size: tuple[int, int] | None = None, device: str = "auto",
                        max_frames: int = 0) -> dict[str, Any]:
    """Metrics of a node-format checkpoint on ``bags`` through the node's own inference path.

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
        topic = pick_image_topic(bag, image_topic, depth_topic)
        source = BagSource(bag, topic, depth_topic=depth_topic, require_depth=True)
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
    result: dict[str, Any] = dict(_json_metrics(acc.compute()) or {})
    result.update(frames=frames, pixels=acc.count)
    return result
