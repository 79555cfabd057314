"""Firmware bridge throughput: lines/s for decode + calibrate + assemble + colourise on one core.

``python -m bench.bridge [--parcels N] [--pixels 750]`` prints the sustained line rate and its
ratio against a 250 lines/s scanner (target >= 20x). PNG encoding for the uplink is reported
separately: it runs per parcel, in a worker thread, off the line path.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from firmware_bridge.assembler import Assembler, ParcelScan  # noqa: E402
from firmware_bridge.frames import Barcode, Calibration, Hello, Line  # noqa: E402
from firmware_bridge.phantoms import DetectorModel, ProceduralSource  # noqa: E402
from firmware_bridge.protocol import LinkProtocol, Role  # noqa: E402
from firmware_bridge.uplink import spool_record  # noqa: E402

SCANNER_RATE = 250.0  # lines/s of the reference scanner
TARGET_RATIO = 20.0


def build_stream(parcels: int, pixels: int, seed: int = 0) -> tuple[bytes, int]:
    """The bytes a scanner sends for ``parcels`` parcels with air gaps; returns (bytes, lines)."""
    scanner = LinkProtocol(Role.SCANNER)
    det = DetectorModel.create(pixels, seed)
    rng = np.random.default_rng(seed)
    source = ProceduralSource()
    chunks = [
        scanner.send(Hello("BENCH", "bench", "1", pixels, 16, 1500, 250_000, 2, 1), 0.0),
        scanner.send(
            Calibration(
                det.dark_high.tobytes(),
                det.air_high.tobytes(),
                det.dark_low.tobytes(),
                det.air_low.tobytes(),
            ),
            0.0,
        ),
    ]
    index = 0
    for p in range(parcels):
        phantom = source.parcel(seed + p, pixels)
        gap = np.ones((60, pixels), dtype=np.float32)
        h, lo = det.expose(np.vstack([gap, phantom.t_high]), np.vstack([gap, phantom.t_low]), rng)
        for row in range(h.shape[0]):
            if row == 60:
                chunks.append(scanner.send(Barcode(index, 1, f"SF{p:010d}"), 0.0))
            line = Line(index, index * 1500, h[row].tobytes(), lo[row].tobytes())
            chunks.append(scanner.send(line, 0.0))
            index += 1
    tail = np.ones((60, pixels), dtype=np.float32)
    h, lo = det.expose(tail, tail, rng)
    for row in range(h.shape[0]):
        chunks.append(scanner.send(Line(index, 0, h[row].tobytes(), lo[row].tobytes()), 0.0))
        index += 1
    return b"".join(chunks), index


def run_once(stream: bytes, chunk: int = 65536) -> tuple[float, list[ParcelScan]]:
    """Decode + calibrate + assemble + colourise the stream; returns (seconds, scans)."""
    bridge = LinkProtocol(Role.BRIDGE)
    asm = Assembler()
    now = datetime.now(UTC)
    scans: list[ParcelScan] = []
    t0 = time.perf_counter()
    for start in range(0, len(stream), chunk):
        for event in bridge.receive_data(stream[start : start + chunk], 0.0):
            if isinstance(event, Line):
                for out in asm.on_line(event, now):
                    if isinstance(out, ParcelScan):
                        scans.append(out)
            elif isinstance(event, Barcode):
                asm.on_barcode(event)
            elif isinstance(event, Hello):
                asm.on_hello(event)
            elif isinstance(event, Calibration):
                asm.on_calibration(event)
        bridge.data_to_send()
    return time.perf_counter() - t0, scans


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    p.add_argument("--parcels", type=int, default=40)
    p.add_argument("--pixels", type=int, default=750)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    stream, lines = build_stream(args.parcels, args.pixels)
    best = float("inf")
    scans: list[ParcelScan] = []
    for _ in range(args.repeat):
        seconds, scans = run_once(stream)
        best = min(best, seconds)
    rate = lines / best
    t0 = time.perf_counter()
    for scan in scans:
        spool_record(scan, site_id="bench")
    png_s = (time.perf_counter() - t0) / max(len(scans), 1)
    mb = len(stream) / 1e6
    print(
        f"bridge: {lines} lines x {args.pixels} px x 2 energies ({mb:.0f} MB, {len(scans)} parcels)"
    )
    print(f"bridge: decode+calibrate+assemble+colourise {rate:,.0f} lines/s on one core")
    ratio = rate / SCANNER_RATE
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"bridge: ratio vs a {SCANNER_RATE:.0f} lines/s scanner: {ratio:.1f}x "
        f"(target >= {TARGET_RATIO:.0f}x) {verdict}"
    )
    print(f"bridge: PNG encode for uplink {png_s * 1000:.1f} ms per parcel (worker thread)")


if __name__ == "__main__":
    main()
