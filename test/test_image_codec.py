"""image_codec: every encoding against hand-written pixels, compressed round trips, depth and colour map."""

import array
import struct
import zlib

import cv2
import numpy as np
import pytest

from depth_kd_ros.image_codec import (
    MAX_DECODED_PIXELS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    colorize_depth,
    compressed_depth_to_metres,
    compressed_image_size,
    compressed_to_rgb,
    depth_image_to_metres,
    depth_to_16uc1,
    image_to_rgb,
)

PAD = 99  # value of row-padding bytes; must never show up in a decoded image

# 2 x 2 three-channel image, step 8 = 6 pixel bytes + 2 padding bytes per row
THREE_CHANNEL = bytes([1, 2, 3, 4, 5, 6, PAD, PAD, 7, 8, 9, 10, 11, 12, PAD, PAD])
# the same bytes read as 2 x 2 four-channel pixels (step 8, no padding)
FOUR_CHANNEL = bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
# 2 x 3 mono8, step 4
MONO8 = bytes([10, 20, 30, PAD, 40, 50, 60, PAD])
# 1 x 3 mono16 values 0x1234, 0xABCD, 0x00FF with 2 padding bytes (step 8)
MONO16_LE = bytes([0x34, 0x12, 0xCD, 0xAB, 0xFF, 0x00, PAD, PAD])
MONO16_BE = bytes([0x12, 0x34, 0xAB, 0xCD, 0x00, 0xFF, PAD, PAD])


def grey3(rows):
    """Expected RGB for a mono image: each value replicated to three channels."""
    return np.repeat(np.array(rows, dtype=np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize(
    "encoding, height, width, step, data, expected",
    [
        ("rgb8", 2, 2, 8, THREE_CHANNEL, [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]),
        ("bgr8", 2, 2, 8, THREE_CHANNEL, [[[3, 2, 1], [6, 5, 4]], [[9, 8, 7], [12, 11, 10]]]),
        ("8UC3", 2, 2, 8, THREE_CHANNEL, [[[3, 2, 1], [6, 5, 4]], [[9, 8, 7], [12, 11, 10]]]),
        ("rgba8", 2, 2, 8, FOUR_CHANNEL, [[[1, 2, 3], [5, 6, 7]], [[9, 10, 11], [13, 14, 15]]]),
        ("bgra8", 2, 2, 8, FOUR_CHANNEL, [[[3, 2, 1], [7, 6, 5]], [[11, 10, 9], [15, 14, 13]]]),
        ("mono8", 2, 3, 4, MONO8, grey3([[10, 20, 30], [40, 50, 60]])),
        ("8UC1", 2, 3, 4, MONO8, grey3([[10, 20, 30], [40, 50, 60]])),
        ("mono16", 1, 3, 8, MONO16_LE, grey3([[0x12, 0xAB, 0x00]])),
        ("16UC1", 1, 3, 8, MONO16_LE, grey3([[0x12, 0xAB, 0x00]])),
    ],
)
def test_image_to_rgb_hand_computed(encoding, height, width, step, data, expected):
    rgb = image_to_rgb(encoding, height, width, step, data)
    assert rgb.dtype == np.uint8 and rgb.shape == (height, width, 3)
    np.testing.assert_array_equal(rgb, np.array(expected, dtype=np.uint8))
    assert rgb.flags.c_contiguous


def test_every_supported_encoding_is_covered():
    required = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "8UC1", "16UC1"}
    assert required <= set(SUPPORTED_ENCODINGS)


def test_mono16_big_endian():
    rgb = image_to_rgb("mono16", 1, 3, 8, MONO16_BE, is_bigendian=True)
    np.testing.assert_array_equal(rgb, grey3([[0x12, 0xAB, 0x00]]))
    # the same bytes read as little-endian give different pixels: the flag is honoured
    assert not np.array_equal(image_to_rgb("mono16", 1, 3, 8, MONO16_BE), rgb)


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b), lambda b: np.array(list(b), np.uint8)],
    ids=["bytes", "bytearray", "memoryview", "array.array", "numpy"],
)
def test_accepts_every_buffer_type(wrap):
    rgb = image_to_rgb("bgr8", 2, 2, 8, wrap(THREE_CHANNEL))
    np.testing.assert_array_equal(rgb[1, 1], [12, 11, 10])


