"""Decoding and letterboxing: every supported encoding, and the letterbox inverse."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.inference.errors import ImageDecodeError
from screening.inference.preprocess import (
    LETTERBOX_VALUE,
    content_box,
    decode_image,
    letterbox,
    prepare,
    preprocess,
)


def png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def test_png_is_decoded_as_rgb() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's BGR
    rgb = decode_image(png(bgr))
    assert rgb.shape == (4, 5, 3)
    assert (rgb[..., 2] == 200).all()
    assert (rgb[..., 0] == 0).all()


def test_sixteen_bit_grey_is_scaled_to_eight_bits() -> None:
    raw = np.array([[0, 65535], [32768, 257]], np.uint16)
    rgb = decode_image(png(raw))
    assert rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[1, 1, 0] == 1


def test_jpeg_and_rgba_decode() -> None:
    img = np.full((16, 16, 3), 90, np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    assert abs(int(decode_image(jpg).mean()) - 90) <= 2
    rgba = np.dstack([img, np.full((16, 16), 255, np.uint8)])
    assert decode_image(png(rgba)).shape == (16, 16, 3)


def test_sixteen_bit_rgba_decodes_exactly_as_the_per_pixel_formula_in_bands() -> None:
    """The decode works without full-size float copies (a 16 Mpx RGBA frame peaked at most of
    a gigabyte): each pixel still comes out as round(v * 255 / 65535), alpha-flattened onto
    white, across band edges too (600 rows: bands of 256)."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 65536, (600, 37, 4)).astype(np.uint16)
    img.flat[:65536] = np.arange(65536)  # every 16-bit value once
    decoded = decode_image(cv2.imencode(".png", img)[1].tobytes())
    eight = np.floor(img.astype(np.float64) * 255.0 / 65535.0 + 0.5)
    alpha = eight[:, :, 3:4] / 255.0
    flat = np.floor(eight[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5)
    expected = flat[:, :, ::-1].astype(np.uint8)  # OpenCV's BGR to RGB
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1  # float32 vs 64
    assert (decoded != expected).mean() < 0.001


def test_transparent_pixels_are_air_not_dense_material() -> None:
    # A parcel cut-out on a transparent background: the colour stored under the transparency
    # is black, which an X-ray display means as opaque material; air is white.
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[:2, :, :3] = (40, 90, 200)  # an orange-ish object (BGR), fully opaque
    bgra[:2, :, 3] = 255
    bgra[2, :, 3] = 128  # half transparent over black
    rgb = decode_image(png(bgra))
    assert rgb[0, 0].tolist() == [200, 90, 40]
    assert rgb[3, 0].tolist() == [255, 255, 255]
    assert rgb[2, 0].tolist() == [127, 127, 127]


@pytest.mark.parametrize("data", [b"", b"not an image", png(np.zeros((8, 8), np.uint8))[:30]])
def test_undecodable_bytes_raise(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_letterbox_pads_with_114_and_centres() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    out, lb = letterbox(img, 64)
    assert out.shape == (64, 64, 3)
    assert lb.gain == pytest.approx(0.64)
    assert lb.pad_x == 0
    assert lb.pad_y == 16
    assert (out[:16] == LETTERBOX_VALUE).all()
    assert (out[-16:] == LETTERBOX_VALUE).all()
    assert (out[16:48] == 0).all()


@settings(max_examples=60, deadline=None)
@given(w=st.integers(8, 900), h=st.integers(8, 900), size=st.sampled_from([64, 256, 320]),
       fx=st.floats(0, 0.9), fy=st.floats(0, 0.9))
def test_letterbox_inverse_maps_boxes_back(w: int, h: int, size: int, fx: float, fy: float
                                           ) -> None:
    img = np.zeros((h, w, 3), np.uint8)
    _, lb = letterbox(img, size)
    box = np.array([[fx * w, fy * h, (fx + 0.1) * w, (fy + 0.1) * h]], np.float32)
    forward = box.copy()
    forward[:, [0, 2]] = forward[:, [0, 2]] * lb.gain + lb.pad_x
    forward[:, [1, 3]] = forward[:, [1, 3]] * lb.gain + lb.pad_y
    assert np.allclose(lb.to_original(forward), box, atol=1e-3 * max(w, h))


def test_content_crop_finds_the_parcel_and_ignores_a_streak() -> None:
    img = np.full((200, 600, 3), 250, np.uint8)
    img[50:150, 300:400] = 120  # the parcel
    img[:, 40] = 0  # a dead channel: one-pixel streak along the scan
    x0, y0, x1, y1 = content_box(img, margin=10)
    assert (x0, y0, x1, y1) == (290, 40, 410, 160)
    _tensor_img, lb = prepare(img, 64, crop_to_content=True)
    back = lb.to_original(np.array([[0, 0, 64, 64]], np.float32))[0]
    # prepare() uses the default 20 px margin
    assert back[0] == pytest.approx(280, abs=1)
    assert back[2] == pytest.approx(420, abs=1)


def test_preprocess_returns_nchw_scaled_tensor() -> None:
    x, lb = preprocess(png(np.full((10, 20, 3), 255, np.uint8)), 32)
    assert x.shape == (1, 3, 32, 32)
    assert x.dtype == np.float32
    assert x.max() == pytest.approx(1.0)
    assert x.min() == pytest.approx(114 / 255)
    assert (lb.width, lb.height) == (20, 10)
