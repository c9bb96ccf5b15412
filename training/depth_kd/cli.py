"""``depth-kd``: the offline tooling's command line.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets
``run=<function(args) -> exit code>`` (``handler=`` is accepted too); add it to ``SUBCOMMANDS`` to extend
the CLI (render, demo, infer, train-teacher, distill, eval, export). Bad arguments print one
``depth-kd <cmd>: error: ...`` line on stderr and exit 2 before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from depth_kd.config import DEFAULT_IMAGE_TOPIC
from depth_kd.train_commands import add_train_commands
from depth_kd_ros.backends import check_device_spec

log = logging.getLogger("depth_kd")

MIN_SIDE, MAX_SIDE = 16, 4096


class UsageError(Exception):
    """A bad argument found after parsing (e.g. an output path that already exists)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be in {MIN_SIDE}..{MAX_SIDE} pixels, got {text!r}")
    return width, height


def _positive(kind: type, zero_ok: bool = False) -> Callable[[str], int | float]:
    """An argparse type: a ``kind`` number > 0 (>= 0 with ``zero_ok``)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (value >= 0 if zero_ok else value > 0):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero_ok else '>'} 0, got {text!r}")
        return value

    return parse


def _fov(text: str) -> float:
    value = _positive(float)(text)
    if not value < 179.0:
        raise argparse.ArgumentTypeError(f"field of view must be in (0, 179) degrees, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def check_new_output(path: Path) -> None:
    """Raise UsageError unless ``path`` does not exist and its parent is an existing writable directory."""
    if path.exists() or path.is_symlink():
        raise UsageError(f"output {str(path)!r} already exists; choose a new path")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"parent directory {str(parent)!r} does not exist or is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"parent directory {str(parent)!r} is not writable")


def check_device(name: str) -> None:
    """Raise UsageError for a device torch cannot use here."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")


