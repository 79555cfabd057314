"""Image decoding and letterboxing into the model's input tensor (pure functions).

Matches Ultralytics `LetterBox(auto=False, center=True, padding_value=114)`: keep the aspect
ratio, scale the long side to the input size, pad the rest with grey 114, RGB, scaled to 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from screening.inference.errors import ImageDecodeError

LETTERBOX_VALUE = 114  # Ultralytics' padding grey
CROP_BELOW = 0.7  # crop to content only when the parcel spans less than this share of the frame

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits in the model input: input = original * gain + pad."""

    gain: float
    pad_x: float
    pad_y: float
    width: int  # original image size, pixels
    height: int
    crop_x: int = 0  # offset of the letterboxed region in the original (content cropping)
    crop_y: int = 0

    def to_original(self, boxes_xyxy: F32) -> F32:
        """Map (n, 4) x1, y1, x2, y2 boxes from input pixels back to original pixels, clipped."""
        out = boxes_xyxy.astype(np.float32, copy=True).reshape(-1, 4)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.gain + self.crop_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.gain + self.crop_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out


_ROWS = 256  # rows per band when flattening alpha


def decode_image(data: bytes) -> U8:
    """Decode PNG/JPEG bytes (8- or 16-bit, grey, RGB or RGBA) to RGB uint8 (H, W, 3).

    16-bit images (raw detector frames) are scaled to 8 bits by their full range, 65535 -> 255.
    An alpha channel is flattened onto white: white is air on an X-ray display, while the colour
    stored under transparent pixels (often black) would read as a block of dense material."""
    if not data:
        raise ImageDecodeError("empty image")
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageDecodeError("not a decodable PNG/JPEG image")
    if img.dtype == np.uint16:
        # Straight to 8 bits, rounded (no value lands on a .5): no full-size float copies,
        # which for a 16 Mpx RGBA frame were most of a gigabyte.
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB))
    if img.shape[2] == 4:
        flat = np.empty((*img.shape[:2], 3), np.uint8)
        for top in range(0, img.shape[0], _ROWS):  # in bands: float copies of a band only
            band = img[top : top + _ROWS]
            alpha = band[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
            out = band[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5
            flat[top : top + _ROWS] = out.astype(np.uint8)
        return np.ascontiguousarray(cv2.cvtColor(flat, cv2.COLOR_BGR2RGB))
    if img.shape[2] == 3:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    raise ImageDecodeError(f"unsupported channel count {img.shape[2]}")


def letterbox(
    rgb: U8, size: int | tuple[int, int], pad_value: int = LETTERBOX_VALUE
) -> tuple[U8, Letterbox]:
    """Resize keeping aspect into (h, w) = size, centred, padded with 114."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    h, w = rgb.shape[:2]
    gain = min(out_h / h, out_w / w)
    new_w, new_h = max(round(w * gain), 1), max(round(h * gain), 1)
    pad_x, pad_y = (out_w - new_w) / 2, (out_h - new_h) / 2
    interp = cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)  # Ultralytics' rounding
    canvas = np.full((out_h, out_w, 3), pad_value, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, Letterbox(gain, float(left), float(top), w, h)


def content_box(rgb: U8, margin: int = 20, contrast: int = 25) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of what is darker than the air around it, plus `margin`.

    Air is the brightest level of the frame border; an opening removes single-channel streaks
    (a dead detector channel is one pixel wide) so they do not stretch the box."""
    # Work at half resolution: the box needs no finer precision than the margin, and it is
    # four times cheaper. A 1-px streak stays at most 1 px wide and the 3x3 opening removes it.
    small = rgb[::2, ::2]
    grey = np.minimum(np.minimum(small[..., 0], small[..., 1]), small[..., 2])
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    air = int(np.percentile(border, 75))
    dark = (grey < air - contrast).astype(np.uint8)
    opened = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    h, w = rgb.shape[:2]
    pts = cv2.findNonZero(opened)
    if pts is None:
        return 0, 0, w, h
    bx, by, bw, bh = cv2.boundingRect(pts)
    return (max(2 * bx - margin, 0), max(2 * by - margin, 0),
            min(2 * (bx + bw) + margin, w), min(2 * (by + bh) + margin, h))


def to_tensor(images: list[U8], scale: float = 1.0 / 255.0) -> F32:
    """Stack letterboxed RGB images into a float32 NCHW batch scaled by `scale`."""
    batch = np.stack(images).astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def prepare(
    rgb: U8,
    size: int | tuple[int, int],
    *,
    crop_to_content: bool = False,
    pad_value: int = LETTERBOX_VALUE,
) -> tuple[U8, Letterbox]:
    """Optionally crop to the parcel, then letterbox; the transform maps back to `rgb` pixels.

    The crop applies only when the parcel fills less than `CROP_BELOW` of the frame's width or
    height (a belt-wide scanner frame); a frame already cut to the parcel is left as it is."""
    if not crop_to_content:
        return letterbox(rgb, size, pad_value)
    x0, y0, x1, y1 = content_box(rgb)
    h, w = rgb.shape[:2]
    if (x1 - x0) >= CROP_BELOW * w and (y1 - y0) >= CROP_BELOW * h:
        return letterbox(rgb, size, pad_value)
    img, lb = letterbox(rgb[y0:y1, x0:x1], size, pad_value)
    return img, Letterbox(lb.gain, lb.pad_x, lb.pad_y, w, h, x0, y0)


def preprocess(
    data: bytes,
    size: int | tuple[int, int],
    *,
    crop_to_content: bool = False,
    scale: float = 1.0 / 255.0,
) -> tuple[F32, Letterbox]:
    """Bytes -> (1, 3, H, W) float32 input and its letterbox transform."""
    img, lb = prepare(decode_image(data), size, crop_to_content=crop_to_content)
    return to_tensor([img], scale), lb
