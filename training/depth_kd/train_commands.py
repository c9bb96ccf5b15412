"""The ``train-teacher``, ``distill``, ``eval`` and ``export`` sub-commands of ``depth-kd``.

``add_train_commands(subparsers)`` adds them to a parser; each sets ``handler`` (``args.handler(args) -> int``
exit code). Training settings come from ``--config YAML`` and ``--set group.key=value``; the flags below are
shortcuts for the common keys and win over both. Training commands print the final checkpoint's path as the
last line of stdout; logs and progress go to stderr. Bad input exits with 2 and one ``error:`` line.

Also runnable as ``python -m depth_kd.train_commands <command> ...`` (and under ``torchrun``).

Building the parser is cheap: torch and everything that imports it (trainer, export, teachers, data) are
imported by the handlers, so ``depth-kd --help`` does not pay for them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from depth_kd.config import (
    DEFAULT_OPSET,
    FLOAT_CONVS,
    INT8_COMPARE_FRAMES,
    MODES,
    TEACHER_KINDS,
    TEACHER_OUTPUTS,
    ConfigError,
    TrainConfig,
    load_config,
    parse_size,
)

logger = logging.getLogger(__name__)


def input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (exit code 2); imported on use, as they come with torch."""
    from depth_kd.data import DataError
    from depth_kd.train_state import TrainStateError
    from depth_kd_ros.checkpoint import CheckpointError

    return ConfigError, DataError, CheckpointError, TrainStateError, FileNotFoundError


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _training_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by train-teacher and distill."""
    parser.add_argument("--data", nargs="+", metavar="BAG", help="labeled bags X (image + depth topics) or image "
                        "folders with depth/; BAG#frames=A:B or BAG#time=T0:T1 uses part of one")
    parser.add_argument("--steps", type=int, help="optimiser steps")
    parser.add_argument("--out", metavar="DIR", help="output folder (final.safetensors, state, tb/)")
    parser.add_argument("--config", metavar="YAML", help="config file (e.g. training/configs/teacher.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set optim.lr=3e-4 (repeatable)")
    parser.add_argument("--arch", help="registry architecture (mobilenetv2_mff, mobilenetv2_fast, resnet34_mff)")
    parser.add_argument("--size", type=_size, metavar="HxW", help="training size, multiples of 32, e.g. 224x288")
    parser.add_argument("--eval-data", nargs="+", metavar="BAG", help="held-out bags (or image folders) with depth "
                        "for evaluation; #frames=A:B / #time=T0:T1 allowed")
    parser.add_argument("--batch-size", type=int, help="frames per micro-batch per rank")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per rank")
    parser.add_argument("--seed", type=int, help="seed for initialisation and data order")
    parser.add_argument("--image-topic", help=f"image topic (default {TrainConfig().data.image_topic})")
    parser.add_argument("--depth-topic", help="ground-truth depth topic")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_const", const="always",
                        help="continue from DIR/state.safetensors (error if missing; default: if present)")
    resume.add_argument("--no-resume", dest="resume", action="store_const", const="never",
                        help="start over even if DIR has a training state")


def _values(args: argparse.Namespace) -> dict[str, Any]:
    """Explicit flags as dotted config keys (None = not given)."""
    size = args.size or (None, None)
    values = {
        "data.train": args.data, "optim.steps": args.steps, "run.out": args.out, "model.arch": args.arch,
        "model.height": size[0], "model.width": size[1], "data.eval": args.eval_data,
        "optim.batch_size": args.batch_size, "optim.lr": args.lr, "run.device": args.device,
        "data.num_workers": args.num_workers, "run.seed": args.seed, "data.image_topic": args.image_topic,
        "data.depth_topic": args.depth_topic, "run.resume": args.resume,
    }
    for key in ("aux", "mode", "aux_share", "teacher", "teacher_kind", "teacher_output", "kd_weight", "gt_weight",
                "cache_dir"):
        if hasattr(args, key):
            values[f"{'data' if key == 'aux' else 'distill'}.{key}"] = getattr(args, key)
    return values


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add train-teacher, distill, eval and export to ``subparsers`` (from ``parser.add_subparsers()``)."""
    p = subparsers.add_parser("train-teacher", help="train any registry architecture on ground-truth depth",
                              description="Supervised training with ground truth (default arch resnet34_mff).")
    _training_flags(p)
    p.set_defaults(handler=_guarded(_train_teacher, "train-teacher"))

    p = subparsers.add_parser("distill", help="distil a student from a teacher (Hu et al. settings, or data-free)",
                              description="Knowledge distillation of a student (default mobilenetv2_mff). "
                              "--mode datafree: from simulated bags only (--data), with object-wise mixing and a "
                              "transformation network matched to the teacher's BatchNorm statistics (datafree.*).")
    _training_flags(p)
    p.add_argument("--teacher", metavar="PATH", help="node checkpoint, transformers folder, .onnx or .tflite")
    p.add_argument("--aux", nargs="+", metavar="BAG", help="auxiliary bags or image folders U (images only); "
                   "#frames=A:B / #time=T0:T1 allowed")
    p.add_argument("--mode", choices=MODES, help="default: kd_xu with --aux, else kd_x; datafree: KD on the "
                   "simulated bags in --data only")
    p.add_argument("--aux-share", type=float, help="share of each kd_xu batch drawn from U (default 0.5)")
    p.add_argument("--teacher-kind", choices=TEACHER_KINDS, help="default: from the path")
    p.add_argument("--teacher-output", choices=TEACHER_OUTPUTS,
                   help="what the teacher outputs (default: from the model; required for plain ONNX and TFLite)")
    p.add_argument("--kd-weight", type=float, help="weight of the distillation loss")
    p.add_argument("--gt-weight", type=float, help="weight of the ground-truth loss")
    p.add_argument("--cache-dir", metavar="DIR", help="teacher prediction cache (default DIR/teacher_cache)")
    p.set_defaults(handler=_guarded(_distill, "distill"))

    p = subparsers.add_parser("eval", help="metrics of a checkpoint on bags with ground truth",
                              description="AbsRel, SqRel, RMSE, RMSE log, log10, d1-d3 through the node's "
                                          "inference path.")
    p.add_argument("--model", required=True, metavar="PATH", help="node-format checkpoint (.safetensors)")
    p.add_argument("--data", required=True, nargs="+", metavar="BAG", help="bags with a depth topic or image folders "
                   "with depth/; BAG#frames=A:B or BAG#time=T0:T1 uses part of one")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on stdout")
    p.add_argument("--size", type=_size, metavar="HxW", help="resize/crop frames to this size first")
    p.add_argument("--image-topic", default=TrainConfig().data.image_topic,
                   help="image topic (default %(default)s; if absent, the bag's only image topic)")
    p.add_argument("--depth-topic", default=TrainConfig().data.depth_topic,
                   help="ground-truth depth topic (default %(default)s; if absent, the bag's only depth topic)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-frames", type=int, default=0, help="evaluate at most this many frames (0 = all)")
    p.set_defaults(handler=_guarded(_eval, "eval"))

    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (float32 or int8) and/or float16 "
                              "safetensors", description="ONNX export checked against PyTorch with onnxruntime; "
                              "int8: statically quantised on real frames, its accuracy cost measured and printed.")
    p.add_argument("--model", required=True, metavar="PATH", help="node-format checkpoint (.safetensors)")
    p.add_argument("--onnx", metavar="OUT", help="write an ONNX model here")
    p.add_argument("--int8", metavar="OUT", help="write a statically quantised int8 ONNX model here (needs "
                   "--calibration)")
    p.add_argument("--calibration", nargs="+", metavar="BAG", help="bags or image folders whose frames calibrate "
                   "the int8 activation ranges; #frames=A:B / #time=T0:T1 allowed")
    p.add_argument("--calibration-frames", type=int, default=64, metavar="N",
                   help="calibrate on at most N frames, spread evenly over the calibration data (default 64)")
    p.add_argument("--float-convs", type=int, default=FLOAT_CONVS, metavar="N",
                   help="keep the first N convolutions (the stem, on the full-resolution image) in float32 "
                   "(default %(default)s; 0: quantise all but the output layer, which always stays float)")
    p.add_argument("--eval-data", nargs="+", metavar="BAG", help="bags or image folders with depth to measure the "
                   "int8 model's AbsRel against float32 on (default: the calibration frames that have depth; "
                   f"at most {INT8_COMPARE_FRAMES} frames, spread evenly)")
    p.add_argument("--image-topic", default=TrainConfig().data.image_topic,
                   help="image topic of the --calibration/--eval-data bags (default %(default)s; if absent, the "
                   "bag's only image topic)")
    p.add_argument("--depth-topic", default=TrainConfig().data.depth_topic,
                   help="ground-truth depth topic (default %(default)s; if absent, the bag's only depth topic)")
    p.add_argument("--fp16-safetensors", metavar="OUT", help="write a float16 copy of the checkpoint here")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {DEFAULT_OPSET})")
    p.add_argument("--dynamic-batch", action="store_true", help="make the ONNX batch axis dynamic")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs difference to PyTorch (metres)")
    p.set_defaults(handler=_guarded(_export, "export"))


