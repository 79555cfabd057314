"""One parcel on the belt: carton, contents, threats, concealment; rendered to raw detector counts
with boxes and occlusion levels per threat."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from models.synth import objects
from models.synth.geometry import F32, Part, Shape, rasterise, rotation
from models.synth.physics import Scanner, detect, random_scanner, transmission
from models.synth.tables import load
from models.taxonomy import CLASSES

U16 = npt.NDArray[np.uint16]

# The generator versions this code renders, the current last. A version changes whenever a seed's
# image changes; the older ones stay renderable so that a recorded recipe replays on its data.
GENERATORS = ("1.0.0", "1.1.0")

# Reference energy for footprints and occlusion (keV): about the mean energy of the high channel.
REFERENCE_KEV = 70.0
# A pixel belongs to an object's footprint when the object alone attenuates >= 5 % at 70 keV.
FOOTPRINT_ATTENUATION = 0.05
# Background counts as covering a threat pixel when it alone removes >= 63 % (μt >= 1) at 70 keV:
# about 2 mm of steel or 50 mm of water.
OCCLUDING_ATTENUATION = 1.0
# Occlusion levels after OPIXray OL1-OL3: share of the footprint behind dense background.
OCCLUSION_LEVEL_EDGES = (0.25, 0.6)


@dataclass(frozen=True)
class Label:
    """A threat in the image: class, pixel box (x0, y0, x1, y1; x = detector channel, y = scan
    line; x1/y1 exclusive) and how much of it lies behind dense background."""

    cls: str
    box: tuple[int, int, int, int]
    occlusion: float  # 0..1: share of the footprint behind background with μt >= 1
    occlusion_level: int  # 1 (clear) .. 3 (hidden)

    @property
    def class_id(self) -> int:
        return CLASSES.index(self.cls)


@dataclass(frozen=True)
class Parcel:
    """Raw dual-energy scan of one parcel, as the scanner's detector cards deliver it.

    `high`/`low` are uint16 counts, shape (n_lines, pixels_per_line): a row is one scan line across
    the belt, rows advance along the belt; the first lines are empty belt (air). `air_*` are the
    mean counts through the empty belt, `dark_*` the counts with the tube off (the offset);
    normalised transmission = (count − dark) / (air − dark).
    """

    seed: int
    high: U16
    low: U16
    air_high: int
    air_low: int
    dark_high: int
    dark_low: int
    labels: tuple[Label, ...]
    pitch_mm: float  # across the belt, per detector channel
    line_pitch_mm: float  # along the belt, per scan line
    parcel_box: tuple[int, int, int, int]  # the carton's footprint in pixels (x0, y0, x1, y1)
    scanner: Scanner


def _fit(item: objects.Item, rng: np.random.Generator, inner: np.ndarray, rot: np.ndarray,
         anchor: np.ndarray | None = None, *, strict: bool = True) -> objects.Item | None:
    """Pose `item` with `rot` and translate it inside the carton interior `inner` ((2, 3) lo/hi);
    near `anchor` (x, y) when given (concealment). None when it does not fit across the belt or
    along it and `strict`; otherwise an oversized item is centred (it bulges the carton)."""
    posed = item.posed(rot, np.zeros(3))
    pts = np.concatenate([p.world_corners() for p in posed.parts])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = np.empty(3)
    for i in range(3):
        room_lo, room_hi = inner[0, i] - lo[i], inner[1, i] - hi[i]
        if room_hi < room_lo:
            if strict and i < 2:
                return None
            centre[i] = (room_lo + room_hi) / 2
        elif anchor is not None and i < 2:
            want = anchor[i] - (lo[i] + hi[i]) / 2 + rng.normal(0, 15)
            centre[i] = float(np.clip(want, room_lo, room_hi))
        else:
            centre[i] = rng.uniform(room_lo, room_hi)
    return item.posed(rot, centre)


def compose(rng: np.random.Generator, *, threat_rate: float, origin_xy: tuple[float, float],
            size: tuple[float, float, float], clean_covers: bool = True
            ) -> tuple[list[objects.Item], float]:
    """Carton with contents at `origin_xy` (its low-x, low-y corner, mm); returns items (the
    carton first) and the carton's world z top."""
    w, length, h = size
    x0, y0 = origin_xy
    centre = np.array([x0 + w / 2, y0 + length / 2, h / 2])
    items: list[objects.Item] = []
    if rng.random() < 0.75:  # corrugated carton
        wall = rng.uniform(3.0, 7.0)
        carton = Part(Shape("box", w / 2, length / 2, h / 2), "cardboard", np.eye(3), centre,
                      hollow_mm=wall)
    else:  # courier poly bag
        wall = 0.3
        carton = Part(Shape("box", w / 2, length / 2, h / 2), "polyethylene", np.eye(3), centre,
                      hollow_mm=wall)
    items.append(objects.Item((carton,), None, max(w, length, h)))
    half = np.array([w / 2, length / 2, h / 2])
    inner = np.array([centre - half, centre + half])
    inner[0] += wall
    inner[1] -= wall
    # Benign contents: volume-limited count, weighted choice.
    fns, weights = zip(*objects.BENIGN, strict=True)
    p = np.array(weights) / sum(weights)
    n_benign = int(rng.integers(2, 4 + int(w * length / 25000)))
    for _ in range(n_benign):
        fn = fns[int(rng.choice(len(fns), p=p))]
        flat = rng.random() < 0.85
        benign = _fit(fn(rng), rng, inner, rotation(rng, flat=flat, tilt_deg=12))
        if benign is not None:
            items.append(benign)
    # With `clean_covers` (generator 1.1.0 on), a clean parcel draws as many "slots" as a
    # threat parcel and fills each with a cover alone: the laptops, trays and books that hide
    # threats are as common in clean parcels, so that they are no cue for a threat. Generator
    # 1.0.0 put them in threat parcels only (and draws nothing more for a clean one).
    armed = rng.random() < threat_rate
    n_slots = int(rng.choice([1, 2, 3], p=[0.7, 0.25, 0.05])) if armed or clean_covers else 0
    for _ in range(n_slots):
        anchor = None
        if armed:
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            threat = None
            for attempt in range(6):  # a long gun part may need a pose that fits the carton
                flat = rng.random() < 0.5
                rot = rotation(rng, flat=flat, tilt_deg=25)
                threat = _fit(objects.THREATS[cls](rng), rng, inner, rot, strict=attempt < 5)
                if threat is not None:
                    break
            assert threat is not None
            items.append(threat)
            anchor = np.mean([pt.centre for pt in threat.parts], axis=0)[:2]
        if rng.random() < 0.35:  # concealment under or over a laptop, metal or books
            hide = [objects.laptop, objects.metal_tray, objects.book, objects.clothes,
                    objects.phone][int(rng.choice(5, p=[0.3, 0.3, 0.15, 0.15, 0.1]))]
            cover = _fit(hide(rng), rng, inner, rotation(rng, flat=True, tilt_deg=8),
                         anchor=anchor)
            if cover is not None:
                items.append(cover)
    return items, float(inner[1, 2])


