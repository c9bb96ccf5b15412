"""Teachers for distillation behind one interface (`Teacher.predict`), plus scale fitting and a disk cache.

* `MffTeacher` -- the paper's ResNet-34 MFF teacher from a depth_kd_ros checkpoint (metric);
* `HfTeacher` -- any transformers depth-estimation model from a local directory;
* `OnnxTeacher` -- any ONNX depth model through onnxruntime;
* `TfliteTeacher` -- any TFLite depth model through ai-edge-litert (quantised or float; e.g. int8 FastDepth);
* `scale` -- fit scale / shift taking relative inverse depth to metres; `ScaledTeacher` applies one;
* `cache` -- `TeacherCache` and `predict_cached`.

Every teacher may say which focal length its metric output assumes (`Teacher.focal_norm`, fx / width).
`HfTeacher`, `OnnxTeacher` and `TfliteTeacher` are imported on first use: transformers alone takes seconds to
import, and ai-edge-litert is only needed for TFLite teachers.
"""

from importlib import import_module

from .base import OUTPUT_KINDS, OutputKind, Teacher
from .cache import CacheKey, TeacherCache, predict_cached
from .mff import MffTeacher
from .scale import ScaledTeacher, ScaleShift, fit_global_scale_shift, fit_scale_shift

__all__ = [
    "OUTPUT_KINDS",
    "CacheKey",
    "HfTeacher",
    "MffTeacher",
    "OnnxTeacher",
    "OutputKind",
    "ScaleShift",
    "ScaledTeacher",
    "Teacher",
    "TeacherCache",
    "TfliteTeacher",
    "fit_global_scale_shift",
    "fit_scale_shift",
    "predict_cached",
]

_LAZY = {"HfTeacher": ".hf", "OnnxTeacher": ".onnx", "TfliteTeacher": ".tflite"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
