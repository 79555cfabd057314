"""Physics-based synthetic dual-energy X-ray parcels (see models/REPORT.md for the model).

Stable API for other packages: `generate_parcel(seed, pixels_per_line=750) -> Parcel`.
"""

from models.synth.scene import GENERATORS, Label, Parcel, generate_parcel

# Bumped whenever a change alters the images a seed produces; recorded in the model manifest.
GENERATOR_VERSION = GENERATORS[-1]

__all__ = ["GENERATORS", "GENERATOR_VERSION", "Label", "Parcel", "generate_parcel"]