def _guarded(handler: Callable[[argparse.Namespace], int], name: str) -> Callable[[argparse.Namespace], int]:
    """Turn bad input into one ``error:`` line on stderr and exit code 2 (failed export: 1)."""

    def run(args: argparse.Namespace) -> int:
        from depth_kd.export import ExportError

        bad_input = input_errors()
        try:
            return handler(args)
        except bad_input as err:
            print(f"depth-kd {name}: error: {err}", file=sys.stderr)
            return 2
        except ExportError as err:
            print(f"depth-kd {name}: error: {err}", file=sys.stderr)
            return 1

    return run


def _check_device(spec: str, source: str) -> None:
    """ConfigError for a device spec this machine cannot use (bogus, or CUDA without CUDA), before anything
    loads; the node's own rule (:func:`~depth_kd_ros.backends.torch_backend.resolve_device`), so the words
    are the same."""
    from depth_kd_ros.backends.torch_backend import resolve_device

    if spec.strip() == "auto":  # always usable; resolving it here would only repeat its CPU warning
        return
    try:
        resolve_device(spec)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"{source}: {err}") from None


def _train(args: argparse.Namespace, preset: dict[str, Any]) -> int:
    from depth_kd.distributed import setup, teardown
    from depth_kd.trainer import Trainer

    config = load_config(args.config, args.set, _values(args), preset)
    config.validate()
    _check_device(config.run.device, "--device" if args.device else "run.device")
    try:
        ctx, device = setup(config.run.device)
    except RuntimeError as err:
        raise ConfigError(str(err)) from err
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        final = Trainer(config, device, ctx, command=sys.argv).train()
    finally:
        teardown(ctx)
    if ctx.is_main:
        print(final, flush=True)
    return 0


