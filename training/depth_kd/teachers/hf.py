"""Any transformers depth-estimation model (DPT, Depth Anything, ZoeDepth, GLPN, ...) from a local directory.

Weights are read only from disk (`local_files_only=True`); a path that is not a local directory is an error,
never a hub lookup. Preprocessing follows the model's image processor config (preprocessor_config.json) but
runs batched in torch on the teacher's device: the same target size rule as transformers' DPT / ZoeDepth
processors, their mean / std, and ZoeDepth's reflect padding.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation, PretrainedConfig

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OutputKind,
    Teacher,
    check_output_kind,
    digest,
    normalise,
    resize,
    resize_depth,
    round_to_multiple,
)

logger = logging.getLogger(__name__)

_PIL_BICUBIC = 3
_RELATIVE_TYPES = ("dpt", "depth_anything")  # MiDaS-style heads: affine-invariant inverse depth
_METRIC_TYPES = ("zoedepth", "glpn")


@dataclass(frozen=True)
class Preprocess:
    """What the model needs from an RGB [0, 1] image; mirrors the fields of transformers' processors."""

    size: tuple[int, int] | None  # target (height, width); None keeps the input size
    keep_aspect_ratio: bool  # scale both sides by the factor closer to 1 (DPT rule)
    multiple: int  # each side rounded to a multiple of this
    mean: tuple[float, float, float] | None  # None: no normalisation
    std: tuple[float, float, float] | None
    bicubic: bool
    reflect_pad: bool  # ZoeDepth: reflect-pad int(sqrt(side / 2) * 3) before resizing, crop after
    zoe_resize: bool = False  # ZoeDepth: align_corners=True and no antialiasing

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the network runs at for an input of `height` x `width` (before any padding)."""
        if self.size is None:
            return round_to_multiple(height, self.multiple), round_to_multiple(width, self.multiple)
        scale_h, scale_w = self.size[0] / height, self.size[1] / width
        if self.keep_aspect_ratio:
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
        m = self.multiple
        return round_to_multiple(scale_h * height, m), round_to_multiple(scale_w * width, m)


def infer_output_kind(config: PretrainedConfig) -> OutputKind | None:
    """Output kind implied by a model config, or None when the model type is not known here."""
    if getattr(config, "depth_estimation_type", None) == "metric":
        return "metric"
    if config.model_type in _RELATIVE_TYPES:
        return "relative_inverse"
    if config.model_type in _METRIC_TYPES:
        return "metric"
    return None


def preprocess_from_processor(processor: object) -> Preprocess:
    """Read a transformers image processor's settings into a `Preprocess`."""
    size = getattr(processor, "size", None)
    size = dict(size) if size is not None else {}
    if size.get("height") and size.get("width"):
        target = (int(size["height"]), int(size["width"]))
    elif size:
        raise ValueError(f"unsupported image processor size {size}; expected height and width")
    else:
        target = None
    normalize = bool(getattr(processor, "do_normalize", False))
    multiple = getattr(processor, "ensure_multiple_of", None) or getattr(processor, "size_divisor", None) or 1
    pad = bool(getattr(processor, "do_pad", False))
    zoe = type(processor).__name__.startswith("ZoeDepth")
    if pad and not zoe:
        raise ValueError(f"{type(processor).__name__} with do_pad=True is not supported")
    return Preprocess(
        size=target,
        keep_aspect_ratio=bool(getattr(processor, "keep_aspect_ratio", False)),
        multiple=int(multiple),
        mean=tuple(processor.image_mean) if normalize else None,
        std=tuple(processor.image_std) if normalize else None,
        bicubic=int(getattr(processor, "resample", _PIL_BICUBIC)) == _PIL_BICUBIC,
        reflect_pad=pad,
        zoe_resize=zoe,
    )


def default_preprocess(config: PretrainedConfig) -> Preprocess:
    """A guess for a directory without preprocessor_config.json: square image_size, ImageNet statistics."""
    backbone = getattr(config, "backbone_config", None) or config
    side = getattr(backbone, "image_size", None) or getattr(config, "image_size", None) or 384
    patch = getattr(backbone, "patch_size", None) or getattr(config, "patch_size", None) or 32
    side, patch = (v[0] if isinstance(v, list | tuple) else v for v in (side, patch))
    return Preprocess((side, side), False, int(patch), IMAGENET_MEAN, IMAGENET_STD, True, False)


class HfTeacher(Teacher):
    """A `AutoModelForDepthEstimation` model from `model_dir` (a local directory written by save_pretrained).

    `output_kind` defaults to what the config implies (see `infer_output_kind`); give it for other models.
    `preprocess` overrides what the image processor config says.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: torch.device | str,
        output_kind: OutputKind | None = None,
        preprocess: Preprocess | None = None,
    ) -> None:
        path = Path(model_dir)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(model_dir)!r} is not a local model directory with a config.json; HfTeacher never "
                "downloads. Fetch it where there is network (`hf download <repo> --local-dir DIR`), pass DIR."
            )
        self.device = torch.device(device)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        kind = output_kind or infer_output_kind(config)
        if kind is None:
            raise ValueError(f"cannot tell whether {config.model_type!r} outputs metric or relative inverse "
                             "depth; pass output_kind")
        self.output_kind = check_output_kind(kind)
        if preprocess is None:
            if (path / "preprocessor_config.json").is_file():
                processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
                preprocess = preprocess_from_processor(processor)
            else:
                preprocess = default_preprocess(config)
                logger.warning("%s has no preprocessor_config.json; guessing %s", path, preprocess)
        self.preprocess = preprocess
        model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
        self.model = model.to(self.device).eval()
        self.network = self.model

        weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
        files = [path / "config.json", *weights]
        if (path / "preprocessor_config.json").is_file():
            files.append(path / "preprocessor_config.json")
        self.name = f"{config.model_type}:{path.name}"
        self.cache_id = f"hf-{digest(files, extra=json.dumps(asdict(preprocess)))}"
        logger.info("teacher %s (%s, %s) on %s", self.name, self.cache_id, self.output_kind, self.device)

    def pixel_values(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] N x 3 x H x W -> the model's input tensor (resized, padded, normalised)."""
        p = self.preprocess
        height, width = rgb.shape[-2:]
        x = rgb
        if p.reflect_pad:
            pad_h, pad_w = _zoe_padding(height, width)
            x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        size, mode = p.target_size(*x.shape[-2:]), "bicubic" if p.bicubic else "bilinear"
        if p.zoe_resize:
            x = F.interpolate(x, size=size, mode=mode, align_corners=True)
        else:
            x = resize(x, size, mode=mode)
        if p.mean is not None:
            x = normalise(x, p.mean, p.std)
        return x

    def _predict(self, rgb: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        depth = self.model(pixel_values=self.pixel_values(rgb)).predicted_depth.unsqueeze(1)
        if self.preprocess.reflect_pad:
            pad_h, pad_w = _zoe_padding(height, width)
            depth = resize_depth(depth, (height + 2 * pad_h, width + 2 * pad_w))
            depth = depth[..., pad_h : pad_h + height, pad_w : pad_w + width]
        return depth


def _zoe_padding(height: int, width: int) -> tuple[int, int]:
    """ZoeDepth's boundary padding (rows, columns) for an image of this size."""
    return int(math.sqrt(height / 2) * 3), int(math.sqrt(width / 2) * 3)
