"""The training loop: supervised (ground truth) and distillation (teacher) runs of any registry architecture.

:class:`Trainer` only orchestrates. Models come from the registry, frames from ``train_data.py`` (bags
opened per the config, resumable per-rank streams), targets from the bags' depth and from the teacher
that ``teacher_setup.py`` builds (made metric, behind the on-disk cache), losses and metrics from
``losses.py`` / ``metrics.py``, the resumable state from ``train_state.py`` and DDP plumbing from
``distributed.py``. Finished checkpoints are scored by ``evaluate.py``. Below the class: the learning-rate
schedule (:func:`lr_factor`), provenance (:func:`git_revision`) and ImageNet encoder initialisation
(:func:`load_encoder_weights`).

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
datafree       --                      X (simulated), see below
=============  ======================  ==========================

A mode with a mode object (``modes.py``; ``datafree``: Hu et al., arXiv 2208.12464, in ``datafree.py``) builds
its own batches and may train networks besides the student (saved in the training state); the Trainer asks it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
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
from depth_kd.augment import paste, random_views, sample_mix, views_intrinsics, warp
from depth_kd.config import ConfigError, TrainConfig
from depth_kd.data import FrameDataset, TrainingTransform
from depth_kd.distributed import DistContext, all_reduce_sum, barrier
from depth_kd.losses import build_loss
from depth_kd.metrics import METRIC_NAMES, DepthMetricAccumulator, json_metrics
from depth_kd.modes import open_mode
from depth_kd.teacher_setup import open_teacher
from depth_kd.teachers import CacheKey, predict_cached
from depth_kd.train_data import Stream, open_sources, open_train_sources
from depth_kd.train_state import STATE_NAME, load_train_state, loop_state, restore_loop_state, save_train_state
from depth_kd_ros.checkpoint import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, save_checkpoint
from depth_kd_ros.image_codec import colorize_depth
from depth_kd_ros.models import build_model

logger = logging.getLogger(__name__)

FINAL_NAME = "final.safetensors"
_IMAGES_SHOWN = 4


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
        self.teacher, self.teacher_record, self.cache = open_teacher(config, device, self.x_data)
        self.mode = open_mode(config, self.teacher, self._streams(), device, self.ctx)
        self.focal_px = self._canonical_focal()

        self._last: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None  # for TensorBoard images
        self._resume()
        self.writer = SummaryWriter(str(self.out / "tb")) if self.ctx.is_main else None

    # ---- set-up -----------------------------------------------------------------------------------

    def _open_data(self) -> None:
        c, mode = self.config, self.config.distill.mode
        transform = TrainingTransform(c.model.height, c.model.width)
        b = c.optim.batch_size
        self.n_aux = {"supervised": 0, "kd_x": 0, "kd_u": b, "datafree": 0,
                      "kd_xu": min(b - 1, max(1, round(c.distill.aux_share * b)))}[mode]
        self.n_x = b - self.n_aux
        pin = self.device.type == "cuda"
        self.x_data = FrameDataset(open_train_sources(c), transform)
        self.u_data = FrameDataset(open_sources(c.data.aux, c, None), transform)
        self.eval_data = FrameDataset(open_sources(c.data.eval, c, c.data.depth_topic), transform)
        self.x_stream = (Stream(self.x_data, self.n_x, c.run.seed, self.ctx, c.data.num_workers, pin)
                         if self.n_x else None)
        self.u_stream = (Stream(self.u_data, self.n_aux, c.run.seed + 1, self.ctx, c.data.num_workers, pin)
                         if self.n_aux else None)
        logger.info("mode %s: %d X frames, %d U frames, %d eval frames; per micro-batch %d from X, %d from U",
                    mode, len(self.x_data), len(self.u_data), len(self.eval_data), self.n_x, self.n_aux)

    def _streams(self) -> dict[str, Stream | None]:
        """The data streams by the names the training state keeps them under."""
        return {"x": self.x_stream, "u": self.u_stream}

    def _state_parts(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
        """What the mode object trains besides the student (saved in the training state)."""
        return self.mode.state_parts() if self.mode is not None else {}

    def _canonical_focal(self) -> float | None:
        """fx (pixels, at the training width) of the canonical camera that all targets are given for.

        The teacher's own camera when it declares one (its targets then need no rescaling), else the median fx of
        the training frames (as recorded in their CameraInfo), else None (no rescaling anywhere).
        """
        if self.teacher is not None and self.teacher.focal_norm:
            return float(self.teacher.focal_norm * self.config.model.width)
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
            logger.info("training bags have different focal lengths at the training size (%s); targets are "
                        "rescaled to the median", ", ".join(f"{v:.1f}" for v in finite))
        return float(np.median(finite))

    def _resume(self) -> None:
        path, policy = self.out / STATE_NAME, self.config.run.resume
        if policy == "never" or (policy == "auto" and not path.exists()):
            return
        if not path.exists():
            raise ConfigError(f"--resume: no training state at {path}")
        state = load_train_state(path, self.config, self.net, self.optimizer, self._state_parts())
        restore_loop_state(state, self.scheduler, self.scaler, self.amp, self._streams())
        self.step, self.last_metrics = state["step"], state.get("metrics")
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
        if self.config.model.freeze_encoder_bn:
            for module in self.net.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        accum = self.config.optim.grad_accum
        totals: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = self._next_batch(micro)
            sync = micro == accum - 1 or not self.ctx.enabled
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                    pred = self.model(self._normalise(batch["rgb"]))
                total, terms = self._losses(pred.float(), batch)
                self.scaler.scale(total / accum).backward()
            terms.update(batch.get("log", {}))
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

    def _next_batch(self, micro: int = 0) -> dict[str, Any]:
        """RGB of X then U frames on the device, X's ground truth, and the teacher's targets where needed.

        With augmentation on, every frame becomes a random view (augment.py) and its targets follow it. All
        targets are then expressed for the canonical camera (:meth:`_canonical_factors`). A mode object builds
        the batch itself (modes.py).
        """
        if self.mode is not None:
            return self.mode.next_batch(self.step, micro)
        c, mode = self.config, self.config.distill.mode
        parts = [s.next() for s in (self.x_stream, self.u_stream) if s is not None]
        plain = torch.cat([p["rgb"] for p in parts]).to(self.device, non_blocking=True)
        intrinsics = torch.cat([p["intrinsics"] for p in parts])
        a = c.augment
        rgb, views = random_views(plain, a.scale_max, a.flip, a.colour)
        intrinsics = views_intrinsics(intrinsics, views, c.model.height, c.model.width)
        factors = self._canonical_factors(intrinsics).to(self.device).view(-1, 1, 1, 1)
        # The last batch of an epoch may be short, so rows are counted from what arrived, not from n_x.
        n_x = len(parts[0]["rgb"]) if self.x_stream is not None else 0
        # Only unlabeled rows are mixed: a labeled row's ground truth would not follow a pasted box.
        mix = sample_mix(len(rgb) - n_x, c.model.height, c.model.width, a.mix) if a.mix else None
        if mix is not None:
            rgb = torch.cat([rgb[:n_x], paste(rgb[n_x:], mix)])
        batch: dict[str, Any] = {"rgb": rgb, "n_x": n_x}
        if self.x_stream is not None:
            gt = warp(parts[0]["depth"].to(self.device, non_blocking=True), views.rows(0, n_x), "nearest")
            batch["gt"] = gt * factors[:n_x]
        if mode != "supervised":
            kd_rows = slice(0, len(rgb)) if mode in ("kd_x", "kd_xu") else slice(n_x, len(rgb))
            if c.distill.online_teacher:  # the teacher labels the very view the student sees
                kd = self.teacher.predict(rgb[kd_rows]).to(self.device)
            else:
                keys = [CacheKey(k, t, int(s)) for p in parts
                        for k, t, s in zip(p["key"], p["topic"], p["stamp_ns"], strict=True)][kd_rows]
                kd = predict_cached(self.teacher, self.cache, keys, plain[kd_rows]).to(self.device)
                # A view zoomed by s is a camera with s times the focal length: the teacher would call it s times
                # nearer, as it does when it labels the view itself (and as ground truth's factor says).
                kd_views = views.rows(kd_rows.start, kd_rows.stop)
                kd = warp(kd, kd_views) / kd_views.scale.to(kd).view(-1, 1, 1, 1)
                if mix is not None:  # the unlabeled rows' targets get the same boxes as their pixels
                    first_u = n_x - kd_rows.start
                    kd = torch.cat([kd[:first_u], paste(kd[first_u:], mix)])
            batch["kd_rows"] = kd_rows
            batch["kd"] = kd  # already for the canonical camera: the teacher's own (see _canonical_focal)
        return batch

    def _canonical_factors(self, intrinsics: torch.Tensor) -> torch.Tensor:
        """Per frame, what turns its metric depth into depth for the canonical camera (fx = focal_px).

        A network cannot see the focal length, so all targets are given for one camera, the one the checkpoint
        records; the node multiplies by fx_camera / focal_px to undo it. Depth scales with the focal length
        (an object twice as big in the image looks half as far), so the factor is focal_px / fx of the frame
        (of the view, after zooming). Frames of unknown fx are taken to be canonical (factor 1).
        """
        if self.focal_px is None:
            return torch.ones(len(intrinsics))
        fx = intrinsics[:, 0]
        return torch.where(torch.isfinite(fx) & (fx > 0), self.focal_px / fx, torch.ones_like(fx))

    def _losses(self, pred: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        k, m = self.config.distill, self.config.model
        total = pred.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        if "gt" in batch and k.mode != "kd_u":
            gt = batch["gt"]
            in_range = (gt >= m.min_depth) & (gt <= m.max_depth)
            result = self.loss_fn(pred[: batch["n_x"]], gt, in_range)
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
            extra = loop_state(self.step, self.scheduler, self.scaler, self._streams(), self.last_metrics)
            save_train_state(path, config=self.config, model=self.net, optimizer=self.optimizer, extra=extra,
                             parts=self._state_parts())
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
            "teacher": self.teacher_record, "eval": json_metrics(self.last_metrics),
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_encoder_weights(net: nn.Module, path: Path) -> None:
    """Initialise ``net.encoder`` from a torchvision ImageNet state dict (the paper's starting point).

    The encoders keep torchvision's module names, so every encoder tensor must be found there with its shape
    (classifier / fc heads and later blocks are ignored). Read with ``weights_only=True`` or as safetensors:
    never unpickled.
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
    missing = [k for k in own if k not in matched]
    if missing:  # a partial match would silently train a half-random encoder
        raise ConfigError(f"model.encoder_weights: {path} matches only {len(matched)} of the encoder's {len(own)} "
                          f"tensors (first missing or of another shape: {', '.join(missing[:3])}); is it the "
                          "torchvision ImageNet model for this architecture and width?")
    net.encoder.load_state_dict(matched)
    logger.info("encoder initialised from %s (%d tensors)", path, len(matched))
