"""2.5-D primitives in 3-D poses, ray-cast into per-pixel path lengths.

World frame (mm): x across the belt, y along the belt, z up from the belt. Rays run along z
(parallel projection along the beam; fan-beam magnification across the belt is applied per part
from its height, see `Part.magnification`). A primitive returns, for each ray, the interval of z it
spends inside; path length is the interval's length, so a blade seen edge-on is a thin line with a
long path and seen flat a wide shape with a short one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Source-to-belt distance for the fan-beam magnification (mm); parts nearer the source (higher up
# in a bottom-source machine, lower in a top-source one: we use bottom) project smaller.
SOURCE_TO_BELT_MM = 900.0


def rotation(rng: np.random.Generator, *, flat: bool = False, tilt_deg: float = 10.0) -> F64:
    """A random rotation: uniform over SO(3), or lying flat (yaw only) with a small tilt."""
    if not flat:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    yaw = rng.uniform(0, 2 * np.pi)
    ax, ay = np.radians(rng.normal(0, tilt_deg, 2))
    return _rz(yaw) @ _rx(ax) @ _ry(ay)


def _rx(a: float) -> F64:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> F64:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> F64:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@dataclass(frozen=True)
class Shape:
    """A convex primitive or an extruded polygon, centred on its own origin.

    kind: "box" (half sizes a, b, c), "ellipsoid" (semi-axes a, b, c), "cylinder" (radii a, b,
    half height c, axis z) or "prism" (polygon in x-y, half thickness c along z).
    """

    kind: str
    a: float
    b: float
    c: float
    polygon: F64 | None = None  # (n, 2) mm, for prisms

    def corners(self) -> F64:
        if self.kind == "prism" and self.polygon is not None:
            lo, hi = self.polygon.min(axis=0), self.polygon.max(axis=0)
            xs, ys = (lo[0], hi[0]), (lo[1], hi[1])
        else:
            xs, ys = (-self.a, self.a), (-self.b, self.b)
        return np.array([[x, y, z] for x in xs for y in ys for z in (-self.c, self.c)])

    def scaled(self, k: float) -> Shape:
        """A copy shrunk (k < 1) about the origin, e.g. the inside of a hollow wall."""
        poly = None if self.polygon is None else self.polygon * k
        return Shape(self.kind, self.a * k, self.b * k, self.c * k, poly)

    def inset(self, wall: float) -> Shape:
        """The cavity of a hollow shape with a wall `wall` mm thick (convex kinds)."""
        return Shape(
            self.kind, max(self.a - wall, 0.1), max(self.b - wall, 0.1), max(self.c - wall, 0.1)
        )


@dataclass(frozen=True)
class Part:
    """A shape of one material in a pose. `hollow_mm` > 0 keeps only a wall that thick;
    `fill_level` in 0..1 fills the cavity with `fill_material` up to that share of the part's
    world height (liquids settle along gravity, which is along the beam)."""

    shape: Shape
    material: str
    rot: F64
    centre: F64  # world mm
    hollow_mm: float = 0.0
    fill_material: str | None = None
    fill_level: float = 0.0
    texture: float = 0.0  # relative amplitude of a smooth density texture (cloth, powder)
    seed: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def world_corners(self) -> F64:
        return self.shape.corners() @ self.rot.T + self.centre

    @property
    def magnification(self) -> float:
        # Bottom source: magnification at height z relative to the belt plane.
        return SOURCE_TO_BELT_MM / (SOURCE_TO_BELT_MM + float(self.centre[2]))


def _interval(shape: Shape, o: F64, d: F64) -> tuple[F64, F64]:
    """Entry/exit ray parameters through a convex shape; o: (P, 3) origins, d: (3,) direction,
    both in the shape's frame. Empty where t0 >= t1."""
    if shape.kind == "box" or shape.kind == "prism":
        half = np.array([shape.a, shape.b, shape.c], dtype=float)
        if shape.kind == "prism":
            half[:2] = np.inf  # slab along z only; the polygon test is done by the caller
        t0 = np.full(o.shape[0], -np.inf)
        t1 = np.full(o.shape[0], np.inf)
        for i in range(3):
            if not np.isfinite(half[i]):
                continue
            if abs(d[i]) < 1e-9:
                outside = np.abs(o[:, i]) > half[i]
                t0 = np.where(outside, np.inf, t0)
                continue
            ta = (-half[i] - o[:, i]) / d[i]
            tb = (half[i] - o[:, i]) / d[i]
            t0 = np.maximum(t0, np.minimum(ta, tb))
            t1 = np.minimum(t1, np.maximum(ta, tb))
        return t0, t1
    if shape.kind == "ellipsoid":
        s = np.array([shape.a, shape.b, shape.c])
        oo, dd = o / s, d / s
        qa = float(dd @ dd)
        qb = 2 * oo @ dd
        qc = (oo * oo).sum(axis=1) - 1
    elif shape.kind == "cylinder":
        s = np.array([shape.a, shape.b, 1.0])
        oo, dd = o / s, d / s
        qa = float(dd[:2] @ dd[:2])
        qb = 2 * oo[:, :2] @ dd[:2]
        qc = (oo[:, :2] ** 2).sum(axis=1) - 1
    else:
        raise ValueError(shape.kind)
    if qa < 1e-12:  # ray parallel to the cylinder axis
        inside = qc <= 0
        t0 = np.where(inside, -np.inf, np.inf)
        t1 = np.where(inside, np.inf, -np.inf)
    else:
        disc = qb * qb - 4 * qa * qc
        root = np.sqrt(np.clip(disc, 0, None))
        t0 = np.where(disc > 0, (-qb - root) / (2 * qa), np.inf)
        t1 = np.where(disc > 0, (-qb + root) / (2 * qa), -np.inf)
    if shape.kind == "cylinder":
        if abs(d[2]) < 1e-9:
            outside = np.abs(o[:, 2]) > shape.c
            t0 = np.where(outside, np.inf, t0)
        else:
            ta = (-shape.c - o[:, 2]) / d[2]
            tb = (shape.c - o[:, 2]) / d[2]
            t0 = np.maximum(t0, np.minimum(ta, tb))
            t1 = np.minimum(t1, np.maximum(ta, tb))
    return t0, t1


