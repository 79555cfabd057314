"""Pseudo-colour rendering: dual-energy attenuation -> effective Z -> vendor-style colour table.

Scanners classify material from the pair (p_H, R = p_L/p_H), not from R alone, because beam
hardening lowers R with thickness. We do the same: per scanner, step wedges of a sugar-like
organic (Zeff ≈ 7), aluminium (13) and steel (26) give R(p_H) reference curves, and a pixel's Zeff
is interpolated between the curves it falls between. The colour table then maps (Zeff, p_H) to
orange (organic) / green (mixed) / blue (metal), darker with thickness, black when opaque.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from models.synth.physics import F32, Scanner, transmission

U8 = npt.NDArray[np.uint8]

REFERENCES = (("sugar", 7.0, 400.0), ("aluminium", 13.0, 80.0), ("steel", 26.0, 25.0))


@dataclass(frozen=True)
class VendorStyle:
    """One vendor's colour table; `randomised` jitters it per image so no single table is learnt."""

    name: str
    organic: tuple[float, float, float]  # RGB 0..255 at mid brightness
    mixed: tuple[float, float, float]
    metal: tuple[float, float, float]
    z_organic_max: float  # Zeff boundary organic/mixed
    z_metal_min: float  # Zeff boundary mixed/metal
    darkness: float  # brightness = exp(−darkness · p_H) ** gamma
    gamma: float
    pale: float  # p_H scale over which colour saturates (thin things look pale)
    background: float  # 0..255 grey level of air
    sharpen: float  # unsharp-mask amount (some vendors' "edge enhancement")

    def randomised(self, rng: np.random.Generator) -> VendorStyle:
        def jitter(c: tuple[float, float, float]) -> tuple[float, float, float]:
            r, g, b = (float(np.clip(v + rng.normal(0, 12), 0, 255)) for v in c)
            return (r, g, b)

        return VendorStyle(
            self.name,
            jitter(self.organic),
            jitter(self.mixed),
            jitter(self.metal),
            self.z_organic_max + rng.normal(0, 0.8),
            self.z_metal_min + rng.normal(0, 1.2),
            self.darkness * rng.uniform(0.8, 1.25),
            self.gamma * rng.uniform(0.85, 1.15),
            self.pale * rng.uniform(0.7, 1.4),
            float(np.clip(self.background - abs(rng.normal(0, 4)), 200, 255)),
            max(self.sharpen + rng.normal(0, 0.1), 0.0),
        )


STYLES: dict[str, VendorStyle] = {
    # A: the classic orange/green/blue
    "A": VendorStyle("A", (240, 140, 40), (70, 175, 60), (40, 80, 220), 10.0, 17.0,
                     0.55, 1.0, 0.25, 255, 0.0),
    # B: amber organics, teal inorganics, violet metal, more contrast
    "B": VendorStyle("B", (225, 175, 55), (50, 160, 150), (100, 60, 200), 9.5, 18.0,
                     0.7, 1.2, 0.18, 250, 0.3),
    # C: brown organics, light green, cyan metal, grey background, edge enhancement
    "C": VendorStyle("C", (195, 115, 70), (125, 200, 95), (50, 150, 215), 10.5, 16.0,
                     0.45, 0.85, 0.35, 238, 0.6),
}


@functools.lru_cache(maxsize=64)
def _curves(scanner: Scanner) -> tuple[F32, list[F32]]:
    grid = np.linspace(0.02, 8.0, 200).astype(np.float32)  # p_H axis
    curves = []
    for name, _, tmax in REFERENCES:
        t = np.geomspace(0.05, tmax, 400).astype(np.float32)[None, :]
        tl, th = transmission({name: t}, scanner)
        ph, pl = -np.log(th[0]), -np.log(tl[0])
        order = np.argsort(ph)
        curves.append(np.interp(grid, ph[order], (pl / ph)[order]).astype(np.float32))
    return grid, curves


def zeff(p_low: F32, p_high: F32, scanner: Scanner) -> F32:
    """Effective-Z estimate per pixel from the (p_H, R) calibration curves of this scanner."""
    grid, (r_org, r_al, r_fe) = _curves(scanner)
    ph = np.clip(p_high, 0.02, 8.0)
    ratio = p_low / ph
    ro, ra, rf = (np.interp(ph, grid, c) for c in (r_org, r_al, r_fe))
    z_low = 7.0 + (ratio - ro) / np.maximum(ra - ro, 1e-3) * 6.0
    z_high = 13.0 + (ratio - ra) / np.maximum(rf - ra, 1e-3) * 13.0
    z = np.where(ratio < ra, z_low, z_high)
    return np.clip(z, 4.0, 30.0).astype(np.float32)


def colourise(p_low: F32, p_high: F32, scanner: Scanner, style: VendorStyle) -> U8:
    """RGB uint8 pseudo-colour image from attenuations p = −ln(I/I_air) of both channels."""
    # Ratios of single noisy pixels are meaningless: estimate material on a smoothed copy.
    pl_s = cv2.GaussianBlur(p_low, (0, 0), 1.2)
    ph_s = cv2.GaussianBlur(p_high, (0, 0), 1.2)
    z = zeff(pl_s, ph_s, scanner)
    w_mixed = 1 / (1 + np.exp(-(z - style.z_organic_max) / 0.8))
    w_metal = 1 / (1 + np.exp(-(z - style.z_metal_min) / 1.0))
    org, mix, met = (np.array(c, np.float32) / 255 for c in (style.organic, style.mixed,
                                                              style.metal))
    base = (
        org * ((1 - w_mixed) * (1 - w_metal))[..., None]
        + mix * (w_mixed * (1 - w_metal))[..., None]
        + met * w_metal[..., None]
    )
    ph = np.clip(p_high, 0.0, None)
    sat = (1 - np.exp(-ph_s.clip(0, None) / style.pale))[..., None]
    tint = 1 - sat * (1 - base)
    bright = np.exp(-style.darkness * ph) ** style.gamma
    rgb = style.background * tint * bright[..., None]
    if style.sharpen > 0:
        blur = cv2.GaussianBlur(rgb, (0, 0), 2.0)
        rgb = rgb + style.sharpen * (rgb - blur)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def grey(p_high: F32) -> U8:
    """The 'B/W' view: high-energy transmission as grey."""
    return np.clip(255 * np.exp(-p_high), 0, 255).astype(np.uint8)
