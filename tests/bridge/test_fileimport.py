"""File import: PNG/TIFF high/low pairs and DICOM DX round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from firmware_bridge.assembler import ParcelScan
from firmware_bridge.colour import pseudo_colour, to_u16
from firmware_bridge.errors import FileImportError
from firmware_bridge.fileimport import (
    import_dicom,
    import_pair,
    import_path,
    write_dicom,
    write_pair,
)
from firmware_bridge.phantoms import ProceduralSource


def sample_scan() -> ParcelScan:
    phantom = ProceduralSource(60, 80).parcel(3, 120)
    a_h = -np.log(np.clip(phantom.t_high, 1e-5, 1)).astype(np.float32)
    a_l = -np.log(np.clip(phantom.t_low, 1e-5, 1)).astype(np.float32)
    return ParcelScan(
        "DEV",
        1,
        0,
        a_h.shape[0] - 1,
        datetime(2026, 11, 28, 9, 30, 5, tzinfo=UTC),
        to_u16(a_h),
        to_u16(a_l),
        pseudo_colour(a_h, a_l),
        "SF1",
    )


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_attenuation_pair_round_trips(tmp_path: Path, ext: str) -> None:
    scan = sample_scan()
    high, low = tmp_path / f"h.{ext}", tmp_path / f"l.{ext}"
    write_pair(scan, high, low)
    got = import_pair(high, low)
    np.testing.assert_array_equal(got.high, scan.high)
    np.testing.assert_array_equal(got.low, scan.low)
    np.testing.assert_array_equal(got.image, scan.image)
    assert got.scan_id == import_path(f"{high}:{low}").scan_id  # stable per content
    assert got.unbound


def test_transmission_pair_is_converted_with_its_air_level(tmp_path: Path) -> None:
    t = np.ones((40, 50), np.float32)
    t[10:30, 10:40] = 0.5
    raw = (t * 50_000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "h.png"), raw)
    cv2.imwrite(str(tmp_path / "l.png"), raw)
    got = import_pair(tmp_path / "h.png", tmp_path / "l.png")
    assert got.high[20, 20] / 4096 == pytest.approx(np.log(2), rel=0.01)
    assert got.high[0, 0] == 0


def test_dicom_dx_round_trips(tmp_path: Path) -> None:
    scan = sample_scan()
    path = tmp_path / "scan.dcm"
    write_dicom(scan, path)
    got = import_dicom(path, waybill_no="SF9")
    np.testing.assert_array_equal(got.high, scan.high)
    np.testing.assert_array_equal(got.low, scan.low)
    assert got.occurred_at == scan.occurred_at
    assert got.waybill_no == "SF9"


def test_foreign_single_frame_monochrome2_dx(tmp_path: Path) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 20, 30
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    img = np.full((20, 30), 40_000, np.uint16)
    img[5:15, 5:25] = 10_000
    ds.PixelData = img.tobytes()
    ds.save_as(tmp_path / "dx.dcm", enforce_file_format=True)
    got = import_dicom(tmp_path / "dx.dcm")
    assert got.high[10, 10] / 4096 == pytest.approx(np.log(4), rel=0.01)
    np.testing.assert_array_equal(got.high, got.low)


def test_unreadable_files_are_import_errors(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_bytes(b"not dicom")
    (tmp_path / "x.png").write_bytes(b"not png")
    with pytest.raises(FileImportError):
        import_dicom(tmp_path / "x.dcm")
    with pytest.raises(FileImportError):
        import_pair(tmp_path / "x.png", tmp_path / "x.png")
