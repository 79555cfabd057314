"""Dual-energy forward model: spectrum, sandwich detector, Beer–Lambert, noise and artefacts.

Intensity per channel k (low, high), energy-integrating detector:
    I_k = Σ_E S(E) η_k(E) E · exp(−Σ_m μ_m(E) t_m)
with S the filtered tube spectrum, η_L the absorption of the thin front scintillator and
η_H = exp(−μ_CsI t_front) exp(−μ_Cu t_Cu) (1 − exp(−μ_CsI t_back)) behind the copper filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from models.synth.tables import Tables, load

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Scanner:
    """One simulated machine; every field is randomised per parcel by `random_scanner`."""

    kvp: float  # 140..160
    al_filter_mm: float  # added tube filtration
    front_csi_mm: float  # low-energy scintillator
    cu_filter_mm: float  # filter between the layers
    back_csi_mm: float  # high-energy scintillator
    pitch_mm: float  # detector pitch across the belt
    aspect: float  # belt-speed / line-rate mismatch: along-belt pixel = pitch * aspect
    air_photons: float  # mean detected quanta per pixel per line through air (high channel)
    air_adc: int  # ADC counts through air (high channel)
    dark_adc: int  # ADC offset with the tube off
    read_noise_adc: float
    gain_spread: float  # per-channel gain relative spread (std)
    gain_drift: float  # per-channel gain drift over the scan (std, relative)
    dead_channels: int
    afterglow: float  # fraction of the previous line's signal carried over (lag)
    blur_px: float  # focal spot + line integration blur (Gaussian sigma, pixels)


def random_scanner(rng: np.random.Generator, *, pitch_mm: float | None = None) -> Scanner:
    return Scanner(
        kvp=float(rng.uniform(140.0, 160.0)),
        al_filter_mm=float(rng.uniform(1.0, 3.0)),
        front_csi_mm=float(rng.uniform(0.2, 0.5)),
        cu_filter_mm=float(rng.uniform(0.3, 0.8)),
        back_csi_mm=float(rng.uniform(2.0, 4.0)),
        pitch_mm=float(pitch_mm if pitch_mm is not None else rng.uniform(1.2, 2.0)),
        aspect=float(rng.uniform(0.9, 1.1)),
        air_photons=float(np.exp(rng.uniform(np.log(3e3), np.log(4e4)))),
        air_adc=int(rng.uniform(40000, 60000)),
        dark_adc=int(rng.uniform(100, 600)),
        read_noise_adc=float(rng.uniform(5.0, 30.0)),
        gain_spread=float(rng.uniform(0.002, 0.03)),
        gain_drift=float(rng.uniform(0.0, 0.01)),
        dead_channels=int(rng.choice([0, 0, 0, 1, 2])),
        afterglow=float(rng.uniform(0.0, 0.08)),
        blur_px=float(rng.uniform(0.3, 0.9)),
    )


def channel_weights(scanner: Scanner, tables: Tables | None = None) -> tuple[F32, F32, float]:
    """Energy weights of the low and high channels (each sums to 1 through air) and the ratio of
    detected quanta low/high."""
    t = tables or load()
    e = t.energies_kev
    spec = np.array([np.interp(scanner.kvp, t.kvps, t.spectra[:, i]) for i in range(e.size)])
    spec = np.where(e < scanner.kvp, spec, 0.0)
    spec = spec * np.exp(-t.detector_mu("al_filter") * scanner.al_filter_mm)
    mu_csi = t.detector_mu("csi")
    eta_low = 1.0 - np.exp(-mu_csi * scanner.front_csi_mm)
    eta_high = (
        np.exp(-mu_csi * scanner.front_csi_mm)
        * np.exp(-t.detector_mu("cu_filter") * scanner.cu_filter_mm)
        * (1.0 - np.exp(-mu_csi * scanner.back_csi_mm))
    )
    w_low = spec * eta_low * e
    w_high = spec * eta_high * e
    quanta_ratio = float((spec * eta_low).sum() / (spec * eta_high).sum())
    return (
        (w_low / w_low.sum()).astype(np.float32),
        (w_high / w_high.sum()).astype(np.float32),
        quanta_ratio,
    )


def transmission(
    path_mm: dict[str, F32], scanner: Scanner, tables: Tables | None = None
) -> tuple[F32, F32]:
    """Noise-free transmitted fraction (0..1) in the low and high channels for per-material path
    lengths (mm) on a common pixel grid."""
    t = tables or load()
    names = [n for n, m in path_mm.items() if m.any()]
    shape = next(iter(path_mm.values())).shape
    w_low, w_high, _ = channel_weights(scanner, t)
    if not names:
        return np.ones(shape, np.float32), np.ones(shape, np.float32)
    mu = np.stack([t.mu(n) for n in names])  # (M, E)
    thick = np.stack([path_mm[n].ravel() for n in names], axis=1)  # (P, M)
    out_low = np.empty(thick.shape[0], np.float32)
    out_high = np.empty(thick.shape[0], np.float32)
    w = np.stack([w_low, w_high], axis=1)  # (E, 2)
    step = 65536  # chunk to bound memory: P x E float32
    for s in range(0, thick.shape[0], step):
        trans = np.exp(-(thick[s : s + step] @ mu)) @ w
        out_low[s : s + step] = trans[:, 0]
        out_high[s : s + step] = trans[:, 1]
    return out_low.reshape(shape), out_high.reshape(shape)


def detect(
    t_low: F32, t_high: F32, scanner: Scanner, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint16], int, int]:
    """Raw 16-bit detector counts (rows = scan lines, columns = channels) from noise-free
    transmissions, with blur, Poisson and read noise, per-channel gain, drift, lag and dead
    channels. Returns (high, low, air_high, air_low): air is the mean count through air, dark
    offset included."""
    _, _, quanta_ratio = channel_weights(scanner)
    n_lines, n_ch = t_high.shape
    outs = []
    airs = []
    # The low channel's ADC gain differs from the high one's; its air level sits a bit lower.
    for trans, quanta, air_adc in (
        (t_high, scanner.air_photons, scanner.air_adc),
        (t_low, scanner.air_photons * quanta_ratio, int(scanner.air_adc * 0.85)),
    ):
        sig = cv2.GaussianBlur(trans, (0, 0), scanner.blur_px) if scanner.blur_px > 0 else trans
        photons = rng.poisson(np.clip(sig, 0.0, None) * quanta).astype(np.float32) / quanta
        if scanner.afterglow > 0:
            lagged = photons.copy()
            for j in range(1, n_lines):
                lagged[j] += scanner.afterglow * (lagged[j - 1] - photons[j])
            photons = lagged
        gain = 1.0 + rng.normal(0.0, scanner.gain_spread, n_ch).astype(np.float32)
        drift = rng.normal(0.0, scanner.gain_drift, n_ch).astype(np.float32)
        ramp = np.linspace(0.0, 1.0, n_lines, dtype=np.float32)[:, None]
        gain_map = gain[None, :] * (1.0 + drift[None, :] * ramp)
        span = float(air_adc - scanner.dark_adc)
        counts = scanner.dark_adc + span * photons * gain_map
        counts += rng.normal(0.0, scanner.read_noise_adc, counts.shape).astype(np.float32)
        outs.append(counts)
        airs.append(air_adc)
    dead = rng.choice(n_ch, size=scanner.dead_channels, replace=False)
    for ch in dead:
        # A dead photodiode reads its dark offset in both layers (a black streak after
        # calibration); the bridge's calibration is expected to see it in the air lines.
        for counts in outs:
            counts[:, ch] = scanner.dark_adc + rng.normal(0, scanner.read_noise_adc, n_lines)
    high, low = (np.clip(np.rint(c), 0, 65535).astype(np.uint16) for c in outs)  # ADC saturation
    return high, low, airs[0], airs[1]


def calibrate(
    raw: npt.NDArray[np.uint16], dark: float, air_lines: int = 8
) -> F32:
    """Per-channel flat field from the leading air lines, as scanners do on an empty belt:
    I_norm = (I − D) / (A − D), clipped to (0, 1]."""
    counts = raw.astype(np.float32) - dark
    air = np.median(counts[:air_lines], axis=0)
    air = np.where(air > 1.0, air, np.float32(np.median(air)))  # dead channel: use the typical gain
    return np.clip(counts / air[None, :], 1e-4, 1.0).astype(np.float32)
