"""Dual-energy calibration arithmetic and the standard orange/green/blue pseudo-colour (pure numpy).

Attenuation is ``A = -ln(T)`` with transmission ``T = (raw - dark) / (air - dark)`` per pixel and
channel. On the wire and in files, attenuation is ``uint16`` with ``ATTENUATION_SCALE`` counts per
unit of ``A`` (so ``A`` up to 16, i.e. T down to 1e-7, far below any 16-bit detector's floor).

Pseudo-colour follows the industry convention of baggage and parcel X-ray screens: hue from the
low/high attenuation ratio, a proxy for the effective atomic number (photoelectric absorption
grows as Z^4/E^3, so the low-energy channel is attenuated more by heavier elements), and
brightness from the attenuation:

* ratio < ORGANIC_MAX  -> orange (organic: Z_eff < 10: plastics, paper, drugs, explosives)
* ratio < MIXED_MAX    -> green (mixed / light inorganic: Z_eff 10..18: aluminium, salts, glass)
* otherwise            -> blue (metals: Z_eff > 18: steel, copper, brass)
* thin objects fade to white, attenuation beyond the detector's range is black.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

ATTENUATION_SCALE: Final = 4096.0  # uint16 counts per unit of -ln(T)
MIN_TRANSMISSION: Final = 1e-5  # below a 16-bit detector's noise floor
ORGANIC_MAX: Final = 1.30
MIXED_MAX: Final = 1.80
_RATIO_LO: Final = 0.8
_RATIO_HI: Final = 3.0
_RATIO_BINS: Final = 96
_DENSITY_MAX: Final = 7.0  # -ln(T) where the screen goes black
_DENSITY_BINS: Final = 256

U16Array = npt.NDArray[np.uint16]
F32Array = npt.NDArray[np.float32]
RGBArray = npt.NDArray[np.uint8]

_ORANGE = np.array([255, 150, 30], dtype=np.float32)
_GREEN = np.array([60, 200, 60], dtype=np.float32)
_BLUE = np.array([40, 90, 255], dtype=np.float32)


def attenuation(raw: npt.NDArray[np.uint16], dark: F32Array, air: F32Array) -> F32Array:
    """Per-pixel ``-ln(T)`` of raw detector counts, shape (lines, pixels), float32."""
    span = np.maximum(air - dark, 1.0, dtype=np.float32)
    t: F32Array = (raw.astype(np.float32) - dark) / span
    np.clip(t, MIN_TRANSMISSION, 1.0, out=t)
    np.log(t, out=t)
    np.negative(t, out=t)
    return t


def to_u16(a: F32Array) -> U16Array:
    """Attenuation -> uint16 at ``ATTENUATION_SCALE`` counts per unit."""
    scaled = np.multiply(a, ATTENUATION_SCALE, dtype=np.float32)
    np.clip(scaled, 0.0, 65535.0, out=scaled)
    return np.rint(scaled).astype(np.uint16)


def from_u16(a: npt.NDArray[np.uint16]) -> F32Array:
    return a.astype(np.float32) / np.float32(ATTENUATION_SCALE)


def _hue(ratio: float) -> npt.NDArray[np.float32]:
    # Smooth transitions (0.1 wide) so noise at a boundary does not speckle the image.
    def ramp(x: float, edge: float) -> float:
        return float(np.clip((x - edge) / 0.1 + 0.5, 0.0, 1.0))

    g = ramp(ratio, ORGANIC_MAX)
    b = ramp(ratio, MIXED_MAX)
    rgb: npt.NDArray[np.float32] = (_ORANGE * (1 - g) + _GREEN * g) * (1 - b) + _BLUE * b
    return rgb


def _build_lut() -> RGBArray:
    lut = np.empty((_RATIO_BINS, _DENSITY_BINS, 3), dtype=np.uint8)
    ratios = np.linspace(_RATIO_LO, _RATIO_HI, _RATIO_BINS)
    density = np.linspace(0.0, _DENSITY_MAX, _DENSITY_BINS, dtype=np.float32)
    # saturation: thin material is pale; value: thick material is dark.
    sat = 1.0 - np.exp(-density / 0.35)
    val = np.exp(-density / 3.5)
    white = np.float32(255.0)
    for i, r in enumerate(ratios):
        hue = _hue(float(r))
        colour = (white * (1 - sat[:, None]) + hue[None, :] * sat[:, None]) * val[:, None]
        lut[i] = np.clip(colour, 0, 255).astype(np.uint8)
    return lut


_LUT: Final = _build_lut()


def pseudo_colour(a_high: F32Array, a_low: F32Array) -> RGBArray:
    """RGB uint8 image (lines, pixels, 3) from high/low attenuation."""
    eps = np.float32(0.02)
    ratio = a_low / np.maximum(a_high, eps)
    # Where almost nothing attenuates the ratio is noise: pin it to the organic end.
    ratio[a_high < eps] = _RATIO_LO
    ri = ((ratio - _RATIO_LO) * ((_RATIO_BINS - 1) / (_RATIO_HI - _RATIO_LO))).astype(np.int32)
    np.clip(ri, 0, _RATIO_BINS - 1, out=ri)
    density = (a_high + a_low) * np.float32(0.5)
    di = (density * ((_DENSITY_BINS - 1) / _DENSITY_MAX)).astype(np.int32)
    np.clip(di, 0, _DENSITY_BINS - 1, out=di)
    out: RGBArray = _LUT[ri, di]
    return out


def material_class(a_high: float, a_low: float) -> str:
    """'organic', 'mixed' or 'metal' for a region's mean attenuations (used in tests and UIs)."""
    ratio = a_low / max(a_high, 1e-6)
    if ratio < ORGANIC_MAX:
        return "organic"
    return "mixed" if ratio < MIXED_MAX else "metal"
