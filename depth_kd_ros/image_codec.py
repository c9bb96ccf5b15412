"""Convert sensor_msgs Image / CompressedImage payloads to and from numpy arrays.

Written by hand because cv_bridge and sensor_msgs_py are not available without a full ROS distro; only
the message *fields* are passed in (encoding, height, width, step, data, is_bigendian), so nothing here
imports rclpy and everything can be tested with plain bytes.

``data`` may be bytes, bytearray, memoryview, ``array.array('B')`` (what rclpy gives) or a numpy uint8
array. It is read through ``np.frombuffer`` without an intermediate copy; every returned array is a new,
writable array that never aliases the message buffer.

Depth follows REP 118: 32FC1 in metres (NaN = invalid) or 16UC1 in millimetres (0 = invalid).
Depth recorded through compressed_depth_image_transport (``compressedDepth`` CompressedImages, what
RealSense/Kinect bags usually hold) is decoded by :func:`compressed_depth_to_metres`.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEPTH_ENCODINGS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "MAX_DECODED_PIXELS",
    "colorize_depth",
    "compressed_image_size",
    "compressed_depth_to_metres",
    "compressed_to_rgb",
    "depth_image_to_metres",
    "depth_to_16uc1",
    "image_to_rgb",
    "label_image_to_ids",
]


class ImageDecodeError(ValueError):
    """An image payload cannot be decoded; the message says which encoding/sizes and what was wrong."""


# encoding -> (channels, bytes per channel, channel order). 8UC3/8UC1/16UC1 are aliases drivers use.
_COLOUR_LAYOUTS: dict[str, tuple[int, int, str]] = {
    "rgb8": (3, 1, "rgb"),
    "bgr8": (3, 1, "bgr"),
    "rgba8": (4, 1, "rgba"),
    "bgra8": (4, 1, "bgra"),
    "mono8": (1, 1, "mono"),
    "mono16": (1, 2, "mono"),
    "8UC3": (3, 1, "bgr"),
    "8UC1": (1, 1, "mono"),
    "16UC1": (1, 2, "mono"),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_COLOUR_LAYOUTS)
_TO_RGB = {"bgr": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB}

# depth encoding -> numpy kind of one element ("f4": metres, "u2": millimetres)
_DEPTH_KINDS: dict[str, str] = {"32FC1": "f4", "16UC1": "u2", "mono16": "u2"}
DEPTH_ENCODINGS: tuple[str, ...] = tuple(_DEPTH_KINDS)
# Default limit on the pixels an image may declare; larger ones are refused before anything is decoded or
# allocated (a 60 KB PNG "bomb" declaring 8000 x 8000 inflates to gigabytes). The node passes its own.
MAX_DECODED_PIXELS = 1 << 26


def _as_bytes(data: Any) -> np.ndarray:
    """View any bytes-like payload as a flat uint8 array without copying it."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(f"image data must be uint8, got a numpy array of dtype {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError as err:
        raise ImageDecodeError(f"image data must be bytes-like, got {type(data).__name__}") from err


def _pixel_view(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: Any,
    channels: int,
    dtype: np.dtype,
) -> np.ndarray:
    """Validate the Image fields and return a zero-copy (height, width, channels) view without row padding."""
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{encoding} image has zero size: height={height}, width={width}")
    itemsize = dtype.itemsize
    min_step = width * channels * itemsize
    if step < min_step:
        raise ImageDecodeError(
            f"{encoding} image step {step} is smaller than width * bytes_per_pixel = "
            f"{width} * {channels * itemsize} = {min_step}"
        )
    if step % itemsize:
        raise ImageDecodeError(
            f"{encoding} image step {step} is not a multiple of {itemsize}, the size of one element"
        )
    buf = _as_bytes(data)
    needed = step * height
    if buf.size < needed:
        raise ImageDecodeError(
            f"{encoding} image data truncated: {height}x{width} with step {step} needs "
            f"{needed} bytes, got {buf.size}"
        )
    rows = buf[:needed].view(dtype).reshape(height, step // itemsize)
    return rows[:, : width * channels].reshape(height, width, channels)


def image_to_rgb(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool = False,
    max_pixels: int = MAX_DECODED_PIXELS, copy: bool = True,
) -> np.ndarray:
    """Decode a sensor_msgs/Image payload to a uint8 (height, width, 3) RGB array.

    Alpha is dropped, mono is replicated to three channels, and mono16/16UC1 keeps its high byte
    (value >> 8) so the full 16-bit range maps onto 0..255. Images over ``max_pixels`` are refused before
    anything is allocated for them. ``copy=False`` lets an rgb8 result view ``data`` (read-only when ``data``
    is ``bytes``): the node reads each frame once, and copying 900 KiB into fresh pages cost it ~1 ms a frame.
    """
    if encoding not in _COLOUR_LAYOUTS:
        raise ImageDecodeError(
            f"unsupported image encoding {_quote(encoding)}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    _check_pixel_count(f"{encoding} image", width, height, max_pixels)
    channels, itemsize, order = _COLOUR_LAYOUTS[encoding]
    dtype = np.dtype(np.uint8) if itemsize == 1 else np.dtype(">u2" if is_bigendian else "<u2")
    pixels = _pixel_view(encoding, height, width, step, data, channels, dtype)

    if order == "rgb":
        return pixels.copy() if copy else pixels
    if order in _TO_RGB:  # cvtColor reads padded rows in place and is several times faster than numpy here
        return cv2.cvtColor(pixels, _TO_RGB[order])
    mono = pixels if itemsize == 1 else (pixels >> 8).astype(np.uint8)
    return np.repeat(mono, 3, axis=2)


def compressed_to_rgb(fmt: str, data: Any, max_pixels: int = MAX_DECODED_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) to a uint8 (height, width, 3) RGB array.

    ``fmt`` is informational ("jpeg", "png", "rgb8; jpeg compressed bgr8"): the codec is recognised from
    the data itself. Grey, 16-bit and alpha images all come back as 8-bit RGB. The size the header declares
    is checked against ``max_pixels`` before decoding: a 60 KB PNG can declare 8000 x 8000 pixels and inflate
    to gigabytes. Other codecs OpenCV could read (TIFF, WebP, ...) are refused for the same reason.
    """
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(
            f"CompressedImage format {_quote(fmt)} is a compressedDepth stream (depth, not colour); "
            "subscribe to the colour image instead"
        )
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageDecodeError(f"CompressedImage data is empty (format {_quote(fmt)})")
    width, height = compressed_image_size(buf, fmt)
    _check_pixel_count(f"CompressedImage ({_quote(fmt)})", width, height, max_pixels)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageDecodeError(f"OpenCV failed on {buf.size} bytes of {_quote(fmt)} data: {err}") from err
    if bgr is None:
        raise ImageDecodeError(
            f"could not decode {buf.size} bytes of CompressedImage data (format {_quote(fmt)}, "
            f"first bytes {bytes(buf[:8]).hex()}); the {width}x{height} image is corrupt or truncated"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _quote(text: str, limit: int = 64) -> str:
    """repr() of a sender-chosen string, cut to ``limit`` characters so that a log line stays a line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _check_pixel_count(what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(f"{what} declares {width}x{height} = {width * height} pixels, over the limit of "
                               f"{max_pixels}; refusing to decode it")


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): each carries the image size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def compressed_image_size(data: Any, fmt: str = "") -> tuple[int, int]:
    """(width, height) that a PNG or JPEG payload declares in its header, read without decoding it.

    Raises :class:`ImageDecodeError` for anything else, or when no size can be found: the header is what
    the caller checks before letting a decoder allocate memory.
    """
    buf = bytes(_as_bytes(data)[:65536])  # JPEG's frame header follows the tables; 64 KiB is plenty
    if buf.startswith(_PNG_SIGNATURE) and len(buf) >= 8 + _PNG_IHDR.size:
        _, chunk, width, height, _, _ = _PNG_IHDR.unpack_from(buf, 8)
        if chunk == b"IHDR" and width and height:
            return width, height
    elif buf.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(buf):
            if buf[pos] != 0xFF:
                break
            marker = buf[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers carry no length
                pos += 2
                continue
            if marker == 0xDA:  # start of scan: the frame header should have come before
                break
            if marker in _JPEG_SOF and pos + 9 <= len(buf):
                height, width = struct.unpack_from(">HH", buf, pos + 5)
                if width and height:
                    return width, height
                break
            pos += 2 + struct.unpack_from(">H", buf, pos + 2)[0]
    raise ImageDecodeError(
        f"{len(buf)} bytes of {_quote(fmt)} data (first bytes {buf[:8].hex()}) are not a PNG or JPEG with a "
        "readable size in its header"
    )


def depth_image_to_metres(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool = False,
    max_pixels: int = MAX_DECODED_PIXELS,
) -> np.ndarray:
    """Decode a REP 118 depth image to float32 (height, width) metres with NaN for invalid pixels.

    32FC1 is metres (non-finite or <= 0 -> NaN); 16UC1/mono16 is millimetres (0 -> NaN). Images over
    ``max_pixels`` are refused before anything is allocated for them.
    """
    if encoding not in _DEPTH_KINDS:
        raise ImageDecodeError(
            f"unsupported depth encoding {_quote(encoding)}; supported: {', '.join(DEPTH_ENCODINGS)}"
        )
    _check_pixel_count(f"{encoding} depth image", width, height, max_pixels)
    kind = _DEPTH_KINDS[encoding]
    dtype = np.dtype((">" if is_bigendian else "<") + kind)
    raw = _pixel_view(encoding, height, width, step, data, 1, dtype)[..., 0]

    if kind == "u2":
        depth = raw.astype(np.float32) / np.float32(1000.0)
        depth[raw == 0] = np.nan
        return depth
    depth = raw.astype(np.float32)  # also converts big-endian to native order
    with np.errstate(invalid="ignore"):
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def label_image_to_ids(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: bool = False
) -> np.ndarray:
    """Decode a 16UC1 / mono16 label image (e.g. the renderer's instance ids) to uint16 (height, width) as is."""
    if encoding not in ("16UC1", "mono16"):
        raise ImageDecodeError(f"unsupported label image encoding {_quote(encoding)}; supported: 16UC1, mono16")
    dtype = np.dtype(">u2" if is_bigendian else "<u2")
    return _pixel_view(encoding, height, width, step, data, 1, dtype)[..., 0].astype(np.uint16)


# compressed_depth_image_transport, decoded by hand: image_transport is not available without a ROS distro.
# Its payload is a ConfigHeader (int32 format, float32 depthParam[2]; native = little-endian order) + the image.
_CONFIG_HEADER = struct.Struct("<iff")
_INV_DEPTH = 0  # the only ConfigHeader.format the codec writes (enum compressionFormat {UNDEFINED = -1, INV_DEPTH})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = struct.Struct(">I4sIIBB")  # chunk length, b"IHDR", width, height, bit depth, colour type


def _compressed_depth_kind(fmt: str) -> tuple[str, str]:
    """``"16UC1; compressedDepth png"`` -> ("16UC1", "png"); the same rules as the codec's decoder."""
    encoding, sep, rest = fmt.partition(";")
    encoding, rest = encoding.strip(), rest.strip()
    known = encoding in ("16UC1", "mono16", "32FC1")
    if (not sep and known) or rest in ("compressedDepth", "compressedDepth png"):  # older writers: png, no suffix
        compression = "png"
    elif rest == "compressedDepth rvl":
        compression = "rvl"
    else:
        raise ImageDecodeError(f"CompressedImage format {_quote(fmt)} is not a compressedDepth format "
                               "(expected e.g. '16UC1; compressedDepth png')")
    if not known:
        raise ImageDecodeError(f"compressedDepth format {_quote(fmt)}: unsupported depth encoding {_quote(encoding)}; "
                               "supported: 16UC1, mono16 (millimetres), 32FC1 (quantised inverse depth)")
    if compression == "rvl":
        raise ImageDecodeError(f"compressedDepth format {_quote(fmt)}: RVL compression is not supported, only png")
    return encoding, compression


def _check_png_header(png: np.ndarray, fmt: str, max_pixels: int) -> None:
    """Refuse a payload that is no PNG, or whose IHDR declares anything but a 16-bit grey image of sane size."""
    if bytes(png[:8]) != _PNG_SIGNATURE or png.size < 8 + _PNG_IHDR.size:
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}): the {png.size} bytes after the 12-byte header "
                               f"are not a PNG (first bytes {bytes(png[:8]).hex()})")
    _, chunk, width, height, bit_depth, colour_type = _PNG_IHDR.unpack_from(bytes(png[8 : 8 + _PNG_IHDR.size]))
    if chunk != b"IHDR" or width == 0 or height == 0:
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}): PNG without a valid IHDR (size {width}x{height})")
    _check_pixel_count(f"compressedDepth ({_quote(fmt)}) PNG", width, height, max_pixels)
    if bit_depth != 16 or colour_type != 0:
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}): PNG is {bit_depth}-bit with colour type "
                               f"{colour_type}; depth must be a 16-bit single-channel (grey, colour type 0) PNG")