# ---------------------------------------------------------------------------------------------- render
def _add_render(subparsers: argparse._SubParsersAction) -> None:
    from .render.names import FAMILY_NAMES, STORAGE_NAMES, TRAJECTORIES

    p = subparsers.add_parser(
        "render",
        help="render a synthetic sequence into a rosbag2 recording",
        description="Render a synthetic camera sequence (RGB, exact depth, instance ids, "
        "camera_info, /tf) into a new rosbag2 recording.",
    )
    p.add_argument("--family", choices=FAMILY_NAMES, default="indoor", help="scene family preset")
    p.add_argument("--frames", type=_positive(int), required=True, help="number of frames (> 0)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed; same seed and arguments, same output")
    p.add_argument(
        "--size",
        type=_size,
        default=(640, 480),
        metavar="WxH",
        help=f"image size, each side {MIN_SIDE}..{MAX_SIDE} (default 640x480)",
    )
    p.add_argument("--out", type=Path, required=True, help="bag directory to create (must not exist)")
    p.add_argument("--storage", choices=STORAGE_NAMES, default="mcap", help="rosbag2 storage plugin")
    p.add_argument(
        "--rate", type=_positive(float), default=10.0, metavar="HZ", help="frame rate of the stamps"
    )
    p.add_argument("--compressed", action="store_true", help="also write /camera/image_raw/compressed (JPEG)")
    p.add_argument("--trajectory", choices=TRAJECTORIES, default="drive", help="camera motion")
    focal = p.add_mutually_exclusive_group()
    focal.add_argument("--fov", type=_fov, metavar="DEG", help="horizontal field of view (default 60)")
    focal.add_argument("--fx", type=_positive(float), metavar="PX", help="focal length in pixels")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (default cpu)")
    p.add_argument(
        "--threads",
        type=_positive(int),
        help="torch CPU threads (default: torch's choice; 1 is fastest on a machine shared with other jobs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_render)


def _run_render(args: argparse.Namespace) -> int:
    check_new_output(args.out)
    check_device(args.device)
    from .render.record import record_sequence

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    width, height = args.size
    summary = record_sequence(
        args.out,
        args.family,
        args.frames,
        args.seed,
        width,
        height,
        storage=args.storage,
        rate_hz=args.rate,
        compressed=args.compressed,
        fx=args.fx,
        fov_deg=args.fov,
        trajectory=args.trajectory,
        device=args.device,
        progress=not args.quiet,
    )
    k = summary.intrinsics
    log.info(
        "%s: %d frames %dx%d fx=%.2f, topics: %s",
        summary.path,
        summary.frames,
        k.width,
        k.height,
        k.fx,
        ", ".join(summary.topics),
    )
    return 0


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    from .render.names import FAMILY_NAMES

    p = subparsers.add_parser(
        "demo",
        help="render a sequence, play it through depth_node over DDS, score it against ground truth",
        description="The main job: render a short sequence, play it through the real depth_node "
        "(DDS on this machine only), record its outputs to MCAP, write preview.png and print "
        "throughput, latency and accuracy (AbsRel, RMSE, d1).",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (its bags are replaced)")
    p.add_argument("--frames", type=_positive(int), default=60, help="frames to render and play (default 60)")
    p.add_argument("--size", type=_size, default=(640, 480), metavar="WxH", help="image size (default 640x480)")
    p.add_argument("--family", choices=FAMILY_NAMES, default="indoor", help="scene family preset")
    p.add_argument("--seed", type=_seed, default=7,
                   help="scene and trajectory seed (default 7: a room the default weights never saw)")
    p.add_argument("--model", type=Path, help="student checkpoint (default: the package's weights)")
    p.add_argument("--device", default="auto", help="depth_node device: auto, cpu, cuda, cuda:N")
    p.add_argument("--rate", type=_positive(float), default=10.0, metavar="HZ", help="playback rate")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.device != "auto":
        check_device(args.device)
    if args.model is not None and not args.model.is_file():
        raise UsageError(f"model {args.model} does not exist")
    from .demo import format_result, run_demo

    width, height = args.size
    result = run_demo(args.out, frames=args.frames, width=width, height=height, family=args.family,
                      seed=args.seed, model=args.model, device=args.device, rate_hz=args.rate)
    print(format_result(result))
    return 0


# ----------------------------------------------------------------------------------------------- infer
def _add_infer(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer",
        help="run the node's per-frame path over a recording, bag to bag (offline, as fast as the CPU allows)",
        description="Every frame of the bag's image topic through depth_node's own per-frame functions into a "
        "new MCAP bag: /depth/image, /depth/camera_info, /depth/colored [and /depth/points], each with its input "
        "image's stamp and frame_id, logged at the input's log time. Prints the bag's path last.",
    )
    p.add_argument("--data", required=True, metavar="BAG", help="rosbag2 folder, .mcap/.db3 or ROS 1 .bag; "
                   "BAG#frames=A:B or BAG#time=T0:T1 runs part of it")
    p.add_argument("--out", type=Path, required=True, metavar="OUT_BAG", help="MCAP bag folder to create (must not "
                   "exist)")
    p.add_argument("--model", type=Path, help="student model, .onnx or .safetensors (default: the package's weights)")
    p.add_argument("--points", action="store_true", help="also write /depth/points (organized PointCloud2)")
    p.add_argument("--video", type=Path, metavar="PREVIEW.mp4", help="also write an MP4 preview, RGB | depth")
    p.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="image topic (default %(default)s; if "
                   "absent, the bag's only Image/CompressedImage topic)")
    p.add_argument("--camera-info-topic", default="auto", help="CameraInfo topic (default: the one in the image "
                   "topic's namespace)")
    p.add_argument("--depth-encoding", choices=("32FC1", "16UC1"), default="32FC1",
                   help="depth/image in metres (32FC1, NaN invalid) or millimetres (16UC1, 0 invalid)")
    p.add_argument("--min-depth", type=_positive(float, zero_ok=True), default=0.0, metavar="M",
                   help="near limit in metres, nearer = invalid (default 0: the model's own)")
    p.add_argument("--max-depth", type=_positive(float, zero_ok=True), default=0.0, metavar="M",
                   help="far limit in metres, farther = invalid (default 0: the model's own)")
    p.add_argument("--points-decimation", type=_positive(int), default=1, metavar="N",
                   help="keep every N-th row and column in /depth/points (default 1)")
    p.add_argument("--scale-source", choices=("none", "depth", "ground"), default="none",
                   help="metric scale per frame, as the node's scale_source: the bag's metric depth topic (any "
                   "resolution, sparse allowed) or the floor --camera-height below the camera (default none)")
    p.add_argument("--metric-depth-topic", metavar="TOPIC", help="--scale-source depth: the metric depth topic "
                   "(Image 16UC1/32FC1 or compressedDepth; default: the bag's only depth topic)")
    p.add_argument("--metric-depth-tolerance", type=_positive(float), default=0.05, metavar="S",
                   help="seconds between an image's stamp and the metric depth matched to it (default 0.05)")
    p.add_argument("--camera-height", type=_positive(float, zero_ok=True), default=0.0, metavar="M",
                   help="--scale-source ground: the camera's height above the floor in metres")
    p.add_argument("--camera-pitch", type=float, default=0.0, metavar="RAD",
                   help="--scale-source ground: how far the camera looks down, radians (default 0 = level)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads for the network (default 0: "
                   "all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    check_new_output(args.out)
    if args.video is not None:
        check_new_output(args.video)
        if args.video.suffix.lower() != ".mp4":
            raise UsageError(f"--video {args.video}: the preview is an MP4, give a path ending in .mp4")
    if args.model is not None and not args.model.is_file():
        raise UsageError(f"model {args.model} does not exist")
    try:
        check_device_spec(args.device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from None
    if args.threads < 0:
        raise UsageError(f"--threads must be >= 0 (0 = all cores), got {args.threads}")
    if args.min_depth and args.max_depth and args.min_depth >= args.max_depth:
        raise UsageError(f"--min-depth ({args.min_depth:g}) must be below --max-depth ({args.max_depth:g})")
    if args.metric_depth_topic and args.scale_source != "depth":
        raise UsageError("--metric-depth-topic is read only with --scale-source depth")
    from depth_kd.config import ConfigError
    from depth_kd.data import DataError
    from depth_kd.infer import BAD_INPUT_EFFECT, InferError, infer_bag
    from depth_kd_ros.memory import keep_frame_memory
    from depth_kd_ros.model_info import CheckpointError  # not .checkpoint: that imports torch
    from depth_kd_ros.params import NodeParams

    keep_frame_memory()  # as the node does: per-frame buffers reused, not faulted in afresh (28-34 -> 41 frames/s)

    params = NodeParams(model_path=str(args.model or ""), device=args.device, threads=args.threads,
                        min_depth=args.min_depth, max_depth=args.max_depth, depth_encoding=args.depth_encoding,
                        points_decimation=args.points_decimation, scale_source=args.scale_source,
                        metric_depth_tolerance=args.metric_depth_tolerance, camera_height=args.camera_height,
                        camera_pitch=args.camera_pitch)
    try:
        summary = infer_bag(args.data, args.out, params, points=args.points, video=args.video,
                            image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                            metric_depth_topic=args.metric_depth_topic, progress=not args.quiet)
    except (InferError, DataError, ConfigError, CheckpointError) as err:
        raise UsageError(str(err)) from None
    log.info("%d frames in %.1f s (%.1f frames/s), %d with camera_info", summary.frames, summary.seconds,
             summary.fps, summary.with_camera_info)
    if summary.scale:
        log.info("metric scale: %s", ", ".join(f"{k} {v}" for k, v in summary.scale.items()))
    if summary.bad_inputs:
        log.warning("bad input: %s", "; ".join(f"{count} {kind} ({BAD_INPUT_EFFECT[kind]})"
                                               for kind, count in sorted(summary.bad_inputs.items())))
    if summary.video is not None:
        print(summary.video, flush=True)
    print(summary.out, flush=True)
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_render, _add_demo, _add_infer,
                                                                  add_train_commands]


def build_parser() -> argparse.ArgumentParser:
    """The ``depth-kd`` parser with every subcommand in ``SUBCOMMANDS``."""
    parser = _Parser(
        prog="depth-kd",
        description="Offline tooling for depth_kd_ros: synthetic world, datasets, teachers, distillation.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``depth-kd`` with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    run = getattr(args, "run", None) or args.handler  # render/demo set ``run``; training commands ``handler``
    try:
        return run(args)
    except UsageError as err:
        print(f"depth-kd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
