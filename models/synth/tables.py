"""Precomputed physics tables: tube spectra and linear attenuation coefficients.

`python -m models.synth.tables` rebuilds `tables.npz` from spekpy and xraydb (the `synth` extra);
generation itself only reads the committed .npz, so it is fast and needs neither package.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.synth.materials import DETECTOR_MATERIALS, MATERIALS

TABLES_PATH = Path(__file__).with_name("tables.npz")

# Energy grid: 4 keV bins from 14 to 162 keV covers a 160 kVp spectrum; finer bins change the
# transmitted intensities by well under the Poisson noise.
ENERGY_EDGES_KEV = np.arange(14.0, 166.0, 4.0)
ENERGIES_KEV = (ENERGY_EDGES_KEV[:-1] + ENERGY_EDGES_KEV[1:]) / 2
KVPS = (140.0, 150.0, 160.0)


@dataclass(frozen=True)
class Tables:
    """Spectra (photons per bin, per kVp) and attenuation (1/mm) per material per energy bin."""

    energies_kev: npt.NDArray[np.float64]
    kvps: npt.NDArray[np.float64]
    spectra: npt.NDArray[np.float64]  # (n_kvp, n_energy), arbitrary units
    material_names: tuple[str, ...]
    mu_per_mm: npt.NDArray[np.float32]  # (n_material, n_energy)
    detector_names: tuple[str, ...]
    detector_mu_per_mm: npt.NDArray[np.float64]  # (n_detector_material, n_energy)

    def mu(self, name: str) -> npt.NDArray[np.float32]:
        return self.mu_per_mm[self.material_names.index(name)]

    def detector_mu(self, name: str) -> npt.NDArray[np.float64]:
        return self.detector_mu_per_mm[self.detector_names.index(name)]


def _bin_mu(formula: str, density: float) -> npt.NDArray[np.float64]:
    import xraydb  # only when rebuilding

    # Average μ over 8 points per bin so K-edges (Pb at 88 keV) land smoothly in their bin.
    sub = np.linspace(ENERGY_EDGES_KEV[:-1], ENERGY_EDGES_KEV[1:], 9)[:-1] + 0.25
    mu_cm = xraydb.material_mu(formula, sub.ravel() * 1000.0, density=density).reshape(sub.shape)
    return np.asarray(mu_cm.mean(axis=0) / 10.0)  # 1/cm -> 1/mm


def build() -> None:
    """Rebuild tables.npz from spekpy (tungsten anode, 12° target) and xraydb (Elam tables)."""
    import spekpy

    spectra = []
    for kvp in KVPS:
        spek = spekpy.Spek(kvp=kvp, th=12.0)
        spek.filter("Be", 0.8)  # tube window; the added Al filtration is randomised at run time
        k, fluence = spek.get_spectrum(edges=False)
        binned = np.histogram(k, bins=ENERGY_EDGES_KEV, weights=fluence)[0]
        spectra.append(binned / binned.sum())
    mu = np.stack([_bin_mu(f, d) for f, d in MATERIALS.values()]).astype(np.float32)
    det = np.stack([_bin_mu(f, d) for f, d in DETECTOR_MATERIALS.values()])
    np.savez_compressed(
        TABLES_PATH,
        energies_kev=ENERGIES_KEV,
        kvps=np.array(KVPS),
        spectra=np.stack(spectra),
        material_names=np.array(list(MATERIALS)),
        mu_per_mm=mu,
        detector_names=np.array(list(DETECTOR_MATERIALS)),
        detector_mu_per_mm=det,
    )


@functools.cache
def load() -> Tables:
    """The committed tables, read once per process."""
    with np.load(TABLES_PATH) as z:
        names = tuple(str(n) for n in z["material_names"])
        if names != tuple(MATERIALS):
            raise RuntimeError("tables.npz is stale: run `python -m models.synth.tables`")
        return Tables(
            energies_kev=z["energies_kev"],
            kvps=z["kvps"],
            spectra=z["spectra"],
            material_names=names,
            mu_per_mm=z["mu_per_mm"].astype(np.float32),
            detector_names=tuple(str(n) for n in z["detector_names"]),
            detector_mu_per_mm=z["detector_mu_per_mm"],
        )


if __name__ == "__main__":
    build()
    print(f"wrote {TABLES_PATH} ({TABLES_PATH.stat().st_size} bytes)")