def test_result_is_writable_and_does_not_alias_the_message():
    data = array.array("B", THREE_CHANNEL)  # what rclpy hands over
    rgb = image_to_rgb("rgb8", 2, 2, 8, data)
    data[0] = 200
    assert rgb[0, 0, 0] == 1
    rgb[0, 0, 0] = 5  # must not raise (read-only views would)


def test_trailing_bytes_after_last_row_are_ignored():
    rgb = image_to_rgb("rgb8", 2, 2, 8, THREE_CHANNEL + b"\x00\x00")
    np.testing.assert_array_equal(rgb[1, 0], [7, 8, 9])


@pytest.mark.parametrize(
    "args, kwargs, fragments",
    [
        (("yuv422", 2, 2, 8, THREE_CHANNEL), {}, ["'yuv422'", "rgb8", "mono16", "8UC3"]),
        (("rgb8", 0, 2, 8, b""), {}, ["rgb8", "height=0", "width=2"]),
        (("rgb8", 2, 0, 8, THREE_CHANNEL), {}, ["width=0"]),
        (("rgb8", 2, 2, 5, THREE_CHANNEL), {}, ["rgb8", "step 5", "2 * 3 = 6"]),
        (("rgb8", 2, 2, 8, THREE_CHANNEL[:15]), {}, ["truncated", "2x2", "step 8", "needs 16 bytes, got 15"]),
        (("mono16", 1, 3, 7, MONO16_LE), {}, ["mono16", "step 7", "multiple of 2"]),
        (("rgb8", 2, 2, 8, np.zeros(16, np.float32)), {}, ["uint8", "float32"]),
        (("rgb8", 2, 2, 8, [1, 2, 3]), {}, ["bytes-like", "list"]),
    ],
)
def test_image_to_rgb_errors(args, kwargs, fragments):
    with pytest.raises(ImageDecodeError) as err:
        image_to_rgb(*args, **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_image_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


# --- compressed -------------------------------------------------------------------------------------

def _test_pattern() -> np.ndarray:
    """A smooth 48 x 64 RGB pattern with distinct channels (jpeg-friendly)."""
    v, u = np.mgrid[0:48, 0:64]
    return np.stack([u * 4, v * 5, 255 - u * 2], axis=2).astype(np.uint8)


def test_png_round_trip_is_exact():
    rgb = _test_pattern()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb("png", png.tobytes()), rgb)
    np.testing.assert_array_equal(compressed_to_rgb("bgr8; png compressed bgr8", array.array("B", png)), rgb)


def test_jpeg_round_trip_is_close_and_rgb_ordered():
    rgb = _test_pattern()
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = compressed_to_rgb("rgb8; jpeg compressed bgr8", jpg.tobytes())
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0


def test_grayscale_png_gives_three_equal_channels():
    grey = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    ok, png = cv2.imencode(".png", grey)
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb("png", png.tobytes()), grey3(grey))


@pytest.mark.parametrize(
    "fmt, data, fragment",
    [
        ("jpeg", b"", "empty"),
        ("jpeg", b"not an image at all", r"19 bytes of 'jpeg' data \(first bytes 6e6f7420616e2069\) are not a PNG"),
        ("tiff", b"II*\x00" + b"\x00" * 16, "not a PNG or JPEG"),  # OpenCV could, but its size is unchecked
        ("16UC1; compressedDepth png", b"\x00" * 20, "compressedDepth"),
    ],
)
def test_compressed_errors(fmt, data, fragment):
    with pytest.raises(ImageDecodeError, match=fragment):
        compressed_to_rgb(fmt, data)


def _encoded(ext: str, height: int = 30, width: int = 50, params: tuple = ()) -> bytes:
    ok, data = cv2.imencode(ext, np.zeros((height, width, 3), np.uint8), list(params))
    assert ok
    return data.tobytes()


