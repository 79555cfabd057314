"""Parcel contents and threats built from primitives: each builder returns an `Item`.

Sizes are in mm and drawn from ranges of real objects (a 9 mm cartridge is 29.7 mm long, an
18650 cell 18 x 65 mm, an aerosol can 45-65 mm across). Builders place parts in the item's own
frame; `Item.posed` moves the whole item into the parcel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from models.synth.geometry import F64, Part, Shape, _rx, _ry, _rz, rotation

Rng = np.random.Generator
I3 = np.eye(3)


@dataclass(frozen=True)
class Item:
    """Parts of one physical object; `label` is its threat class or None for benign content."""

    parts: tuple[Part, ...]
    label: str | None
    half_extent: float  # mm, a bound used for placement

    def posed(self, rot: F64, centre: F64) -> Item:
        parts = tuple(
            replace(p, rot=rot @ p.rot, centre=centre + rot @ p.centre) for p in self.parts
        )
        return Item(parts, self.label, self.half_extent)


def _p(
    kind: str,
    a: float,
    b: float,
    c: float,
    material: str,
    at: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rot: F64 = I3,
    polygon: F64 | None = None,
    **kw: object,
) -> Part:
    return Part(Shape(kind, a, b, c, polygon), material, rot, np.array(at, float), **kw)  # type: ignore[arg-type]


def _item(parts: list[Part], label: str | None) -> Item:
    ext = max(float(np.abs(p.world_corners()).max()) for p in parts)
    return Item(tuple(parts), label, ext)


def _blob_polygon(rng: Rng, rx: float, ry: float, n: int = 24, rough: float = 0.15) -> F64:
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = 1 + rough * rng.normal(size=n)
    r = np.convolve(np.r_[r[-2:], r, r[:2]], np.ones(5) / 5, "valid")
    return np.stack([rx * r * np.cos(ang), ry * r * np.sin(ang)], axis=1)


# --- benign contents -------------------------------------------------------------------------


def clothes(rng: Rng) -> Item:
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        a, b = rng.uniform(50, 150), rng.uniform(40, 110)
        c = rng.uniform(5, 30)
        at = (rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-10, 10))
        parts.append(
            _p("box", a, b, c, "cloth", at, _rz(rng.uniform(0, 6.3)), texture=0.5,
               seed=int(rng.integers(1 << 30)))
        )
        if rng.random() < 0.3:  # zip or buttons: small metal
            parts.append(_p("box", rng.uniform(2, 4), rng.uniform(40, 120), 1.0, "brass", at))
    return _item(parts, None)


def book(rng: Rng) -> Item:
    a, b, c = rng.uniform(60, 130), rng.uniform(50, 100), rng.uniform(5, 25)
    return _item([_p("box", a, b, c, "paper")], None)


def shoe(rng: Rng) -> Item:
    length, width = rng.uniform(110, 150), rng.uniform(40, 55)
    sole = _blob_polygon(rng, length, width, rough=0.05)
    parts = [
        _p("prism", 0, 0, rng.uniform(6, 15), "rubber", polygon=sole),
        _p("ellipsoid", length * 0.8, width * 0.9, rng.uniform(30, 50), "cloth", (0, 0, 35),
           hollow_mm=3.0, texture=0.3, seed=int(rng.integers(1 << 30))),
    ]
    if rng.random() < 0.3:  # steel shank
        parts.append(_p("box", 40, 6, 0.8, "steel", (10, 0, 8)))
    return _item(parts, None)


def empty_bottle(rng: Rng) -> Item:
    r, h = rng.uniform(25, 45), rng.uniform(70, 130)
    mat = str(rng.choice(["pet", "polyethylene", "glass"], p=[0.6, 0.3, 0.1]))
    wall = 2.5 if mat == "glass" else 0.4
    return _item([_p("cylinder", r, r, h, mat, hollow_mm=wall)], None)


def food_can(rng: Rng) -> Item:
    r, h = rng.uniform(30, 50), rng.uniform(25, 60)
    fill = str(rng.choice(["water", "sugar"]))
    return _item([_p("cylinder", r, r, h, "steel", hollow_mm=0.25, fill_material=fill,
                     fill_level=1.0)], None)


def food(rng: Rng) -> Item:
    kind = rng.integers(3)
    if kind == 0:  # packet of rice/sugar/flour: a benign organic mass
        a, b, c = rng.uniform(50, 120), rng.uniform(40, 90), rng.uniform(15, 45)
        return _item([_p("box", a, b, c, "sugar", texture=0.2, seed=int(rng.integers(1 << 30))),
                       _p("box", a + 1, b + 1, c + 1, "polyethylene", hollow_mm=0.1)], None)
    if kind == 1:  # fruit
        parts = [
            _p("ellipsoid", *(rng.uniform(30, 50, 3)), "water",  # type: ignore[misc]
               at=(rng.uniform(-60, 60), rng.uniform(-60, 60), 0))
            for _ in range(int(rng.integers(1, 5)))
        ]
        return _item(parts, None)
    # snack box: thin cardboard with light contents
    a, b, c = rng.uniform(60, 120), rng.uniform(40, 80), rng.uniform(20, 50)
    return _item([_p("box", a, b, c, "cardboard", hollow_mm=1.5),
                  _p("box", a - 3, b - 3, c * 0.6, "sugar", texture=0.4,
                     seed=int(rng.integers(1 << 30)))], None)


def laptop(rng: Rng) -> Item:
    a, b = rng.uniform(140, 180), rng.uniform(95, 125)
    case = str(rng.choice(["aluminium", "polyethylene"]))
    parts = [
        _p("box", a, b, 9, case, hollow_mm=1.2),
        _p("box", a * 0.6, b * 0.5, 0.8, "pcb", (-a * 0.2, b * 0.3, 0)),
        _p("box", a * 0.9, b * 0.8, 0.5, "glass", (0, 0, 6)),  # screen
    ]
    # Internal battery: part of the laptop, not a loose lithium pack, so not labelled.
    n_cells = int(rng.integers(2, 5))
    for i in range(n_cells):
        parts.append(_p("box", a * 0.8 / n_cells - 2, 35, 3.0, "li_ion",
                        (-a * 0.4 + (i + 0.5) * a * 0.8 / n_cells, -b * 0.55, -3)))
    parts.append(_p("cylinder", 3, 3, 50, "copper", (a * 0.3, b * 0.2, 0), _ry(np.pi / 2)))
    return _item(parts, None)


def phone(rng: Rng) -> Item:
    a, b = rng.uniform(33, 40), rng.uniform(70, 82)
    return _item([
        _p("box", a, b, 4, "aluminium", hollow_mm=0.8),
        _p("box", a - 1, b - 1, 0.4, "glass", (0, 0, 3.5)),
        _p("box", a * 0.7, b * 0.55, 1.8, "li_ion", (0, -b * 0.2, 0)),
        _p("box", a * 0.8, b * 0.3, 0.6, "pcb", (0, b * 0.6, 0)),
    ], None)


def charger(rng: Rng) -> Item:
    a, b, c = rng.uniform(20, 35), rng.uniform(20, 35), rng.uniform(12, 20)
    return _item([
        _p("box", a, b, c, "polyethylene", hollow_mm=1.5),
        _p("box", a * 0.7, b * 0.7, 0.8, "pcb"),
        _p("cylinder", 7, 7, 6, "steel", (a * 0.3, 0, 3)),  # transformer core
        _p("cylinder", 8, 8, 5, "copper", (a * 0.3, 0, 3), hollow_mm=2.0),
        _p("box", 3, 8, 0.6, "brass", (-a - 6, -5, 0)),  # plug pins
        _p("box", 3, 8, 0.6, "brass", (-a - 6, 5, 0)),
    ], None)


def cable(rng: Rng) -> Item:
    parts = []
    pos = np.zeros(3)
    ang = rng.uniform(0, 6.3)
    for _ in range(int(rng.integers(6, 16))):
        ang += rng.normal(0, 0.6)
        seg = rng.uniform(15, 30)
        mid = pos + np.array([np.cos(ang), np.sin(ang), 0]) * seg / 2
        rot = _rz(ang) @ _ry(np.pi / 2)
        parts.append(_p("cylinder", 2.0, 2.0, seg / 2, "polyethylene", tuple(mid), rot))
        parts.append(_p("cylinder", 0.6, 0.6, seg / 2, "copper", tuple(mid), rot))
        pos = pos + np.array([np.cos(ang), np.sin(ang), 0]) * seg
    return _item(parts, None)


def metal_tray(rng: Rng) -> Item:
    """A pan, tray or tool set: dense metal used to hide things under."""
    mat = str(rng.choice(["steel", "aluminium"], p=[0.6, 0.4]))
    t = rng.uniform(1.0, 3.0) if mat == "steel" else rng.uniform(2.0, 6.0)
    if rng.random() < 0.5:
        r = rng.uniform(70, 130)
        return _item([_p("cylinder", r, r, t, mat)], None)
    return _item([_p("box", rng.uniform(70, 140), rng.uniform(50, 110), t, mat)], None)


def keys_coins(rng: Rng) -> Item:
    parts = []
    for _ in range(int(rng.integers(1, 6))):
        at = (rng.uniform(-25, 25), rng.uniform(-25, 25), rng.uniform(-3, 3))
        if rng.random() < 0.5:
            r = rng.uniform(9, 13)
            parts.append(_p("cylinder", r, r, 1.0, "brass", at))
        else:
            poly = np.array([[-25, -4], [10, -4], [10, -10], [25, -10], [25, 10], [10, 10],
                             [10, 4], [-25, 4]], float)
            parts.append(_p("prism", 0, 0, 1.0, "brass", at, _rz(rng.uniform(0, 6.3)),
                            polygon=poly))
    return _item(parts, None)


def scissors_tool(rng: Rng) -> Item:
    """Benign small steel tools (pliers, screwdriver): hard negatives for blades and guns."""
    parts = [
        _p("cylinder", 3, 3, rng.uniform(40, 70), "steel", (0, 0, 0), _ry(np.pi / 2)),
        _p("cylinder", 10, 10, rng.uniform(30, 50), "polyethylene", (rng.uniform(70, 90), 0, 0),
           _ry(np.pi / 2)),
    ]
    return _item(parts, None)


BENIGN: tuple[tuple[Callable[[Rng], Item], float], ...] = (
    (clothes, 3.0), (book, 2.0), (shoe, 1.0), (empty_bottle, 1.0), (food_can, 1.0),
    (food, 2.0), (laptop, 0.7), (phone, 1.0), (charger, 1.0), (cable, 1.0), (metal_tray, 0.5),
    (keys_coins, 0.8), (scissors_tool, 0.8),
)


# --- threats ---------------------------------------------------------------------------------


def firearm(rng: Rng) -> Item:
    variant = rng.choice(["pistol", "revolver", "parts"], p=[0.55, 0.25, 0.2])
    slide_l, slide_h = rng.uniform(80, 105), rng.uniform(12, 17)
    parts = []
    if variant in ("pistol", "parts"):
        parts += [
            _p("box", slide_l, slide_h, rng.uniform(11, 15), "steel", hollow_mm=3.0),
            _p("cylinder", 5, 5, slide_l, "steel", (0, 0, 0), _ry(np.pi / 2), hollow_mm=2.0),
        ]
    if variant in ("pistol", "revolver"):
        grip = np.array([[0, 0], [28, 0], [22 + rng.uniform(0, 12), -rng.uniform(70, 90)],
                         [-8, -rng.uniform(65, 85)]], float)
        frame = str(rng.choice(["steel", "polyethylene", "aluminium"], p=[0.4, 0.35, 0.25]))
        gx = slide_l * 0.55
        parts += [
            _p("prism", 0, 0, rng.uniform(12, 16), frame, (gx - 25, -slide_h, 0), polygon=grip),
            _p("box", 14, 5, 10, "steel", (gx - 6, -slide_h - 40, 0),
               _rz(-0.2)),  # magazine
            _p("prism", 0, 0, 3, "steel", (gx - 50, -slide_h - 12, 0),
               polygon=_blob_polygon(rng, 16, 9, n=16, rough=0.02), hollow_mm=3.0),  # guard
        ]
    if variant == "revolver":
        parts += [
            _p("cylinder", 18, 18, 20, "steel", (0, 0, 0), _ry(np.pi / 2)),  # cylinder
            _p("cylinder", 6, 6, slide_l * 0.6, "steel", (slide_l * 0.6, 0, 0), _ry(np.pi / 2)),
        ]
    return _item(parts, "firearm")


def knife(rng: Rng) -> Item:
    blade_l, blade_w = rng.uniform(70, 200), rng.uniform(15, 50)
    profile = rng.integers(4)
    if profile == 0:  # kitchen knife: straight spine, curved edge
        xs = np.linspace(0, blade_l, 12)
        edge = -blade_w * np.sqrt(np.clip(1 - (xs / blade_l) ** 3, 0, 1))
        poly = np.r_[np.c_[xs, edge], [[blade_l, 0], [0, 0]]]
    elif profile == 1:  # dagger: symmetric point
        poly = np.array([[0, -blade_w / 2], [blade_l * 0.8, -blade_w / 2], [blade_l, 0],
                         [blade_l * 0.8, blade_w / 2], [0, blade_w / 2]])
    elif profile == 2:  # cleaver
        poly = np.array([[0, 0], [blade_l, 0], [blade_l, -blade_w * 1.6], [0, -blade_w * 1.5]])
    else:  # folding/utility: short trapezoid
        poly = np.array([[0, 0], [blade_l * 0.6, 0], [blade_l * 0.7, -blade_w * 0.7],
                         [0, -blade_w * 0.6]])
    poly = poly - poly.mean(axis=0)
    mat = "ceramic" if rng.random() < 0.1 else "steel"
    thick = rng.uniform(0.8, 1.8)  # half thickness
    handle_l = rng.uniform(60, 120) / 2
    hx = float(poly[:, 0].min()) - handle_l
    handle_mat = str(rng.choice(["polyethylene", "rubber", "paper", "aluminium", "steel"],
                                p=[0.35, 0.2, 0.2, 0.15, 0.1]))
    parts = [
        _p("prism", 0, 0, thick, mat, polygon=poly),
        _p("box", handle_l, rng.uniform(7, 14), rng.uniform(5, 10), handle_mat, (hx, 0, 0)),
        _p("box", handle_l * 0.9, 3, thick, "steel", (hx, 0, 0)),  # tang
    ]
    return _item(parts, "knife")


def _cartridge(rng: Rng, at: tuple[float, float, float], rot: F64, cal: tuple[float, float]
               ) -> list[Part]:
    r, case_l = cal
    axis = rot @ np.array([0.0, 0.0, 1.0])
    tip = np.array(at) + axis * (case_l / 2 + r * 1.2)
    return [
        _p("cylinder", r, r, case_l / 2, "brass", at, rot, hollow_mm=0.5,
           fill_material="explosive_like", fill_level=0.9),
        _p("ellipsoid", r * 0.9, r * 0.9, r * 1.6, "lead", tuple(tip), rot),
    ]


def ammunition(rng: Rng) -> Item:
    calibres = [(4.5, 19.0), (4.5, 21.0), (5.7, 23.0), (3.0, 15.0), (5.6, 39.0), (6.0, 51.0)]
    cal = calibres[int(rng.integers(len(calibres)))]
    n = int(rng.choice([1, 2, 3, 5, 8, 12, 20], p=[0.1, 0.1, 0.15, 0.2, 0.2, 0.15, 0.1]))
    parts: list[Part] = []
    if rng.random() < 0.5 and n > 2:  # boxed: standing in a grid
        cols = int(np.ceil(np.sqrt(n)))
        for i in range(n):
            at = ((i % cols) * cal[0] * 2.3, (i // cols) * cal[0] * 2.3, 0.0)
            parts += _cartridge(rng, at, I3, cal)
        parts.append(_p("box", cols * cal[0] * 1.3, cols * cal[0] * 1.3, cal[1] * 0.7,
                        "cardboard", (cols * cal[0] * 1.1, cols * cal[0] * 1.1, 0),
                        hollow_mm=1.0))
    else:  # loose, lying together
        for _ in range(n):
            at = (rng.uniform(-15, 15) * np.sqrt(n), rng.uniform(-8, 8) * np.sqrt(n),
                  rng.uniform(-5, 5))
            rot = rotation(rng, flat=True, tilt_deg=20) @ _ry(np.pi / 2)
            parts += _cartridge(rng, at, rot, cal)
    return _item(parts, "ammunition")


def explosive_device(rng: Rng) -> Item:
    a, b, c = rng.uniform(40, 100), rng.uniform(30, 60), rng.uniform(12, 30)
    charge = str(rng.choice(["explosive_like", "ammonium_nitrate"]))
    parts = []
    if rng.random() < 0.5:
        parts.append(_p("box", a, b, c, charge, texture=0.1, seed=int(rng.integers(1 << 30))))
    else:  # pipe
        r = rng.uniform(18, 30)
        parts += [_p("cylinder", r, r, a, "steel", (0, 0, 0), _ry(np.pi / 2), hollow_mm=2.5,
                     fill_material=charge, fill_level=1.0)]
        b = r
    # battery (9 V or AA cells), detonator (metal tube), wires, timer board
    parts.append(_p("box", 13, 8.5, 24, "steel", (a + 25, 0, 0), hollow_mm=0.4,
                    fill_material="li_ion", fill_level=1.0))
    det_at = (a * rng.uniform(-0.3, 0.3), 0.0, 0.0)
    parts.append(_p("cylinder", 3.5, 3.5, 22, "copper", det_at, _rz(rng.uniform(0, 3)) @
                    _ry(np.pi / 2), hollow_mm=0.5, fill_material="lead", fill_level=0.4))
    if rng.random() < 0.6:
        parts.append(_p("box", 25, 18, 0.8, "pcb", (a + 25, b + 22, 0)))
    for k in range(int(rng.integers(2, 5))):
        p0 = np.array([a + 25, 0, 0]) + rng.normal(0, 8, 3)
        p1 = np.array(det_at) + rng.normal(0, 5, 3)
        mid = (p0 + p1) / 2 + np.array([0, rng.uniform(-30, 30), 0])
        for q0, q1 in ((p0, mid), (mid, p1)):
            v = q1 - q0
            length = float(np.linalg.norm(v)) + 1e-3
            yaw = float(np.arctan2(v[1], v[0]))
            parts.append(_p("cylinder", 0.7, 0.7, length / 2, "copper", tuple((q0 + q1) / 2),
                            _rz(yaw) @ _ry(np.pi / 2), seed=k))
    if rng.random() < 0.5:  # tape wrap
        parts.append(_p("box", a + 2, b + 2, c + 2, "polyethylene", hollow_mm=0.3))
    return _item(parts, "explosive_device")


def organic_mass(rng: Rng) -> Item:
    kind = rng.choice(["brick", "bags", "pills"], p=[0.45, 0.35, 0.2])
    parts = []
    if kind == "brick":
        a, b, c = rng.uniform(60, 110), rng.uniform(45, 70), rng.uniform(12, 30)
        for i in range(int(rng.integers(1, 4))):
            at = (0.0, i * (2 * b + 3), 0.0)
            parts += [
                _p("box", a, b, c, "drug_like", at, texture=0.05,
                   seed=int(rng.integers(1 << 30))),
                _p("box", a + 1, b + 1, c + 1, "polyethylene", at, hollow_mm=0.6),  # tape
            ]
    elif kind == "bags":
        for _ in range(int(rng.integers(1, 6))):
            at = (rng.uniform(-50, 50), rng.uniform(-40, 40), rng.uniform(-5, 5))
            poly = _blob_polygon(rng, rng.uniform(25, 60), rng.uniform(20, 45))
            parts.append(_p("prism", 0, 0, rng.uniform(4, 12), "drug_like", at,
                            _rz(rng.uniform(0, 6.3)), polygon=poly, texture=0.3,
                            seed=int(rng.integers(1 << 30))))
    else:  # pill packs: blisters of many small tablets
        rows, cols = int(rng.integers(2, 5)), int(rng.integers(4, 9))
        for packs in range(int(rng.integers(2, 6))):
            z = packs * 4.0
            for i in range(rows):
                for j in range(cols):
                    parts.append(_p("cylinder", 4.0, 4.0, 2.0, "drug_like",
                                    (j * 11.0, i * 11.0, z)))
            parts.append(_p("box", cols * 5.5 + 3, rows * 5.5 + 3, 0.3, "aluminium",
                            (cols * 5.5 - 5.5, rows * 5.5 - 5.5, z - 2.3)))
    return _item(parts, "organic_mass")


def liquid_container(rng: Rng) -> Item:
    liquid = str(rng.choice(["ethanol", "water"], p=[0.6, 0.4]))
    level = float(rng.uniform(0.5, 1.0))
    kind = rng.choice(["bottle", "jug", "jerrycan", "glass"], p=[0.4, 0.25, 0.15, 0.2])
    if kind == "bottle":
        r, h = rng.uniform(28, 45), rng.uniform(90, 150)
        parts = [_p("cylinder", r, r, h, "pet", hollow_mm=0.4, fill_material=liquid,
                    fill_level=level),
                 _p("cylinder", 14, 14, 8, "polyethylene", (0, 0, h + 6))]
    elif kind == "glass":
        r, h = rng.uniform(30, 45), rng.uniform(80, 140)
        parts = [_p("cylinder", r, r, h, "glass", hollow_mm=3.0, fill_material=liquid,
                    fill_level=level),
                 _p("cylinder", 12, 12, 25, "glass", (0, 0, h + 22), hollow_mm=2.0)]
    else:
        a, b, c = rng.uniform(70, 120), rng.uniform(35, 70), rng.uniform(90, 160)
        mat = "steel" if kind == "jerrycan" else "polyethylene"
        wall = 0.8 if mat == "steel" else 1.5
        parts = [_p("box", a, b, c, mat, hollow_mm=wall, fill_material=liquid,
                    fill_level=level),
                 _p("cylinder", 16, 16, 12, mat, (a * 0.6, 0, c + 10), hollow_mm=wall)]
    return _item(parts, "liquid_container")


def gas_can(rng: Rng) -> Item:
    camping = rng.random() < 0.3
    r = rng.uniform(45, 55) if camping else rng.uniform(22, 33)
    h = rng.uniform(35, 55) if camping else rng.uniform(60, 120)
    mat = str(rng.choice(["steel", "aluminium"], p=[0.6, 0.4]))
    parts = [
        _p("cylinder", r, r, h, mat, hollow_mm=0.4, fill_material="butane",
           fill_level=float(rng.uniform(0.3, 0.8))),
        _p("ellipsoid", r, r, r * 0.35, mat, (0, 0, h), hollow_mm=0.6),  # dome
        _p("cylinder", 6, 6, 6, "steel", (0, 0, h + r * 0.35 + 4)),  # valve cup
        _p("cylinder", 1.2, 1.2, h * 0.9, "polyethylene", (0, 0, -h * 0.05)),  # dip tube
        _p("cylinder", r * 0.9, r * 0.9, 12, "polyethylene", (0, 0, h + r * 0.35 + 12),
           hollow_mm=1.0),  # cap
    ]
    return _item(parts, "gas_can")


def lithium_battery(rng: Rng) -> Item:
    kind = rng.choice(["cells", "powerbank", "pouch"], p=[0.45, 0.35, 0.2])
    parts = []
    if kind == "cells":  # 18650 / 21700 pack
        r, hl = (9.0, 32.5) if rng.random() < 0.7 else (10.5, 35.0)
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(2, 7))
        for i in range(rows):
            for j in range(cols):
                parts.append(_p("cylinder", r, r, hl, "steel", (j * 2 * r + 0.5, i * 2 * r, 0),
                                _rx(np.pi / 2) if rng.random() < 0.0 else I3, hollow_mm=0.3,
                                fill_material="li_ion", fill_level=1.0))
        rot = _ry(np.pi / 2)
        parts = [replace(p, rot=rot @ p.rot, centre=rot @ p.centre) for p in parts]
        parts.append(_p("box", hl + 2, cols * r + 2, rows * r, "polyethylene",
                        (0, cols * r - r, rows * r - r), hollow_mm=0.5))
        parts.append(_p("box", 4, cols * r, 0.2, "steel", (hl + 1, cols * r - r, 0)))
    elif kind == "powerbank":
        a, b, c = rng.uniform(35, 50), rng.uniform(60, 85), rng.uniform(7, 13)
        parts = [
            _p("box", a, b, c, str(rng.choice(["aluminium", "polyethylene"])), hollow_mm=1.0),
            _p("box", a - 3, b * 0.75, c - 2, "li_ion", (0, -b * 0.15, 0)),
            _p("box", a - 4, b * 0.15, 0.8, "pcb", (0, b * 0.78, 0)),
        ]
    else:  # stacked pouch cells
        a, b = rng.uniform(25, 45), rng.uniform(40, 70)
        for k in range(int(rng.integers(1, 4))):
            parts.append(_p("box", a, b, rng.uniform(2.5, 5), "li_ion", (0, 0, k * 10.0)))
            parts.append(_p("box", 5, 3, 0.2, "aluminium", (a * 0.5, b + 2, k * 10.0)))
    return _item(parts, "lithium_battery")


THREATS: dict[str, Callable[[Rng], Item]] = {
    "firearm": firearm,
    "knife": knife,
    "ammunition": ammunition,
    "explosive_device": explosive_device,
    "organic_mass": organic_mass,
    "liquid_container": liquid_container,
    "gas_can": gas_can,
    "lithium_battery": lithium_battery,
}
