"""Training configuration: one dataclass per group, loaded from YAML, overridden from the command line.

``TrainConfig`` is the single source of truth for a run (teacher training and distillation alike). It is
loaded with :func:`load_config` (code defaults <- YAML file <- ``--set group.key=value`` overrides), checked
by :meth:`TrainConfig.validate`, and saved as a plain dict (:meth:`TrainConfig.to_dict`) inside every
checkpoint, so a result always carries the exact settings that produced it. Every field has a help string
(``field.metadata["help"]``); training/configs/*.yaml mirror these defaults and a test checks that they agree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODES = ("supervised", "kd_x", "kd_u", "kd_xu", "datafree")
SCHEDULES = ("cosine", "poly", "constant")
TEACHER_KINDS = ("auto", "mff", "hf", "onnx", "tflite")
TEACHER_OUTPUTS = ("auto", "metric", "relative_inverse")
RESUME = ("auto", "always", "never")
# Default topic names (a RealSense-style driver's); absent from a bag, the bag's only candidate is used instead
# (one rule, in depth_kd.data.bags.BagSource). Here, not in bags.py: the CLI parser needs them without rosbags.
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_DEPTH_TOPIC = "/camera/depth/image"
DEFAULT_INSTANCES_TOPIC = "/camera/instances"  # what `depth-kd render` writes (render/record.py)
DEFAULT_OPSET = 17  # lowest ONNX opset ``depth-kd export`` writes (here, not in export.py: the CLI parser needs it)
INT8_COMPARE_FRAMES = 200  # ``depth-kd export --int8`` measures its accuracy on at most this many frames (ditto)
# ``depth-kd export --int8`` keeps the first convolutions (the encoder's stem, on the full-resolution image) float:
# quantised, they moved the default student's AbsRel on real frames by +4 to -12% against float32; kept float, by
# 0 to -3%, at no measured cost in speed (docs/kd_real.md).
FLOAT_CONVS = 3


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names the key or the file."""