def compressed_depth_to_metres(fmt: str, data: Any, max_pixels: int = MAX_DECODED_PIXELS) -> np.ndarray:
    """Decode a compressed_depth_image_transport CompressedImage to float32 (height, width) metres, NaN invalid.

    ``fmt`` is the message's format (``"16UC1; compressedDepth png"``, older ``"16UC1; compressedDepth"``,
    ``"32FC1; compressedDepth png"``). 16UC1: the PNG holds millimetres, 0 = invalid. 32FC1: the PNG holds
    quantised inverse depth q, depth = depthParam[0] / (q - depthParam[1]) and q = 0 is invalid. RVL,
    unknown header formats, truncated or undecodable payloads, and PNGs declaring over ``max_pixels`` pixels
    raise :class:`ImageDecodeError`.
    """
    encoding, _ = _compressed_depth_kind(fmt)
    buf = _as_bytes(data)
    if buf.size <= _CONFIG_HEADER.size:
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}) data truncated: {buf.size} bytes, the header alone is "
                               f"{_CONFIG_HEADER.size}")
    header_format, quant_a, quant_b = _CONFIG_HEADER.unpack_from(bytes(buf[: _CONFIG_HEADER.size]))
    if header_format != _INV_DEPTH:
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}): unknown compression format {header_format} in the "
                               f"header (expected {_INV_DEPTH})")
    png = buf[_CONFIG_HEADER.size :]
    _check_png_header(png, fmt, max_pixels)
    try:
        raw = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}): OpenCV failed on the PNG: {err}") from err
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        got = "nothing (corrupt data)" if raw is None else f"{raw.dtype} {raw.shape}"
        raise ImageDecodeError(f"compressedDepth ({_quote(fmt)}): the PNG decoded to {got}, not 16-bit single-channel")
    if encoding == "32FC1":
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = (np.float32(quant_a) / (raw.astype(np.float32) - np.float32(quant_b))).astype(np.float32)
        depth[raw == 0] = np.nan
        with np.errstate(invalid="ignore"):
            depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        return depth
    depth = raw.astype(np.float32) / np.float32(1000.0)
    depth[raw == 0] = np.nan
    return depth


