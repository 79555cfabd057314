"""Simulated parcels as raw dual-energy detector counts, for the virtual scanner and tests.

Two sources behind one interface (``ParcelSource``):

* ``ProceduralSource``: built in, numpy only; a cardboard box with a few objects of organic,
  light-inorganic and metal material (Beer-Lambert with per-material high/low attenuation).
* ``SynthSource``: ``models.synth.generate_parcel`` when that package is installed, re-expressed
  as transmission on this scanner's own dark/air levels.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from .colour import F32Array

# (mu_high, mu_low) per mm; the ratio mu_low / mu_high separates the materials the way a real
# 80/140 kV pair does (organic ~1.2, aluminium ~1.5, steel well above 2).
MATERIALS: Final[dict[str, tuple[float, float]]] = {
    "cardboard": (0.012, 0.014),
    "organic": (0.020, 0.024),
    "aluminium": (0.060, 0.090),
    "steel": (0.30, 0.72),
}


@dataclass(frozen=True, slots=True)
class DetectorModel:
    """Per-pixel dark offset and air (open beam) level of a simulated detector, per channel."""

    dark_high: npt.NDArray[np.uint16]
    dark_low: npt.NDArray[np.uint16]
    air_high: npt.NDArray[np.uint16]
    air_low: npt.NDArray[np.uint16]

    @classmethod
    def create(cls, pixels: int, seed: int = 0) -> DetectorModel:
        rng = np.random.default_rng(seed)
        gain = rng.normal(1.0, 0.06, pixels).clip(0.8, 1.2)  # pixel-to-pixel gain spread
        dark_h = rng.normal(900, 40, pixels)
        dark_l = rng.normal(700, 40, pixels)
        u16 = np.uint16
        return cls(
            dark_high=dark_h.astype(u16),
            dark_low=dark_l.astype(u16),
            air_high=(dark_h + 52_000 * gain).clip(0, 65_000).astype(u16),
            air_low=(dark_l + 38_000 * gain).clip(0, 65_000).astype(u16),
        )

    def expose(
        self, t_high: F32Array, t_low: F32Array, rng: np.random.Generator, noise: float = 0.004
    ) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint16]]:
        """Transmission (lines, pixels) -> raw counts with this detector's dark/air and noise."""
        out = []
        for t, dark, air in (
            (t_high, self.dark_high, self.air_high),
            (t_low, self.dark_low, self.air_low),
        ):
            span = air.astype(np.float32) - dark
            signal = dark + span * t
            signal += rng.normal(0.0, 1.0, t.shape).astype(np.float32) * (
                noise * span * np.sqrt(np.maximum(t, 1e-3))
            )
            out.append(np.clip(signal, 0, 65535).astype(np.uint16))
        return out[0], out[1]


@dataclass(frozen=True, slots=True)
class Phantom:
    """One parcel as transmission per channel, (lines, pixels) float32 in 0..1."""

    t_high: F32Array
    t_low: F32Array
    labels: tuple[str, ...]


class ParcelSource(Protocol):
    def parcel(self, seed: int, pixels: int) -> Phantom: ...


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> npt.NDArray[np.bool_]:
    y, x = np.ogrid[:h, :w]
    mask: npt.NDArray[np.bool_] = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    return mask


class ProceduralSource:
    """Boxes with a few objects of different materials; deterministic per seed."""

    def __init__(self, min_lines: int = 80, max_lines: int = 220) -> None:
        self.min_lines = min_lines
        self.max_lines = max_lines

    def parcel(self, seed: int, pixels: int) -> Phantom:
        rng = np.random.default_rng(seed)
        n = int(rng.integers(self.min_lines, self.max_lines + 1))
        thick = {m: np.zeros((n, pixels), dtype=np.float32) for m in MATERIALS}
        x0 = int(rng.integers(pixels // 10, pixels // 3))
        x1 = int(rng.integers(2 * pixels // 3, pixels - pixels // 10))
        wall = max(2, n // 40)
        thick["cardboard"][:, x0:x1] += 8.0  # top and bottom flaps, mm
        thick["cardboard"][:wall, x0:x1] += 120.0  # leading and trailing walls seen edge-on
        thick["cardboard"][-wall:, x0:x1] += 120.0
        thick["cardboard"][:, x0 : x0 + 3] += 120.0
        thick["cardboard"][:, x1 - 3 : x1] += 120.0
        labels: list[str] = []
        for _ in range(int(rng.integers(1, 5))):
            material = str(rng.choice(["organic", "organic", "aluminium", "steel"]))
            cy = float(rng.uniform(0.25, 0.75) * n)
            cx = float(rng.uniform(x0 + 0.2 * (x1 - x0), x1 - 0.2 * (x1 - x0)))
            ry = float(rng.uniform(0.08, 0.25) * n)
            rx = float(rng.uniform(0.05, 0.2) * (x1 - x0))
            depth = {"organic": 60.0, "aluminium": 15.0, "steel": 4.0}[material]
            thick[material][_ellipse(n, pixels, cy, cx, ry, rx)] += depth * float(
                rng.uniform(0.5, 1.5)
            )
            labels.append(material)
        a_high = np.zeros((n, pixels), dtype=np.float32)
        a_low = np.zeros((n, pixels), dtype=np.float32)
        for m, t in thick.items():
            mu_h, mu_l = MATERIALS[m]
            a_high += mu_h * t
            a_low += mu_l * t
        return Phantom(np.exp(-a_high), np.exp(-a_low), tuple(labels))


class SynthSource:
    """``models.synth.generate_parcel`` parcels (raw counts against their own air level)."""

    def __init__(self, generate: Callable[..., Any] | None = None) -> None:
        if generate is None:
            module = importlib.import_module("models.synth")
            generate = module.generate_parcel
        self._generate = generate

    def parcel(self, seed: int, pixels: int) -> Phantom:
        p = self._generate(seed, pixels_per_line=pixels)

        def transmission(counts: Any, dark: Any, air: Any) -> F32Array:
            d = np.asarray(dark, dtype=np.float32)
            span = np.maximum(np.asarray(air, dtype=np.float32) - d, 1.0)
            t: F32Array = np.clip((np.asarray(counts, dtype=np.float32) - d) / span, 0.0, 1.0)
            return t

        t_h = transmission(p.high, getattr(p, "dark_high", 0), p.air_high)
        t_l = transmission(p.low, getattr(p, "dark_low", 0), p.air_low)
        # The generator's air level is one number per channel, while its leading empty-belt lines
        # show fixed structure (belt rails, detector-card joints). A scanner's per-pixel air
        # calibration removes exactly that, so normalise by those lines here.
        t_h, t_l = _flat_field(t_h), _flat_field(t_l)
        labels = tuple(str(getattr(lbl, "cls", lbl)) for lbl in getattr(p, "labels", ()))
        return Phantom(t_h, t_l, labels)


def _flat_field(t: F32Array, lines: int = 8) -> F32Array:
    profile = np.median(t[:lines], axis=0) if t.shape[0] > 2 * lines else np.ones(t.shape[1])
    dead = profile < 0.05
    out: F32Array = np.clip(t / np.where(dead, 1.0, profile), 0.0, 1.0).astype(np.float32)
    out[:, dead] = 1.0
    return out


def synth_available() -> bool:
    try:
        module = importlib.import_module("models.synth")
    except ImportError:
        return False
    return hasattr(module, "generate_parcel")


def make_source(kind: str) -> ParcelSource:
    """'procedural', 'synth', or 'auto' (synth when models.synth provides it)."""
    if kind == "procedural" or (kind == "auto" and not synth_available()):
        return ProceduralSource()
    return SynthSource()