def render(
    seed: int,
    *,
    pixels_per_line: int | None,
    pitch_mm: float | None,
    threat_rate: float = 0.75,
    margin_px: tuple[int, int] = (8, 60),
    generator: str | None = None,
) -> Parcel:
    """Generate and scan one parcel.

    With `pixels_per_line` the detector line has that many channels and the parcel sits somewhere
    on the belt; without it, the line is cropped to the parcel plus a random margin (what a
    parcel-cropping display shows; used for the training set)."""
    rng = np.random.default_rng(seed)
    scanner = random_scanner(rng, pitch_mm=pitch_mm)
    px, py = scanner.pitch_mm, scanner.pitch_mm * scanner.aspect
    tables = load()
    ref = int(np.argmin(np.abs(tables.energies_kev - REFERENCE_KEV)))
    w = rng.uniform(180, 450)  # across the belt, mm
    length = rng.uniform(200, 560)  # along the belt
    h = rng.uniform(80, min(300, 0.9 * max(w, length)))
    lead = int(rng.integers(12, 40))
    trail = int(rng.integers(8, 30))
    n_lines = lead + int(np.ceil(length / py)) + trail
    if pixels_per_line is not None:
        grid_w = pixels_per_line
        span = grid_w * px
        x0 = rng.uniform(0.05 * span, max(0.95 * span - w, 0.05 * span + 1))
    else:
        ml, mr = (int(rng.integers(*margin_px)) for _ in range(2))
        grid_w = ml + int(np.ceil(w / px)) + mr
        x0 = ml * px
    y0 = lead * py
    if generator is not None and generator not in GENERATORS:
        raise ValueError(f"generator {generator!r}: this code renders {', '.join(GENERATORS)}")
    items, _ = compose(rng, threat_rate=threat_rate, origin_xy=(x0, y0), size=(w, length, h),
                       clean_covers=generator != "1.0.0")

    shape = (n_lines, grid_w)
    paths: dict[str, F32] = {}
    total_ref = np.zeros(shape, np.float32)
    item_refs: list[tuple[str, F32]] = []
    for item in items:
        own = np.zeros(shape, np.float32) if item.label else None
        for part in item.parts:
            out = rasterise(part, grid_w, n_lines, px, py)
            if out is None:
                continue
            (ya, yb, xa, xb), shell, fill = out
            for mat, t in ((part.material, shell), (part.fill_material, fill)):
                if mat is None or t is None:
                    continue
                paths.setdefault(mat, np.zeros(shape, np.float32))[ya:yb, xa:xb] += t
                att = t * tables.mu(mat)[ref]
                total_ref[ya:yb, xa:xb] += att
                if own is not None:
                    own[ya:yb, xa:xb] += att
        if item.label and own is not None:
            item_refs.append((item.label, own))
    paths["belt"] = np.full(shape, rng.uniform(1.5, 3.0), np.float32)

    labels = []
    for cls, own in item_refs:
        foot = own >= -np.log(1 - FOOTPRINT_ATTENUATION)
        if foot.sum() < 6:
            continue  # too thin to see: no label rather than an invisible one
        ys, xs = np.nonzero(foot)
        occ = float(((total_ref - own)[foot] >= OCCLUDING_ATTENUATION).mean())
        level = 1 + int(np.searchsorted(OCCLUSION_LEVEL_EDGES, occ, side="right"))
        labels.append(Label(cls, (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                  int(ys.max()) + 1), occ, level))

    t_low, t_high = transmission(paths, scanner, tables)
    high, low, air_high, air_low = detect(t_low, t_high, scanner, rng)
    # Counts through air: the belt is always in the beam, so "air" is the empty belt.
    belt = {"belt": paths["belt"][:1, :1]}
    b_low, b_high = transmission(belt, scanner, tables)
    span_h = air_high - scanner.dark_adc
    span_l = air_low - scanner.dark_adc
    carton = (int(x0 / px), lead, int(np.ceil((x0 + w) / px)), lead + int(np.ceil(length / py)))
    return Parcel(
        seed=seed,
        high=high,
        low=low,
        air_high=round(scanner.dark_adc + span_h * float(b_high[0, 0])),
        air_low=round(scanner.dark_adc + span_l * float(b_low[0, 0])),
        dark_high=scanner.dark_adc,
        dark_low=scanner.dark_adc,
        labels=tuple(labels),
        pitch_mm=px,
        line_pitch_mm=py,
        parcel_box=carton,
        scanner=scanner,
    )


def generate_parcel(seed: int, *, pixels_per_line: int = 750) -> Parcel:
    """A parcel scanned by a 6550-class machine: `pixels_per_line` channels spanning about
    1.1 m of unfolded L-array (1.5 mm pitch at 750), threats in about 3 of 4 parcels.

    Deterministic per seed; the stable entry point for the firmware bridge's virtual scanner."""
    pitch = 1125.0 / pixels_per_line
    return replace(render(seed, pixels_per_line=pixels_per_line, pitch_mm=pitch))
