"""Materials the generator knows: chemical formula and bulk density for each.

Densities are bulk values as the object is packed (g/cm³): corrugated board and folded cloth are
mostly air, so their densities are far below those of cellulose or polyester fibre.
"""

from __future__ import annotations

from typing import Final

# name -> (formula for xraydb, density g/cm³)
MATERIALS: Final[dict[str, tuple[str, float]]] = {
    "belt": ("C2H3Cl", 1.35),  # PVC conveyor belt
    "cardboard": ("C6H10O5", 0.25),  # corrugated board, effective
    "paper": ("C6H10O5", 0.85),  # books, stacked paper
    "cloth": ("C10H8O4", 0.30),  # folded polyester/cotton, effective
    "polyethylene": ("C2H4", 0.94),
    "pet": ("C10H8O4", 1.38),
    "water": ("H2O", 1.00),
    "ethanol": ("C2H6O", 0.79),  # flammable-liquid stand-in
    "butane": ("C4H10", 0.57),  # liquefied gas in aerosol and camping cans
    "sugar": ("C12H22O11", 0.90),  # bulk granulated: food, and the drug look-alike
    "drug_like": ("C17H22ClNO4", 1.15),  # compressed cocaine·HCl-like brick
    "explosive_like": ("C3H6N6O6", 1.60),  # RDX-based plastic explosive
    "ammonium_nitrate": ("NH4NO3", 0.85),  # bulk AN prills
    "rubber": ("C5H8", 1.15),  # soles, with filler
    "pcb": ("C3H4OSi0.5O1Cu0.05", 1.85),  # FR-4 with copper layers, approximate
    "glass": ("SiO2", 2.50),
    "ceramic": ("ZrO2", 6.00),  # ceramic blades
    "aluminium": ("Al", 2.70),
    "steel": ("Fe", 7.85),
    "copper": ("Cu", 8.96),
    "brass": ("Cu0.63Zn0.37", 8.50),
    "lead": ("Pb", 11.35),
    "li_ion": ("C6LiCoO2Cu0.3Al0.3", 2.60),  # jelly roll: graphite, LiCoO2, Cu and Al foils
}

# Detector and filter materials, not placed in parcels.
DETECTOR_MATERIALS: Final[dict[str, tuple[str, float]]] = {
    "csi": ("CsI", 4.51),  # scintillator
    "cu_filter": ("Cu", 8.96),  # inter-layer filter of the sandwich detector
    "al_filter": ("Al", 2.70),  # tube filtration
}