def depth_to_16uc1(depth: np.ndarray) -> np.ndarray:
    """Metres (NaN = invalid) -> uint16 millimetres with 0 = invalid, as REP 118's 16UC1 (what
    depthimage_to_laserscan, depth_image_proc and rtabmap take). Rounded to the nearest millimetre; depth that
    does not fit (non-finite, under 0.5 mm, over 65.535 m) becomes 0."""
    with np.errstate(invalid="ignore"):
        millimetres = np.rint(depth * np.float32(1000.0))
        valid = (millimetres >= 1) & (millimetres <= 65535)
    return np.where(valid, millimetres, 0).astype(np.uint16)


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Render depth (metres) as a bgr8 (height, width, 3) image for viewing.

    Depth is clipped to [min_depth, max_depth] and mapped with the TURBO colour map, near = red (warm),
    far = blue; NaN and other non-finite pixels are black.
    """
    if not (np.isfinite(min_depth) and np.isfinite(max_depth) and max_depth > min_depth):
        raise ValueError(
            f"need finite min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}"
        )
    valid = np.isfinite(depth)
    scaled = (np.where(valid, depth, max_depth) - min_depth) / (max_depth - min_depth)
    index = np.rint((1.0 - np.clip(scaled, 0.0, 1.0)) * 255.0).astype(np.uint8)
    bgr = cv2.applyColorMap(index, cv2.COLORMAP_TURBO)
    bgr[~valid] = 0
    return bgr
