"""Import parcel images from files: PNG/TIFF high/low pairs and DICOS / DICOM DX (pydicom).

Pixel conventions understood:

* ``attenuation``: uint16 ``-ln(T)`` at ``colour.ATTENUATION_SCALE`` (what this bridge uploads and
  exports); air is 0.
* ``transmission``: detector-like intensities, air brightest; converted with an air level
  estimated from the brightest pixels of each channel (the belt is visible beside the parcel).
* ``auto``: decided from the image border (air): near 0 means attenuation.

DICOM: one file with two frames (high, low) or one frame (single energy). MONOCHROME2 is read
as transmission, MONOCHROME1 as inverted transmission; files written by ``write_dicom`` carry
``ImageType`` value 3 ``ATTENUATION`` and are read back exactly. DICOS (NEMA IIC 1) DX objects
are DICOM files with security-screening SOP classes and read the same way.

``python -m firmware_bridge.fileimport --gateway URL --key KEY --site SITE FILE...`` spools and
uploads (pairs are given as ``high.png:low.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from .assembler import ParcelScan
from .colour import (
    ATTENUATION_SCALE,
    MIN_TRANSMISSION,
    F32Array,
    U16Array,
    from_u16,
    pseudo_colour,
    to_u16,
)
from .errors import FileImportError

log = logging.getLogger("firmware_bridge.fileimport")

Kind = Literal["auto", "attenuation", "transmission"]
_DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"


def _read_image(path: Path) -> npt.NDArray[Any]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileImportError(f"{path}: not a readable PNG/TIFF image")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint8:
        image = image.astype(np.uint16) * 257
    if image.dtype != np.uint16:
        raise FileImportError(f"{path}: {image.dtype} pixels, 8 or 16-bit expected")
    return np.asarray(image)


def _border(image: npt.NDArray[Any]) -> float:
    edge = np.concatenate([image[:2].ravel(), image[-2:].ravel(), image[:, :2].ravel()])
    return float(np.median(edge))


def _to_attenuation(image: npt.NDArray[Any], kind: Kind) -> F32Array:
    if kind == "auto":
        kind = "attenuation" if _border(image) < 0.05 * 65535 else "transmission"
    if kind == "attenuation":
        return from_u16(image)
    values = image.astype(np.float32)
    air = float(np.percentile(values, 99.5))
    if air <= 0:
        raise FileImportError("transmission image has no bright (air) pixels")
    t = np.clip(values / air, MIN_TRANSMISSION, 1.0)
    out: F32Array = -np.log(t)
    return out


def _scan(a_high: F32Array, a_low: F32Array, digest: str, occurred_at: datetime) -> ParcelScan:
    if a_high.shape != a_low.shape or a_high.ndim != 2:
        raise FileImportError(f"high {a_high.shape} and low {a_low.shape} differ")
    return ParcelScan(
        device_id=f"file:{digest[:16]}",
        boot_id=0,
        first_line=0,
        last_line=a_high.shape[0] - 1,
        occurred_at=occurred_at,
        high=to_u16(a_high),
        low=to_u16(a_low),
        image=pseudo_colour(a_high, a_low),
        waybill_no=None,
    )


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def import_pair(
    high: str | Path,
    low: str | Path,
    *,
    kind: Kind = "auto",
    waybill_no: str | None = None,
) -> ParcelScan:
    """A high/low pair of PNG or TIFF files -> ParcelScan (stable id from the file contents)."""
    high, low = Path(high), Path(low)
    a_h = _to_attenuation(_read_image(high), kind)
    a_l = _to_attenuation(_read_image(low), kind)
    scan = _scan(a_h, a_l, _digest(high, low), _mtime(high))
    return _with_waybill(scan, waybill_no)


def _with_waybill(scan: ParcelScan, waybill_no: str | None) -> ParcelScan:
    if waybill_no is None:
        return scan
    from dataclasses import replace

    return replace(scan, waybill_no=waybill_no)


def import_dicom(path: str | Path, *, waybill_no: str | None = None) -> ParcelScan:
    """A DICOM / DICOS DX file (two frames = high, low; one frame = single energy)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels.processing import apply_modality_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        pixels = np.asarray(apply_modality_lut(ds.pixel_array, ds))
    except (InvalidDicomError, AttributeError, ValueError, KeyError, OSError) as exc:
        raise FileImportError(f"{path}: not a readable DICOM image: {exc}") from exc
    frames = pixels if pixels.ndim == 3 else pixels[None]
    if frames.shape[0] not in (1, 2):
        raise FileImportError(f"{path}: {frames.shape[0]} frames, 1 or 2 expected")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    image_type = [str(v) for v in ds.get("ImageType", [])]
    ours = len(image_type) >= 3 and image_type[2] == "ATTENUATION"
    channels: list[F32Array] = []
    for frame in frames:
        if ours:
            channels.append(from_u16(np.clip(frame, 0, 65535).astype(np.uint16)))
            continue
        values = frame.astype(np.float32)
        if photometric == "MONOCHROME1":
            values = float(values.max()) - values
        channels.append(_to_attenuation(values, "transmission"))
    a_h = channels[0]
    a_l = channels[1] if len(channels) == 2 else channels[0]
    occurred = _mtime(path)
    date, tm = str(ds.get("AcquisitionDate", "")), str(ds.get("AcquisitionTime", ""))
    if len(date) == 8 and len(tm) >= 6:
        occurred = datetime.strptime(date + tm[:6], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return _with_waybill(_scan(a_h, a_l, _digest(path), occurred), waybill_no)


def write_pair(scan: ParcelScan, high: str | Path, low: str | Path) -> None:
    """Export a scan's attenuation as 16-bit PNG or TIFF (by extension)."""
    for image, path in ((scan.high, high), (scan.low, low)):
        if not cv2.imwrite(str(path), image):
            raise FileImportError(f"cannot write {path}")


def write_dicom(scan: ParcelScan, path: str | Path) -> None:
    """Export a scan as a two-frame DX (for processing) DICOM file, attenuation in MONOCHROME1."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_DX_FOR_PROCESSING)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UID(_DX_FOR_PROCESSING)
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ATTENUATION"]
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.Manufacturer = "firmware_bridge"
    ds.DeviceSerialNumber = scan.device_id
    when = scan.occurred_at.astimezone(UTC)
    ds.AcquisitionDate = when.strftime("%Y%m%d")
    ds.AcquisitionTime = when.strftime("%H%M%S")
    ds.ContentLabel = "DUALENERGY"
    ds.ImageComments = f"high,low attenuation; {ATTENUATION_SCALE:g} counts per unit -ln(T)"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.NumberOfFrames = 2
    ds.Rows, ds.Columns = scan.high.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    frames: U16Array = np.stack([scan.high, scan.low]).astype("<u2")
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)


def import_path(spec: str, *, kind: Kind = "auto") -> ParcelScan:
    """``high.png:low.png`` (a pair) or ``file.dcm`` (DICOM / DICOS)."""
    if ":" in spec:
        high, low = spec.split(":", 1)
        return import_pair(high, low, kind=kind)
    return import_dicom(spec)


# -- command line ----------------------------------------------------------------------------


async def _upload(args: argparse.Namespace) -> int:
    import aiohttp

    from .spool import Spool
    from .uplink import Forwarder, GatewayClient, spool_record

    spool = Spool(args.spool)
    for spec in args.files:
        scan = import_path(spec, kind=args.kind)
        record = spool_record(scan, site_id=args.site, scanner_id=args.scanner_id)
        fresh = spool.put(record, time.time())
        print(f"{spec}: scan {scan.scan_id} {'spooled' if fresh else 'already known'}")
    async with aiohttp.ClientSession() as session:
        forwarder = Forwarder(spool, GatewayClient(session, args.gateway, args.key))
        task = asyncio.get_running_loop().create_task(forwarder.run())
        try:
            async with asyncio.timeout(args.timeout):
                while spool.depth().pending:  # noqa: ASYNC110 - the spool has no event
                    await asyncio.sleep(0.1)
        except TimeoutError:
            print(f"{spool.depth().pending} scans still pending; they stay in {args.spool}")
        finally:
            task.cancel()
    dead = spool.depth().dead
    spool.close()
    return 1 if dead else 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.fileimport", description=__doc__)
    p.add_argument("files", nargs="+", help="high.png:low.png, high.tif:low.tif or file.dcm")
    p.add_argument("--gateway", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--scanner-id", default="file-import")
    p.add_argument("--kind", choices=["auto", "attenuation", "transmission"], default="auto")
    p.add_argument("--spool", type=Path, default=Path("var/bridge/import-spool.sqlite3"))
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(asyncio.run(_upload(args)))


if __name__ == "__main__":
    main()