def _train_teacher(args: argparse.Namespace) -> int:
    args.set = [*args.set, "distill.mode=supervised"]
    return _train(args, {"model.arch": "resnet34_mff"})


def _distill(args: argparse.Namespace) -> int:
    mode = "kd_xu" if args.aux else "kd_x"
    return _train(args, {"model.arch": "mobilenetv2_mff", "distill.mode": mode})


def _eval(args: argparse.Namespace) -> int:
    from depth_kd.evaluate import evaluate_checkpoint
    from depth_kd.metrics import METRIC_NAMES

    _check_device(args.device, "--device")
    metrics = evaluate_checkpoint(args.model, args.data, args.depth_topic, args.image_topic, args.size,
                                  args.device, args.max_frames)
    if args.json:
        print(json.dumps(metrics), flush=True)
    else:
        for name in (*METRIC_NAMES, "frames", "pixels"):
            value = metrics[name]
            print(f"{name:>9}  {value:.4f}" if isinstance(value, float) else f"{name:>9}  {value}")
    return 0


def _check_export_args(args: argparse.Namespace) -> None:
    """ConfigError for flags that cannot work together, before anything loads."""
    if not (args.onnx or args.int8 or args.fp16_safetensors):
        raise ConfigError("nothing to do: give --onnx OUT, --int8 OUT and/or --fp16-safetensors OUT")
    if args.opset < DEFAULT_OPSET:
        raise ConfigError(f"--opset must be >= {DEFAULT_OPSET}, got {args.opset}")
    if args.int8 and not args.calibration:
        raise ConfigError("--int8 needs --calibration BAG [BAG ...]: real frames to calibrate the activation ranges")
    if not args.int8 and (args.calibration or args.eval_data):
        raise ConfigError("--calibration and --eval-data are for --int8 OUT")
    if args.float_convs < 0:
        raise ConfigError(f"--float-convs must be >= 0, got {args.float_convs}")
    if args.calibration_frames < 1:
        raise ConfigError(f"--calibration-frames must be >= 1, got {args.calibration_frames}")


def _export_int8(args: argparse.Namespace) -> None:
    """The int8 model, then one line on what it costs against float32 (the float32 copy lives in a temp folder)."""
    import tempfile

    from depth_kd.export import accuracy_sources, export_int8, int8_accuracy

    measure_on = accuracy_sources(args.calibration, args.eval_data, image_topic=args.image_topic,
                                  depth_topic=args.depth_topic)
    with tempfile.TemporaryDirectory(prefix="depth_kd_export_") as tmp:
        fp32 = f"{tmp}/fp32.onnx"
        result = export_int8(args.model, args.int8, args.calibration, args.calibration_frames,
                             image_topic=args.image_topic, opset=args.opset, tolerance=args.tolerance, fp32_out=fp32,
                             float_convs=args.float_convs)
        print(f"{args.int8}  (int8, calibrated on {result.calibration_frames} frames)", flush=True)
        accuracy = int8_accuracy(args.int8, fp32, measure_on)
    print(accuracy.summary(), flush=True)


def _export(args: argparse.Namespace) -> int:
    from depth_kd.export import export_fp16, export_onnx

    _check_export_args(args)
    if args.onnx:
        diff = export_onnx(args.model, args.onnx, opset=args.opset, dynamic_batch=args.dynamic_batch,
                           tolerance=args.tolerance)
        print(f"{args.onnx}  (max abs difference to PyTorch {diff:.3g} m)", flush=True)
    if args.int8:
        _export_int8(args)
    if args.fp16_safetensors:
        diff = export_fp16(args.model, args.fp16_safetensors)
        print(f"{args.fp16_safetensors}  (max abs difference to float32 {diff:.3g} m)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m depth_kd.train_commands <command> ...`` (the same commands as ``depth-kd``)."""
    parser = argparse.ArgumentParser(prog="depth-kd", description=__doc__.splitlines()[0])
    add_train_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