def _opt(default: Any, help: str) -> Any:  # noqa: A002  (the argparse word for it)
    """A dataclass field with a help string; mutable defaults are copied per instance."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """What network is trained and at what size."""

    arch: str = _opt("mobilenetv2_mff", "registry architecture: mobilenetv2_mff or mobilenetv2_fast (students), "
                                        "resnet34_mff (teacher)")
    arch_config: dict = _opt({}, "keyword arguments for build_model (e.g. decoder widths)")
    encoder_weights: str | None = _opt(None, "local torchvision ImageNet state dict (.pth/.safetensors) for the "
                                             "encoder, e.g. resnet34-b627a593.pth; null = random init")
    freeze_encoder_bn: bool = _opt(False, "keep the encoder's BatchNorm statistics (e.g. ImageNet's) fixed while "
                                          "training; small batches give noisy statistics")
    height: int = _opt(224, "training / processing height in pixels (multiple of 32)")
    width: int = _opt(288, "training / processing width in pixels (multiple of 32)")
    min_depth: float = _opt(0.1, "metres; lower end of the depth range (checkpoint + metrics)")
    max_depth: float = _opt(10.0, "metres; upper end of the depth range; ground truth beyond it is ignored")


@dataclass
class DataConfig:
    """Where the frames come from (rosbag2 folders, .db3/.mcap/.bag files or image folders; PATH#frames=A:B or
    PATH#time=T0:T1 selects part of one)."""

    train: list = _opt([], "labeled target bags X (images + ground-truth depth)")
    aux: list = _opt([], "auxiliary bags U (images only; the teacher provides targets)")
    eval: list = _opt([], "held-out bags with ground-truth depth, evaluated every run.eval_every steps")
    image_topic: str | None = _opt(DEFAULT_IMAGE_TOPIC, "image topic; if absent (or null), the bag's only image "
                                   "topic that is not depth")
    depth_topic: str = _opt(DEFAULT_DEPTH_TOPIC, "ground-truth depth topic in X (32FC1 m, 16UC1 mm or "
                            "compressedDepth); if absent, the bag's only topic with 'depth' in its name")
    instances_topic: str = _opt(DEFAULT_INSTANCES_TOPIC, "16UC1 instance-id topic of simulated bags, read only "
                                "for object-wise mixing (mode datafree)")
    camera_info_topic: str | None = _opt("auto", "CameraInfo topic; 'auto' = the only one, or the one in the "
                                         "image topic's namespace; null = none")
    assumed_fx: float | None = _opt(None, "focal length in pixels at the image's own size for bags/folders without "
                                    "CameraInfo (fx = fy, principal point at the centre); null = unknown")
    stride: int = _opt(1, "keep every n-th image message")
    depth_tolerance_s: float = _opt(0.0, "max stamp difference between image and depth (0 = exact match)")
    num_workers: int = _opt(2, "DataLoader worker processes per rank (0 = load in the training process)")
    eval_max_frames: int = _opt(0, "evaluate at most this many frames (0 = all)")


@dataclass
class OptimConfig:
    """Optimiser and schedule (paper: Adam, lr 1e-4, weight decay 1e-4)."""

    batch_size: int = _opt(8, "frames per micro-batch per rank")
    steps: int = _opt(20000, "optimiser steps")
    lr: float = _opt(1e-4, "peak learning rate (Adam)")
    weight_decay: float = _opt(1e-4, "Adam weight decay")
    schedule: str = _opt("cosine", "learning-rate schedule after warm-up: cosine | poly | constant")
    warmup_steps: int = _opt(500, "linear warm-up steps from 0 to lr")
    poly_power: float = _opt(0.9, "exponent of the poly schedule")
    grad_accum: int = _opt(1, "micro-batches accumulated per optimiser step")
    grad_clip: float = _opt(0.0, "clip the gradient norm to this (0 = off)")
    amp: bool = _opt(True, "float16 autocast + gradient scaling (CUDA only; ignored on CPU)")


@dataclass
class DistillConfig:
    """Targets: ground truth and/or a teacher (Hu et al.'s settings are the four modes)."""

    mode: str = _opt("supervised", "supervised (GT on X) | kd_x (KD + GT on X) | kd_u (KD on U) | kd_xu (KD on X "
                                   "and U, GT on X) | datafree (KD on simulated X only; see the datafree group)")
    loss: str = _opt("grad_normal", "loss for both GT and KD terms: grad_normal (Hu et al.) | silog")
    gt_weight: float = _opt(1.0, "weight of the ground-truth loss")
    kd_weight: float = _opt(1.0, "weight of the distillation (teacher) loss")
    aux_share: float = _opt(0.5, "share of each kd_xu batch drawn from U")
    teacher: str | None = _opt(None, "teacher: node checkpoint (.safetensors), transformers folder, .onnx or "
                                     ".tflite")
    teacher_kind: str = _opt("auto", "auto | mff | hf | onnx | tflite (auto: from the path)")
    teacher_output: str = _opt("auto", "auto | metric | relative_inverse (auto: from the model or its metadata; "
                                       "plain ONNX and TFLite need it said)")
    teacher_focal_px: float | None = _opt(None, "fx in pixels that the teacher's metric output assumes (with "
                                                "teacher_focal_width); null = the model's own or unknown")
    teacher_focal_width: int | None = _opt(None, "image width in pixels that teacher_focal_px refers to")
    cache_dir: str | None = _opt(None, "teacher prediction cache; null = <run.out>/teacher_cache")
    scale_fit_frames: int = _opt(64, "X frames used to fit scale/shift for a relative teacher")
    scale_depth_topic: str | None = _opt(None, "metric topic for that fit (e.g. sparse depth); null = depth_topic")
    online_teacher: bool = _opt(False, "label every augmented view with the teacher at each step (patient, "
                                       "consistent distillation); false = cached targets of the plain frame")


@dataclass
class DatafreeConfig:
    """Data-free distillation from simulated images (Hu et al., arXiv 2208.12464): object-wise mixing and a
    transformation network G matching the teacher's BatchNorm statistics (training/depth_kd/datafree.py)."""

    mixing: bool = _opt(True, "paste objects (by instance id) from one simulated frame of the batch into another")
    mix_prob: float = _opt(0.5, "probability that a frame gets objects pasted into it")
    mix_max_objects: int = _opt(3, "at most this many objects pasted into one frame (at least one)")
    mix_scale_min: float = _opt(0.75, "smallest random scale of the pasted objects")
    mix_scale_max: float = _opt(1.25, "largest random scale of the pasted objects")
    transform: bool = _opt(True, "train a transformation network G whose output matches the teacher's BatchNorm "
                                 "running statistics (the teacher needs torch BatchNorm layers)")
    g_width: int = _opt(16, "channels of G's hidden convolutions")
    g_bound: float = _opt(0.25, "largest change G makes to a pixel (RGB in [0, 1]): bound of its tanh residual")
    g_lr: float = _opt(1e-3, "learning rate of G (Adam, constant)")
    g_steps: int = _opt(1, "G updates on each micro-batch before the student learns from G's output")
    bn_weight: float = _opt(1.0, "weight of the BatchNorm-statistics loss of G")
    content_weight: float = _opt(10.0, "weight of the L1 term keeping G's output close to its input")


@dataclass
class AugmentConfig:
    """Random views of each batch (training/depth_kd/augment.py); targets and intrinsics follow the pixels."""

    scale_max: float = _opt(1.0, "largest random zoom: a window of 1/s of the frame resized back (fx times s); "
                                 "1 = off")
    flip: float = _opt(0.0, "probability of a left-right mirror")
    colour: float = _opt(0.0, "brightness / contrast / saturation jitter, factors in [1 - c, 1 + c]; 0 = off")
    mix: float = _opt(0.0, "probability that an unlabeled (U) frame gets a box of another U frame of the batch "
                           "pasted in (CutMix); the teacher labels the collage, or its cached targets are pasted "
                           "alike; 0 = off")


@dataclass
class RunConfig:
    """Bookkeeping: output folder, device, seeds, how often to evaluate, log and checkpoint."""

    out: str = _opt("runs/default", "output folder: final.safetensors, state.safetensors, tb/")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N (with torchrun: cuda = this rank's GPU)")
    seed: int = _opt(0, "seed for the model initialisation and the data order")
    deterministic: bool = _opt(False, "use deterministic algorithms only (slower on CUDA)")
    eval_every: int = _opt(1000, "evaluate on data.eval every n steps (0 = only at the end)")
    checkpoint_every: int = _opt(1000, "write the resumable training state every n steps (0 = only at the end)")
    log_every: int = _opt(50, "log losses and learning rate every n steps")
    resume: str = _opt("auto", "auto (continue if out/ has a state) | always | never (start over)")


@dataclass
class TrainConfig:
    """A whole training run; see the group classes for the fields."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    datafree: DatafreeConfig = field(default_factory=DatafreeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (JSON / YAML safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        """Build from a nested dict, rejecting unknown groups/keys and wrongly typed values."""
        config = cls()
        config.update(data, source)
        return config

    def update(self, data: dict, source: str = "config") -> None:
        """Overwrite the fields named in nested dict ``data`` (type-checked)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of groups ({', '.join(_groups())}), got {data!r}")
        for group_name, values in data.items():
            if group_name not in _groups():
                raise ConfigError(f"{source}: unknown group {group_name!r}; groups: {', '.join(_groups())}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: group {group_name!r} must be a mapping, got {values!r}")
            for key, value in values.items():
                self.set(f"{group_name}.{key}", value, source)

    def set(self, dotted: str, value: Any, source: str = "--set") -> None:
        """Set ``group.key`` to ``value``, converted to the field's type."""
        group_name, _, key = dotted.partition(".")
        if group_name not in _groups() or key not in _fields(group_name):
            raise ConfigError(f"{source}: unknown key {dotted!r}; known keys: {', '.join(all_keys())}")
        setattr(getattr(self, group_name), key, _convert(dotted, value, _fields(group_name)[key], source))

    def validate(self) -> None:
        """Check values that depend on each other; resolve data paths to absolute. Raises ConfigError."""
        # Imported here, not at the top: they bring torch, and the CLI parser imports this module.
        from depth_kd.losses import LOSSES
        from depth_kd_ros.checkpoint import MAX_INPUT_SIDE
        from depth_kd_ros.models import ARCHITECTURES

        m, d, o, k, r = self.model, self.data, self.optim, self.distill, self.run
        if m.arch not in ARCHITECTURES:
            raise ConfigError(f"model.arch {m.arch!r} is unknown; known: {', '.join(sorted(ARCHITECTURES))}")
        for name in ("height", "width"):  # what ModelInfo accepts, so the final checkpoint can be written
            value = getattr(m, name)
            if value <= 0 or value % 32 or value > MAX_INPUT_SIDE:
                raise ConfigError(f"model.{name} must be a positive multiple of 32 up to {MAX_INPUT_SIDE}, "
                                  f"got {value}")
        if not 0 < m.min_depth < m.max_depth:
            raise ConfigError(f"need 0 < model.min_depth < model.max_depth, got {m.min_depth}, {m.max_depth}")
        _choice("distill.mode", k.mode, MODES)
        _choice("distill.loss", k.loss, tuple(LOSSES))
        _choice("distill.teacher_kind", k.teacher_kind, TEACHER_KINDS)
        _choice("distill.teacher_output", k.teacher_output, TEACHER_OUTPUTS)
        _choice("optim.schedule", o.schedule, SCHEDULES)
        _choice("run.resume", r.resume, RESUME)
        positive = {"optim.batch_size": o.batch_size, "optim.steps": o.steps, "optim.grad_accum": o.grad_accum,
                    "optim.lr": o.lr, "data.stride": d.stride, "run.log_every": r.log_every}
        non_negative = {"optim.weight_decay": o.weight_decay, "optim.warmup_steps": o.warmup_steps,
                        "optim.grad_clip": o.grad_clip, "data.num_workers": d.num_workers,
                        "data.eval_max_frames": d.eval_max_frames, "run.eval_every": r.eval_every,
                        "run.checkpoint_every": r.checkpoint_every, "distill.gt_weight": k.gt_weight,
                        "distill.kd_weight": k.kd_weight}
        a = self.augment
        if a.scale_max < 1 or not 0 <= a.flip <= 1 or not 0 <= a.colour < 1 or not 0 <= a.mix <= 1:
            raise ConfigError(f"need augment.scale_max >= 1, 0 <= augment.flip <= 1, 0 <= augment.colour < 1, "
                              f"0 <= augment.mix <= 1; got {a.scale_max}, {a.flip}, {a.colour}, {a.mix}")
        if a.mix and k.mode not in ("kd_u", "kd_xu"):
            raise ConfigError(f"augment.mix mixes unlabeled frames (U), which mode {k.mode} has none of"
                              + ("; it has its own object-wise mixing (datafree.mixing)" if k.mode == "datafree"
                                 else ""))
        if k.online_teacher and k.mode == "supervised":
            raise ConfigError("distill.online_teacher needs a teacher; mode supervised has none")
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if (k.teacher_focal_px is None) != (k.teacher_focal_width is None) or (
                k.teacher_focal_px is not None and not (k.teacher_focal_px > 0 and k.teacher_focal_width > 0)):
            raise ConfigError(f"distill.teacher_focal_px and distill.teacher_focal_width must both be positive or "
                              f"both null, got {k.teacher_focal_px} and {k.teacher_focal_width}")
        if d.assumed_fx is not None and not (math.isfinite(d.assumed_fx) and d.assumed_fx > 0):
            raise ConfigError(f"data.assumed_fx must be a positive number of pixels or null, got {d.assumed_fx}")
        if k.mode == "kd_xu" and not (0.0 < k.aux_share < 1.0 and o.batch_size >= 2):
            raise ConfigError(f"kd_xu needs 0 < distill.aux_share < 1 and optim.batch_size >= 2, got "
                              f"{k.aux_share} and {o.batch_size}")
        _check_datafree(self.datafree)
        if k.mode == "datafree" and not d.train:
            raise ConfigError("mode datafree needs simulated bags (--data / data.train), e.g. from `depth-kd render`")
        if k.mode == "datafree" and d.aux:
            raise ConfigError("mode datafree reads only the simulated bags in data.train; data.aux is not used "
                              "(for KD on other images use kd_u or kd_xu)")
        if k.mode != "kd_u" and not d.train:
            raise ConfigError(f"mode {k.mode} needs labeled bags X (--data / data.train)")
        if k.mode in ("kd_u", "kd_xu") and not d.aux:
            raise ConfigError(f"mode {k.mode} needs auxiliary bags U (--aux / data.aux)")
        if k.mode != "supervised" and not k.teacher:
            raise ConfigError(f"mode {k.mode} needs a teacher (--teacher / distill.teacher)")
        for name in ("train", "aux", "eval"):
            setattr(d, name, [_resolve_data_spec(f"data.{name}", spec) for spec in getattr(d, name)])
        if m.encoder_weights:
            m.encoder_weights = str(Path(m.encoder_weights).expanduser().resolve())
            if not Path(m.encoder_weights).is_file():
                raise ConfigError(f"model.encoder_weights: no such file: {m.encoder_weights}")
        if k.teacher:
            k.teacher = str(Path(k.teacher).expanduser().resolve())
            if not Path(k.teacher).exists():
                raise ConfigError(f"distill.teacher: no such file or folder: {k.teacher}")
        r.out = str(Path(r.out).expanduser().resolve())
        _check_output_folder("run.out", Path(r.out))

    @property
    def cache_dir(self) -> Path:
        """Where teacher predictions are cached."""
        return Path(self.distill.cache_dir) if self.distill.cache_dir else Path(self.run.out) / "teacher_cache"


def _check_datafree(f: DatafreeConfig) -> None:
    """ConfigError for datafree values that cannot work (checked in every mode: the group is saved with the run)."""
    if not 0.0 <= f.mix_prob <= 1.0:
        raise ConfigError(f"datafree.mix_prob must be in [0, 1], got {f.mix_prob}")
    if not 0.0 < f.mix_scale_min <= f.mix_scale_max:
        raise ConfigError(f"need 0 < datafree.mix_scale_min <= datafree.mix_scale_max, got {f.mix_scale_min}, "
                          f"{f.mix_scale_max}")
    if not 0.0 < f.g_bound <= 1.0:
        raise ConfigError(f"datafree.g_bound must be in (0, 1], got {f.g_bound}")
    positive = {"datafree.mix_max_objects": f.mix_max_objects, "datafree.g_width": f.g_width,
                "datafree.g_lr": f.g_lr, "datafree.g_steps": f.g_steps}
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    for name, value in {"datafree.bn_weight": f.bn_weight, "datafree.content_weight": f.content_weight}.items():
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")


def _resolve_data_spec(key: str, spec: str) -> str:
    """``spec`` with its path made absolute (a ``#frames=``/``#time=`` suffix kept); ConfigError if it is missing."""
    from depth_kd.data.selection import parse_data_spec

    path, selection = parse_data_spec(spec)
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ConfigError(f"{key}: no such bag or image folder: {resolved}")
    return str(resolved) + (selection.spec() if selection else "")


def _check_output_folder(key: str, path: Path) -> None:
    """ConfigError unless ``path`` is a writable folder or can be made one; checked before any data or teacher
    loads, so a typo in --out costs seconds, not the minutes of loading that end in NotADirectoryError."""
    existing = path
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a folder" if existing == path else f"cannot be created: {existing} is not a folder"
        raise ConfigError(f"{key}: {path} {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise ConfigError(f"{key}: {path} {what}")


_GROUPS: dict[str, type] = {}  # filled below, once TrainConfig exists


def _groups() -> dict[str, type]:
    return _GROUPS


def _fields(group_name: str) -> dict[str, Any]:
    return typing.get_type_hints(_groups()[group_name])


def all_keys() -> list[str]:
    """Every ``group.key`` name, in declaration order."""
    return [f"{g}.{k}" for g in _groups() for k in _fields(g)]


def help_text(dotted: str) -> str:
    """The help string of ``group.key``."""
    group_name, _, key = dotted.partition(".")
    return next(f.metadata["help"] for f in dataclasses.fields(_groups()[group_name]) if f.name == key)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _convert(dotted: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` as the field type ``hint`` (int -> float allowed; str -> list for a single path)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is list and isinstance(value, str):
            return [value]
        if origin in (str, bool, list, dict) and isinstance(value, origin):
            return type(value)(value) if origin in (list, dict) else value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ConfigError(f"{source}: {dotted} must be {names}, got {value!r}")


_GROUPS.update(typing.get_type_hints(TrainConfig))


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; the value is read as YAML (``[a, b]``, ``null``...)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects group.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err
    return key.strip(), value


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` ({} if empty); ConfigError in one line naming the file and, for a syntax
    error, the line (yaml's own message spans several lines and ends with a copy of the bad line)."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8)") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from err


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None, preset: dict[str, Any] | None = None) -> TrainConfig:
    """Code defaults <- ``preset`` <- YAML file ``path`` <- ``--set`` strings ``overrides`` <- ``values``.

    ``preset`` (dotted keys) is a sub-command's own defaults (``train-teacher`` trains resnet34_mff);
    ``values`` (dotted keys) are the explicit CLI flags (``--steps`` etc.), and entries that are None are
    skipped. The result is not yet validated (call :meth:`TrainConfig.validate`).
    """
    config = TrainConfig()
    for key, value in (preset or {}).items():
        config.set(key, value, source="preset")
    if path is not None:
        path = Path(path)
        config.update(_read_yaml(path), source=str(path))
    for text in overrides or []:
        config.set(*parse_override(text), source=f"--set {text}")
    for key, value in (values or {}).items():
        if value is not None:
            config.set(key, value, source=f"--{key.split('.')[-1].replace('_', '-')}")
    return config


def parse_size(text: str) -> tuple[int, int]:
    """``"224x288"`` (height x width) -> (224, 288); both positive multiples of 32, else ConfigError."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"size must be HEIGHTxWIDTH, e.g. 224x288; got {text!r}")
    height, width = (int(p) for p in parts)
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ConfigError(f"size {text!r}: height and width must be positive multiples of 32")
    return height, width