def _png_declaring(width: int, height: int) -> bytes:
    """A 60-odd byte PNG whose header declares width x height: what a decompression bomb looks like."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data", [
    _encoded(".png"),
    _encoded(".jpg"),
    _encoded(".jpg", params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    # an APP1 (EXIF-like) segment before the tables: the frame header is found by walking the segments
    _encoded(".jpg")[:2] + b"\xff\xe1" + struct.pack(">H", 2 + 300) + b"\x00" * 300 + _encoded(".jpg")[2:],
])
def test_compressed_image_size_reads_the_header(data):
    assert compressed_image_size(data) == (50, 30)


def test_compressed_bomb_is_refused_by_its_header_before_decoding():
    bomb = _png_declaring(16000, 16000)
    assert len(bomb) < 100
    with pytest.raises(ImageDecodeError, match="declares 16000x16000 = 256000000 pixels, over the limit of 8388608"):
        compressed_to_rgb("png", bomb, max_pixels=8_388_608)
    jpeg = _encoded(".jpg", 40, 60)
    with pytest.raises(ImageDecodeError, match="60x40 = 2400 pixels, over the limit of 2000"):
        compressed_to_rgb("jpeg", jpeg, max_pixels=2000)
    assert compressed_to_rgb("jpeg", jpeg, max_pixels=2400).shape == (40, 60, 3)


def test_truncated_image_with_a_valid_header_names_its_size():
    with pytest.raises(ImageDecodeError, match="50x30 image is corrupt or truncated"):
        compressed_to_rgb("jpeg", _encoded(".jpg")[:200])


def test_raw_image_over_the_limit_is_refused_before_its_data_is_read():
    # no data at all: the size check must come first, or this would be a "truncated" error
    with pytest.raises(ImageDecodeError, match="rgb8 image declares 65535x65535 .* over the limit"):
        image_to_rgb("rgb8", 65535, 65535, 3 * 65535, b"", max_pixels=8_388_608)


def test_sender_chosen_strings_are_quoted_briefly():
    with pytest.raises(ImageDecodeError) as err:
        compressed_to_rgb("x" * 20_000, b"GIF89a" + b"\x00" * 10)
    assert len(str(err.value)) < 300 and "(20000 characters)" in str(err.value)
    with pytest.raises(ImageDecodeError) as err:
        image_to_rgb("y" * 20_000, 1, 1, 3, b"\x00" * 3)
    assert len(str(err.value)) < 300


# --- depth ------------------------------------------------------------------------------------------

def test_32fc1_metres_invalid_to_nan_with_padding_and_both_byte_orders():
    values = [1.5, float("nan"), -1.0, float("inf"), 0.0, 2.25]
    for order, big in (("<", False), (">", True)):
        pad = b"\x00" * 4  # step 16 = 3 floats + 4 bytes
        data = struct.pack(order + "3f", *values[:3]) + pad + struct.pack(order + "3f", *values[3:]) + pad
        depth = depth_image_to_metres("32FC1", 2, 3, 16, data, is_bigendian=big)
        assert depth.dtype == np.float32 and depth.shape == (2, 3)
        np.testing.assert_array_equal(depth, [[1.5, np.nan, np.nan], [np.nan, np.nan, 2.25]])


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_16uc1_millimetres_zero_to_nan(encoding):
    data = struct.pack("<4H", 0, 1000, 1500, 65535)
    depth = depth_image_to_metres(encoding, 2, 2, 4, array.array("B", data))
    np.testing.assert_allclose(depth, [[np.nan, 1.0], [1.5, 65.535]], rtol=1e-7)
    big_endian = struct.pack(">4H", 0, 1000, 1500, 65535)
    big = depth_image_to_metres(encoding, 2, 2, 4, big_endian, is_bigendian=True)
    np.testing.assert_array_equal(big, depth)


def test_depth_decode_errors():
    with pytest.raises(ImageDecodeError, match="unsupported depth encoding 'rgb8'.*32FC1"):
        depth_image_to_metres("rgb8", 1, 1, 3, b"\x00\x00\x00")
    with pytest.raises(ImageDecodeError, match="needs 16 bytes, got 12"):
        depth_image_to_metres("32FC1", 2, 2, 8, b"\x00" * 12)
    with pytest.raises(ImageDecodeError, match="step 6 is not a multiple of 4"):
        depth_image_to_metres("32FC1", 1, 1, 6, b"\x00" * 6)


# --- compressedDepth (compressed_depth_image_transport) ----------------------------------------------

def compressed_depth(png_image, header_format=0, quant_a=0.0, quant_b=0.0):
    """A compressedDepth payload built by hand: 12-byte ConfigHeader + PNG of ``png_image``."""
    ok, png = cv2.imencode(".png", png_image)
    assert ok
    return struct.pack("<iff", header_format, quant_a, quant_b) + png.tobytes()


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "16UC1; compressedDepth", "mono16; compressedDepth"])
def test_compressed_depth_16uc1_millimetres(fmt):
    mm = np.array([[0, 1000, 1500], [65535, 1, 4321]], dtype=np.uint16)
    depth = compressed_depth_to_metres(fmt, compressed_depth(mm))
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    np.testing.assert_allclose(depth, [[np.nan, 1.0, 1.5], [65.535, 0.001, 4.321]], rtol=1e-7)


def test_compressed_depth_32fc1_quantised_inverse_depth():
    # Quantise as the codec's encoder does (depth_quantization z0 = 100, depth_max = 10 m): q = A / d + B.
    metres = np.array([[0.5, 1.0, 2.0], [4.0, 9.5, 12.0]], dtype=np.float32)  # 12 m >= depth_max: invalid
    quant_a = np.float32(100.0 * 101.0)
    quant_b = np.float32(1.0) - quant_a / np.float32(10.0)
    q = np.where(metres < 10.0, quant_a / metres + quant_b, 0).astype(np.uint16)
    payload = compressed_depth(q, quant_a=float(quant_a), quant_b=float(quant_b))
    depth = compressed_depth_to_metres("32FC1; compressedDepth png", array.array("B", payload))
    assert depth.dtype == np.float32 and np.isnan(depth[1, 2])
    expected = quant_a / (q.astype(np.float32) - quant_b)
    np.testing.assert_allclose(depth[np.isfinite(depth)], expected[q > 0], rtol=1e-6)
    np.testing.assert_allclose(depth[np.isfinite(depth)], metres[metres < 10], rtol=2e-3)  # quantisation error


def _png_with_ihdr_size(width, height):
    png = bytearray(cv2.imencode(".png", np.zeros((2, 2), np.uint16))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)  # the IHDR's width and height (CRC not fixed: never read)
    return struct.pack("<iff", 0, 0, 0) + bytes(png)


@pytest.mark.parametrize(
    "fmt, data, fragment",
    [
        ("16UC1; compressedDepth rvl", struct.pack("<iff", 0, 0, 0) + b"\x02\0\0\0", "RVL compression is not supp"),
        ("16UC1; jpeg compressed", b"\0" * 20, "not a compressedDepth format"),
        ("rgb8; compressedDepth png", b"\0" * 20, "unsupported depth encoding 'rgb8'"),
        ("16UC1; compressedDepth png", b"\0" * 12, "truncated: 12 bytes"),
        ("16UC1; compressedDepth png", b"", "truncated: 0 bytes"),
        ("16UC1; compressedDepth png", compressed_depth(np.ones((2, 2), np.uint16), header_format=1),
         "unknown compression format 1 in the header"),
        ("16UC1; compressedDepth png", struct.pack("<iff", 0, 0, 0) + b"\xff\xd8 jpeg", "are not a PNG"),
        ("16UC1; compressedDepth png", compressed_depth(np.ones((2, 2), np.uint16))[:40], "PNG decoded to nothing"),
        ("16UC1; compressedDepth png", compressed_depth(np.ones((2, 2), np.uint8)), "PNG is 8-bit with colour type 0"),
        ("16UC1; compressedDepth png", compressed_depth(np.ones((2, 2, 3), np.uint16)), "16-bit with colour type 2"),
        ("16UC1; compressedDepth png", _png_with_ihdr_size(1 << 20, 1 << 20), "over the limit"),
    ],
)
def test_compressed_depth_errors(fmt, data, fragment):
    with pytest.raises(ImageDecodeError, match=fragment):
        compressed_depth_to_metres(fmt, data)


def test_compressed_depth_size_limit_is_checked_before_decoding():
    assert MAX_DECODED_PIXELS == 1 << 26
    compressed_depth_to_metres("16UC1; compressedDepth png", compressed_depth(np.ones((2, 3), np.uint16)))
    with pytest.raises(ImageDecodeError, match="declares 8193x8192 = 67117056 pixels"):
        compressed_depth_to_metres("16UC1; compressedDepth png", _png_with_ihdr_size(8193, 8192))
    with pytest.raises(ImageDecodeError, match="over the limit of 5"):  # the caller's limit (the node's parameter)
        compressed_depth_to_metres("16UC1; compressedDepth png", compressed_depth(np.ones((2, 3), np.uint16)),
                                   max_pixels=5)


def test_raw_depth_size_limit_is_checked_before_its_data():
    with pytest.raises(ImageDecodeError, match="16UC1 depth image declares 65535x65535"):
        depth_image_to_metres("16UC1", 65535, 65535, 2 * 65535, b"", max_pixels=8_388_608)


# --- colour map -------------------------------------------------------------------------------------

def _turbo(index: int) -> np.ndarray:
    return cv2.applyColorMap(np.array([[index]], dtype=np.uint8), cv2.COLORMAP_TURBO)[0, 0]


def test_colorize_depth_near_warm_far_cold_nan_black():
    depth = np.array([[0.5, 1.0, 5.5], [10.0, 20.0, np.nan]], dtype=np.float32)
    bgr = colorize_depth(depth, 1.0, 10.0)
    assert bgr.shape == (2, 3, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr[0, 0], _turbo(255))  # nearer than min clips to the near end
    np.testing.assert_array_equal(bgr[0, 1], _turbo(255))
    np.testing.assert_array_equal(bgr[0, 2], _turbo(128))  # midway: rint(0.5 * 255) = 128
    np.testing.assert_array_equal(bgr[1, 0], _turbo(0))
    np.testing.assert_array_equal(bgr[1, 1], _turbo(0))  # farther than max clips to the far end
    np.testing.assert_array_equal(bgr[1, 2], [0, 0, 0])
    assert bgr[0, 0, 2] > bgr[0, 0, 0]  # near: red > blue
    assert bgr[1, 0, 0] > bgr[1, 0, 2]  # far: blue > red


def test_colorize_depth_rejects_bad_range():
    with pytest.raises(ValueError, match="min_depth=2.0, max_depth=2.0"):
        colorize_depth(np.ones((2, 2), np.float32), 2.0, 2.0)


def test_depth_to_16uc1_millimetres_rounded_and_zero_for_invalid():
    metres = np.array([[1.0, 1.2344, 1.2346, 0.0004, 65.535, 65.536, np.nan, np.inf, -2.0, 0.0]], np.float32)
    out = depth_to_16uc1(metres)
    assert out.dtype == np.uint16 and out.shape == metres.shape
    np.testing.assert_array_equal(out, [[1000, 1234, 1235, 0, 65535, 0, 0, 0, 0, 0]])
    # and back through the decoder: millimetres -> metres, 0 -> NaN
    back = depth_image_to_metres("16UC1", 1, 10, 20, out.tobytes())
    np.testing.assert_allclose(back[0, :3], [1.0, 1.234, 1.235], rtol=1e-6)
    assert np.isnan(back[0, 3]) and np.isnan(back[0, 6:]).all()


def test_copy_false_views_the_message_read_only():
    rgb = image_to_rgb("rgb8", 2, 2, 8, THREE_CHANNEL, copy=False)  # bytes, as a raw subscription hands them over
    np.testing.assert_array_equal(rgb[1, 0], [7, 8, 9])
    assert np.shares_memory(rgb, np.frombuffer(THREE_CHANNEL, np.uint8))
    with pytest.raises(ValueError):
        rgb[0, 0, 0] = 5
    assert image_to_rgb("bgr8", 2, 2, 8, THREE_CHANNEL, copy=False).flags.writeable  # conversions still copy
