"""Line stream -> parcel images: calibration, segmentation, waybill binding, colour."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.assembler import (
    MAX_PENDING_BARCODES,
    Assembler,
    AssemblerConfig,
    FragmentDiscarded,
    LinesUncalibrated,
    OrphanBarcode,
    ParcelScan,
    scan_id_for,
)
from firmware_bridge.colour import (
    attenuation,
    from_u16,
    material_class,
    pseudo_colour,
    to_u16,
)
from firmware_bridge.errors import AssemblyError
from firmware_bridge.frames import Barcode, Calibration, Hello, Line
from firmware_bridge.phantoms import MATERIALS, DetectorModel

W = 96
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Belt:
    """Turns transmission rows into LINE messages from a simulated detector."""

    def __init__(self, seed: int = 0, width: int = W) -> None:
        self.width = width
        self.det = DetectorModel.create(width, seed)
        self.rng = np.random.default_rng(seed)
        self.index = 0

    def hello(self) -> Hello:
        return Hello("DEV", "v", "f", self.width, 16, 1000, 250_000, 2, 99)

    def calibration(self) -> Calibration:
        d = self.det
        return Calibration(
            d.dark_high.tobytes(), d.air_high.tobytes(), d.dark_low.tobytes(), d.air_low.tobytes()
        )

    def lines(self, t_high: np.ndarray, t_low: np.ndarray | None = None) -> list[Line]:
        h, lo = self.det.expose(
            t_high.astype(np.float32),
            (t_high if t_low is None else t_low).astype(np.float32),
            self.rng,
        )
        out = []
        for i in range(h.shape[0]):
            out.append(Line(self.index, self.index * 1000, h[i].tobytes(), lo[i].tobytes()))
            self.index += 1
        return out

    def air(self, n: int) -> list[Line]:
        return self.lines(np.ones((n, self.width)))

    def slab(self, n: int, material: str, mm: float, x0: int = 20, x1: int = 70) -> list[Line]:
        mu_h, mu_l = MATERIALS[material]
        t_h, t_l = np.ones((n, self.width)), np.ones((n, self.width))
        t_h[:, x0:x1] = np.exp(-mu_h * mm)
        t_l[:, x0:x1] = np.exp(-mu_l * mm)
        return self.lines(t_h, t_l)


def ready(config: AssemblerConfig | None = None, seed: int = 0) -> tuple[Assembler, Belt]:
    belt = Belt(seed)
    asm = Assembler(config)
    asm.on_hello(belt.hello())
    asm.on_calibration(belt.calibration())
    return asm, belt


def feed(asm: Assembler, lines: list[Line]) -> list[object]:
    out: list[object] = []
    for line in lines:
        out += asm.on_line(line, NOW)
    return out


def scans(outputs: list[object]) -> list[ParcelScan]:
    return [o for o in outputs if isinstance(o, ParcelScan)]


def test_parcels_are_cut_at_air_gaps_with_margins() -> None:
    asm, belt = ready()
    lines = belt.air(50) + belt.slab(50, "organic", 80) + belt.air(50) + belt.slab(40, "steel", 5)
    lines += belt.air(50)
    got = scans(feed(asm, lines))
    assert [(s.first_line, s.line_count) for s in got] == [(46, 58), (146, 48)]
    assert all(s.occurred_at == NOW for s in got)
    assert got[0].scan_id == scan_id_for("DEV", 99, 46)


def test_short_air_pocket_inside_a_parcel_does_not_split_it() -> None:
    asm, belt = ready()
    lines = belt.air(50) + belt.slab(20, "organic", 80) + belt.air(5) + belt.slab(20, "organic", 80)
    got = scans(feed(asm, [*lines, *belt.air(50)]))
    assert len(got) == 1
    assert got[0].line_count == 4 + 45 + 4


def test_calibration_gives_true_attenuation_and_material_colour() -> None:
    asm, belt = ready()
    lines = belt.air(50) + belt.slab(40, "organic", 60) + belt.air(50) + belt.slab(40, "steel", 4)
    got = scans(feed(asm, [*lines, *belt.air(50)]))
    cases = [("organic", 60, "organic"), ("steel", 4, "metal")]
    for scan, (material, mm, expected) in zip(got, cases, strict=True):
        mu_h, mu_l = MATERIALS[material]
        a_h = from_u16(scan.high[10:-10, 30:60]).mean()
        a_l = from_u16(scan.low[10:-10, 30:60]).mean()
        assert a_h == pytest.approx(mu_h * mm, rel=0.05)
        assert a_l == pytest.approx(mu_l * mm, rel=0.05)
        assert material_class(a_h, a_l) == expected
        assert from_u16(scan.high[:, :10]).mean() < 0.02  # air beside the object is ~0
    organic_rgb = got[0].image[20, 45].astype(int)
    steel_rgb = got[1].image[20, 45].astype(int)
    assert organic_rgb[0] > organic_rgb[2]  # orange: red over blue
    assert steel_rgb[2] > steel_rgb[0]  # blue
    assert (got[0].image[:, :10] > 235).all()  # air is white


def test_waybill_is_bound_by_line_index_and_missing_read_is_reported_unbound() -> None:
    asm, belt = ready()
    out = feed(asm, belt.air(50))
    asm.on_barcode(Barcode(belt.index, 1, "SF0001"))
    out += feed(asm, belt.slab(30, "organic", 50) + belt.air(50))
    out += feed(asm, belt.slab(30, "organic", 50) + belt.air(50))  # no barcode read
    got = scans(out)
    assert [s.waybill_no for s in got] == ["SF0001", None]
    assert got[1].unbound
    assert asm.stats.unbound_scans == 1


def test_barcode_without_image_is_orphaned() -> None:
    asm, belt = ready(AssemblerConfig(barcode_horizon_lines=100))
    asm.on_barcode(Barcode(0, 1, "SF-GHOST"))
    out = feed(asm, belt.air(150))
    assert OrphanBarcode(Barcode(0, 1, "SF-GHOST")) in out


def test_long_object_is_cut_at_max_length_and_keeps_its_waybill() -> None:
    asm, belt = ready(AssemblerConfig(max_lines=100))
    feed(asm, belt.air(50))
    asm.on_barcode(Barcode(belt.index, 1, "SF-LONG"))
    got = scans(feed(asm, belt.slab(250, "organic", 50) + belt.air(50)))
    assert [s.line_count for s in got][:2] == [100, 100]
    assert [s.truncated for s in got] == [True, True, False]
    assert [s.continuation for s in got] == [False, True, True]
    assert {s.waybill_no for s in got} == {"SF-LONG"}
    assert len({s.scan_id for s in got}) == 3


def test_a_long_object_with_lines_missing_is_cut_by_its_span_not_its_line_count() -> None:
    """Every other line lost: the filled image must still be at most max_lines tall."""
    asm, belt = ready(AssemblerConfig(max_lines=100))
    feed(asm, belt.air(50))
    lines = belt.slab(400, "organic", 50)[::2] + belt.air(50)
    got = scans(feed(asm, lines))
    # (199 lines when the count of lines received was bounded instead of their span)
    assert max(s.line_count for s in got) <= 100 + 2  # the cut lands on a received line
    assert sum(s.truncated for s in got) >= 3


def test_waybill_reads_that_never_match_a_parcel_are_bounded() -> None:
    asm, belt = ready()
    feed(asm, belt.air(50))
    for i in range(1000):  # reads far ahead of any line: they would never expire
        asm.on_barcode(Barcode(10**12 + i, 1, f"SF{i:06d}"))
    assert asm.stats.orphan_barcodes == 1000 - MAX_PENDING_BARCODES
    asm.on_barcode(Barcode(belt.index, 1, "SF-REAL"))  # a real read still finds its parcel
    got = scans(feed(asm, belt.slab(40, "organic", 50) + belt.air(50)))
    assert [s.waybill_no for s in got] == ["SF-REAL"]


def test_lost_lines_are_filled_and_counted() -> None:
    asm, belt = ready()
    lines = belt.air(50) + belt.slab(40, "organic", 50) + belt.air(50)
    del lines[50:53]
    got = scans(feed(asm, lines))
    assert got[0].missing_lines == 3
    assert got[0].line_count == 48


def test_a_line_with_the_wrong_number_of_energy_channels_is_rejected() -> None:
    asm, belt = ready()  # calibrated dual-energy
    out = feed(asm, belt.air(50))
    rejected = 0
    for i, line in enumerate(belt.slab(40, "organic", 50)):
        if i % 2:
            line = Line(line.line_index, line.belt_position_um, line.high)  # high energy only
            with pytest.raises(AssemblyError, match="has 1 energy channel"):
                asm.on_line(line, NOW)
            rejected += 1
        else:
            out += asm.on_line(line, NOW)
    got = scans(out + feed(asm, belt.air(50)))
    assert rejected == 20
    assert len(got) == 1  # built from the lines that fit, the others counted as missing
    assert got[0].missing_lines > 0
    assert got[0].low.shape == got[0].high.shape


def test_a_dual_energy_line_is_rejected_on_a_single_energy_calibration() -> None:
    belt = Belt()
    asm = Assembler()
    cal = belt.calibration()
    asm.on_calibration(Calibration(cal.dark_high, cal.air_high))
    with pytest.raises(AssemblyError, match="has 2 energy channel"):
        asm.on_line(belt.air(1)[0], NOW)


def test_a_new_detector_geometry_mid_parcel_discards_the_open_parcel() -> None:
    asm, belt = ready()
    out = feed(asm, belt.air(50) + belt.slab(21, "organic", 50))  # 25 open lines of 96 px
    narrow = Belt(width=64)
    narrow.index = belt.index
    out += asm.on_hello(narrow.hello())  # same device and boot, reconfigured to 64 px
    out += feed(asm, narrow.air(1))
    asm.on_calibration(narrow.calibration())
    out += feed(asm, narrow.slab(30, "organic", 50, 10, 50) + narrow.air(50))
    assert LinesUncalibrated(1) in out
    assert asm.stats.fragments == 1  # the 96-px half parcel: it cannot stack with 64-px lines
    # no leading margin: the air before it came while uncalibrated
    assert [(s.pixels_per_line, s.line_count) for s in scans(out)] == [(64, 30 + 4)]


def test_line_indices_beyond_the_signed_64_bit_range_are_rejected() -> None:
    asm, belt = ready()
    feed(asm, belt.air(50))
    belt.index = 2**63
    hostile = belt.air(50) + belt.slab(40, "organic", 50) + belt.air(50)
    del hostile[70]  # a missing line: the fill would compute with these indices
    for line in hostile:
        with pytest.raises(AssemblyError, match="line index"):
            asm.on_line(line, NOW)
    belt.index = 50  # the real stream goes on where it was
    got = scans(feed(asm, belt.slab(40, "organic", 50) + belt.air(50)))
    assert [(s.first_line, s.line_count) for s in got] == [(46, 48)]


def test_dust_is_discarded_and_reported() -> None:
    asm, belt = ready()
    out = feed(asm, belt.air(50) + belt.slab(1, "steel", 5) + belt.air(50))
    assert not scans(out)
    assert any(isinstance(o, FragmentDiscarded) for o in out)


def test_air_is_reacquired_while_the_belt_is_empty() -> None:
    asm, belt = ready()
    feed(asm, belt.air(50))
    # the tube ages: open-beam counts drop 8 %, which alone would read as a thin object
    belt.det = DetectorModel(
        belt.det.dark_high,
        belt.det.dark_low,
        (belt.det.dark_high + (belt.det.air_high - belt.det.dark_high) * 0.92).astype(np.uint16),
        (belt.det.dark_low + (belt.det.air_low - belt.det.dark_low) * 0.92).astype(np.uint16),
    )
    feed(asm, belt.air(400))
    got = scans(feed(asm, belt.slab(30, "organic", 50) + belt.air(50)))
    assert len(got) == 1
    assert from_u16(got[0].high[:, :10]).mean() < 0.02
    assert asm.stats.air_updates > 300
    assert asm.stats.threshold_updates >= 1


def test_air_noise_alone_never_moves_the_segmentation_threshold() -> None:
    asm, belt = ready()
    feed(asm, belt.air(2000))
    assert asm.stats.air_updates > 1900
    assert asm.stats.threshold_updates == 0


def test_replayed_lines_rebuild_the_same_scan() -> None:
    asm, belt = ready()
    lines = belt.air(50) + belt.slab(40, "organic", 50) + belt.air(50)
    first = feed(asm, lines[:70])  # the link drops mid-parcel; the scanner replays from line 0
    assert not scans(first)
    out = feed(asm, lines)
    assert any(isinstance(o, FragmentDiscarded) and o.replayed for o in out)
    again = Assembler()
    again.on_hello(belt.hello())
    again.on_calibration(belt.calibration())
    assert [s.scan_id for s in scans(out)] == [s.scan_id for s in scans(feed(again, lines))]


def test_lines_before_calibration_are_reported() -> None:
    belt = Belt()
    asm = Assembler()
    asm.on_hello(belt.hello())
    assert feed(asm, belt.air(2)) == [LinesUncalibrated(1), LinesUncalibrated(1)]


def test_attenuation_round_trips_through_u16() -> None:
    raw = np.array([[1000, 26000, 51000, 900]], dtype=np.uint16)
    dark = np.full(4, 1000, np.float32)
    air = np.full(4, 51000, np.float32)
    a = attenuation(raw, dark, air)
    assert a[0, 0] == pytest.approx(-np.log(1e-5), rel=1e-3)
    assert a[0, 1] == pytest.approx(-np.log(0.5), rel=1e-3)
    assert a[0, 2] == 0.0
    np.testing.assert_allclose(from_u16(to_u16(a)), a, atol=1 / 4096)
    rgb = pseudo_colour(a, a * 1.2)
    assert rgb.shape == (1, 4, 3)
    assert rgb.dtype == np.uint8


def test_tube_output_dip_is_not_a_parcel_but_a_belt_wide_one_is() -> None:
    asm, belt = ready()
    out = feed(asm, belt.air(50) + belt.lines(np.full((30, W), 0.93)) + belt.air(50))
    assert not scans(out)
    assert not any(isinstance(o, FragmentDiscarded) for o in out)
    wide = np.full((30, W), np.exp(-MATERIALS["organic"][0] * 40))  # edge to edge
    assert len(scans(feed(asm, belt.lines(wide) + belt.air(50)))) == 1


def test_faint_cardboard_between_objects_keeps_one_parcel() -> None:
    asm, belt = ready()
    t = np.ones((120, W))
    t[:, 20:70] = np.exp(-MATERIALS["cardboard"][0] * 4)  # ~5 % attenuation: a thin carton
    t[:20, 30:40] = 0.3
    t[100:, 30:40] = 0.3
    got = scans(feed(asm, belt.air(50) + belt.lines(t) + belt.air(50)))
    assert len(got) == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(5, 80), st.integers(45, 120), st.booleans()), min_size=1, max_size=5
    )
)
def test_each_parcel_becomes_exactly_one_scan_with_its_waybill(
    belt_plan: list[tuple[int, int, bool]],
) -> None:
    asm, belt = ready()
    out = feed(asm, belt.air(50))
    expected = []
    for n, (length, gap, read) in enumerate(belt_plan):
        start = belt.index
        if read:
            asm.on_barcode(Barcode(start, 1, f"SF{n:08d}"))
        out += feed(asm, belt.slab(length, "organic", 40) + belt.air(gap))
        expected.append((start - 4, length + 8, f"SF{n:08d}" if read else None))
    out += feed(asm, belt.air(50))
    got = [(s.first_line, s.line_count, s.waybill_no) for s in scans(out)]
    assert got == expected
    assert not [o for o in out if isinstance(o, OrphanBarcode)]


def test_a_cut_at_the_last_line_leaves_nothing_open_to_fail_on() -> None:
    """A long object cut on the last line before the stream pauses opens an empty continuation:
    a reboot, a long hole, a new geometry or a flush must not trip over it."""
    asm, belt = ready(AssemblerConfig(max_lines=100))
    feed(asm, belt.air(50))
    got = scans(feed(asm, belt.slab(96, "organic", 50)))  # 4 leading air + 96 = the cut
    assert [s.truncated for s in got] == [True]
    rebooted = Hello("DEV", "v", "f", W, 16, 1000, 250_000, 2, 100)  # a new boot id
    assert asm.on_hello(rebooted) == []  # nothing was open: no fragment, no IndexError
    assert asm.flush(NOW) == []
    belt.index = 0  # the new boot counts its lines from 0 again
    out = feed(asm, belt.air(50) + belt.slab(40, "organic", 50) + belt.air(50))
    assert [(s.boot_id, s.first_line) for s in scans(out)] == [(100, 46)]

    asm, belt = ready(AssemblerConfig(max_lines=100))
    feed(asm, belt.air(50) + belt.slab(96, "organic", 50))
    belt.index += 500  # a long hole after the cut
    out = feed(asm, belt.air(50) + belt.slab(40, "organic", 50) + belt.air(50))
    assert len(scans(out)) == 1


def test_the_same_calibration_again_keeps_the_air_tracked_since() -> None:
    """The bridge asks for calibration on every connect; an unchanged one must not move the
    threshold stepped from the running air, or a replayed parcel could get a new first line."""
    asm, belt = ready()
    belt.det = DetectorModel(  # the tube ages 8 %: air is re-acquired and the threshold steps
        belt.det.dark_high,
        belt.det.dark_low,
        (belt.det.dark_high + (belt.det.air_high - belt.det.dark_high) * 0.92).astype(np.uint16),
        (belt.det.dark_low + (belt.det.air_low - belt.det.dark_low) * 0.92).astype(np.uint16),
    )
    feed(asm, belt.air(400))
    assert asm.stats.threshold_updates >= 1
    stepped = asm._threshold_air.copy()
    asm.on_calibration(Belt().calibration())  # the scanner's stored references, unchanged
    assert np.array_equal(asm._threshold_air, stepped)
    changed = belt.calibration()  # new references (the scanner re-calibrated): taken
    asm.on_calibration(changed)
    assert not np.array_equal(asm._threshold_air, stepped)
