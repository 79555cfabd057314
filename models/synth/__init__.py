"""Physics-based synthetic dual-energy X-ray parcels (see models/REPORT.md for the model).

Stable API for other packages: `generate_parcel(seed, pixels_per_line=750) -> Parcel`.
"""

from models.synth.scene import Label, Parcel, generate_parcel

# Bumped whenever a change alters the images a seed produces; recorded in the model manifest.
GENERATOR_VERSION = "1.0.0"

__all__ = ["GENERATOR_VERSION", "Label", "Parcel", "generate_parcel"]
