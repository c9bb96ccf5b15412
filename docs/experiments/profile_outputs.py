"""Where a frame's time goes outside the network: each per-frame step of depth_node at 640x480, timed alone.

    .venv/bin/python docs/experiments/profile_outputs.py [--repeats 50]

Input side: what rclpy does to hand the node a 900 KiB rgb8 Image (deserialise), then decoding to RGB, and
normalising the resized image for the network (broadcast over H x W x 3 and transposed, as before, against
the node's plane-by-plane to_network_input). Output side: each output as rclpy messages (construct +
serialise, what `publish(msg)` costs) against the bytes the node now publishes (rosbags CDR,
depth_kd_ros.serialized), and the point cloud and colour map themselves. Medians in ms; docs/node_profile.md
has a run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

from depth_kd_ros.image_codec import colorize_depth, image_to_rgb
from depth_kd_ros.inference import to_network_input
from depth_kd_ros.model_info import ModelInfo
from depth_kd_ros.pointcloud import cloud_fields, depth_to_cloud
from depth_kd_ros.serialized import cloud_cdr, depth_image_cdr, image_cdr

WIDTH, HEIGHT, FX = 640, 480, 525.0


def median_ms(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1e3 * float(np.median(samples))


def normalise_by_broadcasting(rgb: np.ndarray, mean: tuple, std: tuple) -> np.ndarray:
    """The node's normalisation before 2026-12-02, the baseline for to_network_input."""
    scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
    offset = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)
    return np.ascontiguousarray((rgb.astype(np.float32) * scale + offset).transpose(2, 0, 1)[None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    header = Header(frame_id="camera_optical_frame")
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 8.0, (HEIGHT, WIDTH)).astype(np.float32)
    incoming = serialize_message(Image(header=header, height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3,
                                       data=rgb.tobytes()))
    msg = deserialize_message(incoming, Image)
    points = depth_to_cloud(depth, FX, FX, 319.5, 239.5)
    bgr = colorize_depth(depth, 0.1, 10.0)
    info = ModelInfo("mobilenetv2_mff_lite", {}, 192, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.1, 10.0)
    small = rgb[:192, :256].copy()  # already the network's size: only the normalisation is timed
    fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1) for n, o in cloud_fields(False)]

    rows = [
        ("in: rclpy deserialise rgb8 Image (900 KiB)", lambda: deserialize_message(incoming, Image), None),
        ("in: decode to RGB (image_to_rgb)",
         lambda: image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data), None),
        ("in: normalise for the network (256x192)",
         lambda: normalise_by_broadcasting(small, info.mean, info.std), lambda: to_network_input(small, info)),
        ("out: depth/image 32FC1 (1.2 MiB)",
         lambda: serialize_message(Image(header=header, height=HEIGHT, width=WIDTH, encoding="32FC1",
                                         step=WIDTH * 4, data=depth.tobytes())),
         lambda: depth_image_cdr(header, depth)),
        ("out: depth/colored bgr8 (900 KiB)",
         lambda: serialize_message(Image(header=header, height=HEIGHT, width=WIDTH, encoding="bgr8",
                                         step=WIDTH * 3, data=bgr.tobytes())),
         lambda: image_cdr(header, "bgr8", bgr)),
        ("out: depth/points xyz (4.7 MiB)",
         lambda: serialize_message(PointCloud2(header=header, height=HEIGHT, width=WIDTH, fields=fields,
                                               point_step=16, row_step=WIDTH * 16, data=points.tobytes(),
                                               is_dense=False)),
         lambda: cloud_cdr(header, points, cloud_fields(False))),
        ("compute: point cloud (depth_to_cloud)", lambda: depth_to_cloud(depth, FX, FX, 319.5, 239.5), None),
        ("compute: colour map (colorize_depth)", lambda: colorize_depth(depth, 0.1, 10.0), None),
    ]
    print(f"{'step at 640x480':46s} {'before ms':>13s} {'node now ms':>12s} {'ratio':>7s}")
    for name, before, after in rows:
        first = median_ms(before, args.repeats)
        if after is None:
            print(f"{name:46s} {first:13.2f}")
            continue
        second = median_ms(after, args.repeats)
        print(f"{name:46s} {first:13.2f} {second:12.2f} {second / first:7.3f}")


if __name__ == "__main__":
    main()