def _polygon_mask(poly: F64, res: float) -> tuple[npt.NDArray[np.uint8], F64]:
    lo = poly.min(axis=0) - 2 * res
    size = np.ceil((poly.max(axis=0) + 2 * res - lo) / res).astype(int) + 1
    mask = np.zeros((size[1], size[0]), np.uint8)
    pts = np.round((poly - lo) / res * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask, lo


def _segment_length(
    shape: Shape, o: F64, d: F64, z_world0: F64, zmax: float | None
) -> F64:
    """Length of each ray inside `shape` (world z clipped to <= zmax when given)."""
    t0, t1 = _interval(shape, o, d)
    if zmax is not None:
        # Ray parameter is world z minus the ray's origin z (direction +z, unit length).
        t1 = np.minimum(t1, zmax - z_world0)
    if shape.kind != "prism" or shape.polygon is None:
        return np.clip(t1 - t0, 0.0, None)
    length = np.clip(t1 - t0, 0.0, None)
    hit = length > 0
    if not hit.any():
        return length
    res = 0.4  # mm: the polygon mask resolution
    mask, lo = _polygon_mask(shape.polygon, res)
    k = 12  # samples along each chord: edge-on blades need them, flat ones are exact anyway
    frac = (np.arange(k) + 0.5) / k
    tt = t0[hit, None] + length[hit, None] * frac[None, :]
    px = o[hit, 0, None] + tt * d[0]
    py = o[hit, 1, None] + tt * d[1]
    ix = np.clip(((px - lo[0]) / res).astype(np.int64), 0, mask.shape[1] - 1)
    iy = np.clip(((py - lo[1]) / res).astype(np.int64), 0, mask.shape[0] - 1)
    inside = mask[iy, ix].mean(axis=1)
    length[hit] *= inside
    return length


def _prism_radius(shape: Shape) -> float:
    assert shape.polygon is not None
    return max(float(np.abs(shape.polygon).max()), 1.0)


def _texture(seed: int, shape: tuple[int, int], amplitude: float) -> F32:
    rng = np.random.default_rng(seed)
    small = rng.normal(size=(max(shape[0] // 12, 2), max(shape[1] // 12, 2))).astype(np.float32)
    field_ = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(1.0 + amplitude * field_, 0.2, 2.0)


def rasterise(
    part: Part, grid_w: int, grid_h: int, pitch_x: float, pitch_y: float, supersample: int = 2
) -> tuple[tuple[int, int, int, int], F32, F32 | None] | None:
    """Path lengths (mm) of `part` on the pixel grid: ((y0, y1, x0, x1) window, shell lengths,
    fill lengths or None). None when the part is off the grid."""
    corners = part.world_corners()
    m = part.magnification
    cx0 = grid_w * pitch_x / 2  # beam axis at the centre of the detector line
    xs = cx0 + (corners[:, 0] - cx0) * m
    x0 = max(int(np.floor(xs.min() / pitch_x)) - 1, 0)
    x1 = min(int(np.ceil(xs.max() / pitch_x)) + 1, grid_w)
    y0 = max(int(np.floor(corners[:, 1].min() / pitch_y)) - 1, 0)
    y1 = min(int(np.ceil(corners[:, 1].max() / pitch_y)) + 1, grid_h)
    if x1 <= x0 or y1 <= y0:
        return None
    ss = supersample
    offs = (np.arange(ss) + 0.5) / ss
    gx = (np.arange(x0, x1)[:, None] + offs[None, :]).ravel() * pitch_x
    gy = (np.arange(y0, y1)[:, None] + offs[None, :]).ravel() * pitch_y
    gx = cx0 + (gx - cx0) / m  # detector position -> world position at the part's height
    wx, wy = np.meshgrid(gx, gy)
    z_origin = float(part.centre[2]) - 2000.0
    origins = np.stack([wx.ravel(), wy.ravel(), np.full(wx.size, z_origin)], axis=1)
    rt = part.rot.T
    o = (origins - part.centre) @ rt.T
    d = rt @ np.array([0.0, 0.0, 1.0])
    z0 = origins[:, 2]
    outer = _segment_length(part.shape, o, d, z0, None)
    fill = None
    if part.hollow_mm > 0:
        inner_shape = (
            part.shape.scaled(1 - part.hollow_mm / _prism_radius(part.shape))
            if part.shape.kind == "prism"
            else part.shape.inset(part.hollow_mm)
        )
        inner = _segment_length(inner_shape, o, d, z0, None)
        shell = np.clip(outer - inner, 0.0, None)
        if part.fill_material is not None and part.fill_level > 0:
            zs = corners[:, 2]
            zmax = float(zs.min() + part.fill_level * (zs.max() - zs.min()))
            fill = _segment_length(inner_shape, o, d, z0, zmax)
    else:
        shell = outer
    h, w = y1 - y0, x1 - x0

    def pool(v: F64) -> F32:
        return v.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)

    shell_px = pool(shell)
    if part.texture > 0:
        shell_px *= _texture(part.seed, shell_px.shape, part.texture)
    fill_px = pool(fill) if fill is not None else None
    return (y0, y1, x0, x1), shell_px, fill_px
