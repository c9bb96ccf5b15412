"""ONNX Runtime backend: runs a model written by ``depth-kd export`` (float32 or int8 QDQ), torch-free.

Execution providers are an ordered list with fallback, as ONNX Runtime treats them: on CUDA, TensorRT
(float16 when asked, engines cached on disk) then CUDA then CPU; a provider this install lacks is skipped
with one warning. On the CPU the intra-op pool does not spin: spinning workers on a core that another
process holds stall every frame on a busy robot (see test/benchmarks/bench_node.py, load rows).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from depth_kd_ros.backends import check_device_spec
from depth_kd_ros.model_info import ONNX_INFO_KEY, CheckpointError, ModelInfo, check_is_file

logger = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def engine_cache_dir(model_bytes: bytes) -> Path:
    """Where TensorRT engines for this model are kept: one folder per model content. TensorRT's own file
    names inside carry the GPU's compute capability, so one folder serves several GPUs."""
    root = Path(os.environ.get("DEPTH_KD_ROS_CACHE", Path.home() / ".cache" / "depth_kd_ros"))
    return root / "tensorrt" / hashlib.sha256(model_bytes).hexdigest()[:16]


def choose_providers(device: str, fp16: bool, available: list[str], model_bytes: bytes) -> list:
    """The provider list for ``device`` (auto | cpu | cuda | cuda:N), given the providers this install has."""
    device = check_device_spec(device)
    if device == "cpu":
        return [CPU]
    index = int(device.split(":")[1]) if ":" in device else 0
    gpu = []
    if TENSORRT in available:
        cache = engine_cache_dir(model_bytes)
        cache.mkdir(parents=True, exist_ok=True)
        gpu.append((TENSORRT, {"device_id": index, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                               "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                               "trt_timing_cache_path": str(cache)}))
    if CUDA in available:
        gpu.append((CUDA, {"device_id": index}))
    if not gpu:
        if device == "auto":
            logger.info("device 'auto': no CUDA or TensorRT provider in this onnxruntime, running on the CPU")
        else:
            logger.warning("device %r: this onnxruntime has no CUDA or TensorRT provider (it has %s); running on "
                           "the CPU. Install onnxruntime-gpu for the GPU", device, ", ".join(available))
        return [CPU]
    if TENSORRT not in available and device != "auto":
        logger.warning("no TensorRT provider in this onnxruntime: running on CUDA without TensorRT%s",
                       " (fp16 needs TensorRT; float32 it is)" if fp16 else "")
    return [*gpu, CPU]


def read_model_info(session: ort.InferenceSession, path: Path) -> ModelInfo:
    """The ModelInfo that ``depth-kd export`` stored in the model's metadata."""
    props = session.get_modelmeta().custom_metadata_map
    if ONNX_INFO_KEY not in props:
        raise CheckpointError(f"{path}: an ONNX model without {ONNX_INFO_KEY!r} metadata (not written by "
                              "`depth-kd export`), so its input size, normalisation and depth range are unknown")
    try:
        return ModelInfo.from_json(props[ONNX_INFO_KEY])
    except ValueError as err:
        raise CheckpointError(f"{path}: bad {ONNX_INFO_KEY} metadata: {err}") from err


class OnnxRuntimeBackend:
    """One InferenceSession for the node's lifetime."""

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, device: str = "auto", fp16: bool = False, threads: int = 0) -> None:
        path = Path(model_path)
        check_is_file(path)
        try:
            model_bytes = path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from err
        providers = choose_providers(device, fp16, ort.get_available_providers(), model_bytes)
        if fp16 and providers == [CPU]:
            logger.warning("fp16 ignored: half precision is only used with TensorRT; running the model as stored")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for protobuf, graph and provider errors
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{path}: not a loadable ONNX model: {first_line}") from err
        self.info = read_model_info(self.session, path)
        image, depth = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if list(image.shape[1:]) != [3, self.info.input_height, self.info.input_width]:
            raise CheckpointError(f"{path}: input {image.name} has shape {image.shape}, but the metadata says "
                                  f"3 x {self.info.input_height} x {self.info.input_width}")
        self._input, self._output = image.name, depth.name
        used = self.session.get_providers()
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        if used[0] != wanted[0]:
            logger.warning("%s could not start (%s runs the model)", wanted[0], used[0])
        self.device = used[0] + (" (fp16)" if used[0] == TENSORRT and fp16 else "")

    def run(self, image: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: image})[0]
