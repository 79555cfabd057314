"""POST /v1/scans: upload -> verdict -> stored xray.scanned event -> compliance; bad uploads."""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from screening.api.context import GATEWAY
from screening.errors import InvalidEventError, PayloadTooLargeError
from screening.inference import InferenceError
from screening.protection import PersonalDataVault
from screening.services import scans as scans_service
from screening.services.scans import (
    ImageInfo,
    ScanLimits,
    ScanMetadata,
    check_shape,
    image_info,
)
from screening.settings import Settings
from screening.storage import ledger as ledger_store
from tests.conftest import RunningGateway, gateway_with
from tests.gateway.events import BASE, parcel_flow


def tiny_detector(path: Path) -> Path:
    """A real ONNX graph in the YOLOv8 layout [1, 4+1, 1]: one centred box whose 'knife' score
    is 1 - mean brightness, so dark images are flagged and bright ones are clear."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 1])
    box = helper.make_tensor("box", TensorProto.FLOAT, [1, 4, 1], [32.0, 32.0, 20.0, 20.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 1, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["mean3"]),
        helper.make_node("Sub", ["one", "mean3"], ["score"]),
        helper.make_node("Concat", ["box", "score"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[box, one, shape, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in {"names": "{0: 'knife'}", "imgsz": "[64, 64]", "version": "tiny-1"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def png(value: int, size: tuple[int, int] = (96, 128), depth: type = np.uint8) -> bytes:
    img = np.full(size if depth is np.uint16 else (*size, 3), value, dtype=depth)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return bytes(buf.tobytes())


DARK, BRIGHT = png(20), png(235)


@pytest.fixture
async def scan_gateway(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[RunningGateway]:
    settings = Settings(
        data_dir=tmp_path,
        api_key_cache_s=0.0,
        model_path=tiny_detector(tmp_path / "tiny.onnx"),
        max_image_bytes=200_000,
        max_image_pixels=1_000_000,
    )
    async with gateway_with(settings, pool, vault) as gw:
        yield gw


def metadata(gw: RunningGateway, waybill: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "scan_id": str(uuid.uuid4()),
        "site_id": gw.keys.site,
        "scanner_id": "XR-1",
        "waybill_no": waybill,
        "occurred_at": BASE.replace(minute=4).isoformat(),
        **extra,
    }


async def upload(
    gw: RunningGateway,
    meta: dict[str, Any] | bytes | None,
    role: str = "station",
    other: bool = False,
    **files: bytes,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else __import__("json").dumps(meta).encode()
        form.add_field("metadata", raw, filename="metadata.json", content_type="application/json")
    for name, data in files.items():
        form.add_field(name, data, filename=f"{name}.png", content_type="image/png")
    async with gw.http.post(
        f"{gw.url}/v1/scans", data=form, headers=gw.auth(role, other=other)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_events(gw: RunningGateway, events: list[dict[str, Any]]) -> None:
    async with gw.http.post(f"{gw.url}/v1/events", json=events, headers=gw.auth()) as resp:
        assert resp.status == 200


async def parcel(gw: RunningGateway, waybill: str) -> dict[str, Any]:
    async with gw.http.get(f"{gw.url}/v1/parcels/{waybill}", headers=gw.auth()) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_clear_upload_satisfies_the_xray_rule(scan_gateway: RunningGateway) -> None:
    gw = scan_gateway
    await post_events(gw, parcel_flow(gw.keys.site, "SC0000000001", skip=frozenset({"xray"})))
    assert (await parcel(gw, "SC0000000001"))["violations"] == ["no_xray"]
    status, body = await upload(gw, metadata(gw, "SC0000000001"), image=BRIGHT)
    assert status == 201, body
    assert body["result"] == "accepted"
    assert body["verdict"]["result"] == "clear"
    assert body["verdict"]["model_version"] == "tiny-1"
    assert body["bound"] is True
    after = await parcel(gw, "SC0000000001")
    assert after["violations"] == []
    assert after["compliant"] is True
    assert any(e["type"] == "xray.scanned" for e in after["events"])
    # The upload's ledger append and the writer's share one LedgerTips: its tip is where the
    # log now is, so the writer's next append to the site is not a wrong guess.
    state = gw.app[GATEWAY]
    assert state.scans.ledger_tips is state.writer.ledger_tips
    tip = state.writer.ledger_tips.left_at(gw.keys.site)
    assert tip is not None
    async with state.pool.acquire() as conn:
        head = await ledger_store.latest_root(conn, gw.keys.site)
    assert (tip[0].size, tip[1]) == (head.tree_size, head.root_hash)


async def test_a_flagged_upload_makes_dispatch_a_violation(scan_gateway: RunningGateway) -> None:
    gw = scan_gateway
    await post_events(gw, parcel_flow(gw.keys.site, "SC0000000002", skip=frozenset({"xray"})))
    status, body = await upload(gw, metadata(gw, "SC0000000002"), image=DARK)
    assert status == 201, body
    assert body["verdict"]["result"] == "flagged"
    finding = body["verdict"]["findings"][0]
    assert finding["class_name"] == "knife"
    assert finding["score"] > 0.5
    x1, y1, x2, y2 = finding["box"]
    assert 0 <= x1 < x2 <= 128
    assert 0 <= y1 < y2 <= 96  # mapped back from the 64x64 letterbox into image pixels
    assert (await parcel(gw, "SC0000000002"))["violations"] == ["dispatched_while_flagged"]


async def test_a_resend_is_a_duplicate_and_a_different_image_a_conflict(
    scan_gateway: RunningGateway,
) -> None:
    gw = scan_gateway
    meta = metadata(gw, "SC0000000003")
    assert (await upload(gw, meta, image=BRIGHT))[0] == 201
    status, body = await upload(gw, meta, image=BRIGHT)
    assert status == 200
    assert body["result"] == "duplicate"
    status, body = await upload(gw, meta, image=DARK)
    assert status == 409
    assert body["code"] == "conflict"
    async with gw.pool.acquire() as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM events WHERE site_id = $1 AND waybill_no = $2",
            gw.keys.site,
            "SC0000000003",
        )
    assert n == 1


async def test_an_unbound_scan_is_kept_without_an_event(scan_gateway: RunningGateway) -> None:
    gw = scan_gateway
    meta = metadata(gw, None)
    status, body = await upload(gw, meta, image=BRIGHT)
    assert status == 201, body
    assert body["bound"] is False
    assert body["event_id"] is None
    async with gw.http.get(f"{gw.url}/v1/scans/{meta['scan_id']}", headers=gw.auth()) as resp:
        assert resp.status == 200
        assert (await resp.json())["bound"] is False
    rates_url = f"{gw.url}/v1/sites/{gw.keys.site}/rates?from=2026-11-20&to=2026-11-20"
    async with gw.http.get(rates_url, headers=gw.auth("supervisor")) as resp:
        rates = await resp.json()
    assert rates["total"]["unbound_scans"] == 1
    # The day is a row, though nothing was dispatched on it: the rows add up to the total.
    assert sum(r["unbound_scans"] for r in rates["rows"]) == 1
    assert [r["day"] for r in rates["rows"] if r["unbound_scans"]] == ["2026-11-20"]


async def test_a_raw_high_low_pair_is_colourised_and_judged(scan_gateway: RunningGateway) -> None:
    gw = scan_gateway
    high = png(2000, depth=np.uint16)  # attenuation counts (A x 4096): thin material
    low = png(2600, depth=np.uint16)
    status, body = await upload(gw, metadata(gw, "SC0000000004"), high=high, low=low)
    assert status == 201, body
    assert body["width"] == 128
    assert body["height"] == 96


async def test_the_image_comes_back_with_boxes_drawn(scan_gateway: RunningGateway) -> None:
    gw = scan_gateway
    meta = metadata(gw, "SC0000000005")
    await upload(gw, meta, image=DARK)
    url = f"{gw.url}/v1/scans/{meta['scan_id']}/image"
    async with gw.http.get(url, headers=gw.auth("supervisor")) as resp:
        plain = await resp.read()
        assert resp.content_type == "image/png"
    async with gw.http.get(url + "?overlay=boxes", headers=gw.auth("supervisor")) as resp:
        drawn = cv2.imdecode(np.frombuffer(await resp.read(), np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == original.shape
    assert (drawn != original).any()  # the box is drawn
    async with gw.http.get(url, headers=gw.auth("supervisor", other=True)) as resp:
        assert resp.status == 404  # another site's supervisor cannot see it


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00" * 32
    )


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        pytest.param({"image": BRIGHT[: len(BRIGHT) // 2]}, 422, "invalid_image", id="truncated"),
        pytest.param(
            {"image": b"GIF89a not an image at all"},
            422,
            "unsupported_image_type",
            id="not an image",
        ),
        pytest.param(
            {"image": png_header_only(20_000, 20_000)},
            413,
            "image_too_large",
            id="decompression bomb header",
        ),
        pytest.param({"image": png(128, size=(8, 8))}, 422, "invalid_image_shape", id="tiny"),
        pytest.param(
            {"image": b"\x89PNG" + b"\x00" * 300_000}, 413, "image_too_large", id="oversized part"
        ),
        pytest.param({"high": png(10, depth=np.uint16)}, 400, "missing_part", id="high only"),
        pytest.param(
            {"high": png(10, depth=np.uint16), "low": png(10, size=(64, 64), depth=np.uint16)},
            422,
            "invalid_image_shape",
            id="pair of different sizes",
        ),
        pytest.param(
            {"high": BRIGHT, "low": BRIGHT},
            422,
            "invalid_image_shape",
            id="8-bit colour as a raw pair",
        ),
        pytest.param({}, 400, "missing_part", id="no image"),
    ],
)
async def test_a_bad_upload_gets_a_4xx_and_the_server_keeps_serving(
    scan_gateway: RunningGateway, files: dict[str, bytes], status: int, code: str
) -> None:
    got, body = await upload(scan_gateway, metadata(scan_gateway, "SC0000000009"), **files)
    assert (got, body["code"]) == (status, code), body
    ok, _ = await upload(scan_gateway, metadata(scan_gateway, "SC0000000010"), image=BRIGHT)
    assert ok == 201


async def test_bad_metadata_and_forms_are_refused(scan_gateway: RunningGateway) -> None:
    gw = scan_gateway
    assert (await upload(gw, None, image=BRIGHT))[1]["code"] == "missing_part"
    assert (await upload(gw, b"{not json", image=BRIGHT))[1]["code"] == "malformed_json"
    status, body = await upload(gw, metadata(gw, "SC0000000011", colour="red"), image=BRIGHT)
    assert (status, body["code"]) == (422, "unknown_field")
    assert body["errors"][0]["path"] == "metadata.colour"
    status, body = await upload(gw, metadata(gw, "SC0000000012"), other=True, image=BRIGHT)
    assert (status, body["code"]) == (403, "forbidden_site")
    status, body = await upload(gw, metadata(gw, "SC0000000013"), role="supervisor", image=BRIGHT)
    assert (status, body["code"]) == (403, "forbidden_role")
    async with gw.http.post(f"{gw.url}/v1/scans", json={"a": 1}, headers=gw.auth()) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "not_multipart"
    form = aiohttp.FormData()
    form.add_field("metadata", b"{}", filename="m.json", content_type="application/json")
    form.add_field("thumbnail", BRIGHT, filename="t.png")
    async with gw.http.post(f"{gw.url}/v1/scans", data=form, headers=gw.auth()) as resp:
        assert (await resp.json())["code"] == "unknown_part"


async def post_raw(gw: RunningGateway, body: bytes, content_type: str) -> tuple[int, Any]:
    headers = {**gw.auth(), "Content-Type": content_type}
    async with gw.http.post(f"{gw.url}/v1/scans", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"--b\r\n", "multipart/form-data", id="no boundary"),
        pytest.param(b"no boundary here\r\n", "multipart/form-data; boundary=b", id="no opening"),
        pytest.param(
            b'--b\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{"scan',
            "multipart/form-data; boundary=b",
            id="ends inside a part",
        ),
    ],
)
async def test_a_malformed_multipart_body_is_a_400_not_a_crash(
    scan_gateway: RunningGateway, body: bytes, content_type: str
) -> None:
    status, problem = await post_raw(scan_gateway, body, content_type)
    assert (status, problem["code"]) == (400, "malformed_multipart"), problem
    ok, _ = await upload(scan_gateway, metadata(scan_gateway, "SC0000000014"), image=BRIGHT)
    assert ok == 201


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"line_count": ' + b"9" * 5000 + b"}", id="integer of 5000 digits"),
        pytest.param(b"[" * 20_000 + b"]" * 20_000, id="nested too deeply"),
        pytest.param(b'{"line_count": NaN}', id="NaN"),
    ],
)
async def test_metadata_that_json_cannot_hold_is_malformed_json(
    scan_gateway: RunningGateway, raw: bytes
) -> None:
    status, problem = await upload(scan_gateway, raw, image=BRIGHT)
    assert (status, problem["code"]) == (400, "malformed_json"), problem


async def test_a_failing_image_store_is_a_503_to_retry_and_records_nothing(
    scan_gateway: RunningGateway, tmp_path: Path
) -> None:
    gw = scan_gateway
    store = gw.app[GATEWAY].scans.images
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    kept, store.root = store.root, blocker  # every directory under it fails to be made
    meta = metadata(gw, "SC0000000015")
    try:
        status, problem = await upload(gw, meta, image=BRIGHT)
    finally:
        store.root = kept
    assert (status, problem["code"]) == (503, "image_store_unavailable"), problem
    status, body = await upload(gw, meta, image=BRIGHT)  # the retry, once the disk is back
    assert (status, body["result"]) == (201, "accepted")


def test_the_jpeg_header_walk_reads_the_frame_header_the_decoder_reads() -> None:
    """A fill byte (0xFF) before a marker is legal and the decoder skips it; a walk that took it
    for a segment jumped to where a crafted comment could hold a small fake size, and a 49 KB
    upload decoded to a 12000 x 12000 image past the pixel limit."""
    ok, buf = cv2.imencode(".jpg", np.full((64, 80, 3), 128, np.uint8))
    assert ok
    data = bytes(buf)
    sof = data.index(b"\xff\xc0")
    padded = data[:sof] + b"\xff\xff" + data[sof:]  # two fill bytes before the frame header
    assert image_info(padded, "image") == ImageInfo("jpeg", 80, 64)
    decoded = cv2.imdecode(np.frombuffer(padded, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (64, 80)  # the decoder reads the same frame
    # The frame header claims 12000 x 12000: that is the size judged, and refused.
    bomb = bytearray(padded)
    at = sof + 2 + 5  # past the fill bytes, the marker, the length and the precision
    bomb[at : at + 4] = struct.pack(">HH", 12000, 12000)
    info = image_info(bytes(bomb), "image")
    assert (info.width, info.height) == (12000, 12000)
    with pytest.raises(PayloadTooLargeError):
        check_shape(info, ScanLimits(10**6, 16_000_000), "image")
    # Bytes between segments, or a scan before any frame header: malformed, not guessed at.
    for broken in (data[:sof] + b"\x00" + data[sof:], data[:2] + b"\xff\xda\x00\x02"):
        with pytest.raises(InvalidEventError):
            image_info(broken, "image")


def jpeg_turned_by_exif(rows: int, cols: int, value: int, orientation: int) -> bytes:
    """A JPEG of rows x cols pixels whose EXIF says to show it turned (6: 90 degrees)."""
    ok, buf = cv2.imencode(".jpg", np.full((rows, cols, 3), value, np.uint8))
    assert ok
    data = bytes(buf)
    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    exif = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]


async def test_the_overlay_draws_on_the_pixels_the_detector_saw(
    scan_gateway: RunningGateway,
) -> None:
    """OpenCV's colour decode turns a JPEG by its EXIF orientation, the detector's decode does
    not: the overlay must use the detector's, or its boxes land on turned pixels."""
    gw = scan_gateway
    image = jpeg_turned_by_exif(48, 120, 20, orientation=6)
    assert cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (120, 48)
    meta = metadata(gw, "SC0000000017")
    status, body = await upload(gw, meta, image=image)
    assert status == 201, body
    url = f"{gw.url}/v1/scans/{meta['scan_id']}/image?overlay=boxes"
    async with gw.http.get(url, headers=gw.auth("supervisor")) as resp:
        drawn = cv2.imdecode(np.frombuffer(await resp.read(), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape[:2] == (48, 120)  # the grid the boxes were found on


async def test_one_instant_written_with_another_offset_is_the_same_scan(
    scan_gateway: RunningGateway,
) -> None:
    gw = scan_gateway
    meta = metadata(gw, "SC0000000031", occurred_at="2026-11-20T02:04:00+00:00")
    assert (await upload(gw, meta, image=BRIGHT))[0] == 201
    shanghai = {**meta, "occurred_at": "2026-11-20T10:04:00+08:00"}
    status, body = await upload(gw, shanghai, image=BRIGHT)
    assert (status, body["result"]) == (200, "duplicate")
    later = {**meta, "occurred_at": "2026-11-20T10:05:00+08:00"}
    assert (await upload(gw, later, image=BRIGHT))[0] == 409


async def test_a_pair_resend_is_judged_without_colourising_it_again(
    scan_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = scan_gateway
    high, low = png(2000, depth=np.uint16), png(2600, depth=np.uint16)
    meta = metadata(gw, "SC0000000032")
    assert (await upload(gw, meta, high=high, low=low))[0] == 201
    calls: list[int] = []
    real = scans_service.colourise_pair

    def counted(h: bytes, lo: bytes) -> bytes:
        calls.append(1)
        return real(h, lo)

    monkeypatch.setattr(scans_service, "colourise_pair", counted)
    status, body = await upload(gw, meta, high=high, low=low)
    assert (status, body["result"]) == (200, "duplicate")
    assert calls == []
    # A record stored by an earlier gateway holds the legacy digest (the time as sent, and the
    # colour image made from the pair): its resend is still a duplicate.
    scan_meta = ScanMetadata(**{**meta, "scan_id": uuid.UUID(meta["scan_id"]),
                                "occurred_at": datetime.fromisoformat(meta["occurred_at"])})
    colour = hashlib.sha256(real(high, low)).hexdigest()
    legacy = scans_service.legacy_content_digest(scan_meta, colour,
                                                 hashlib.sha256(high).hexdigest(),
                                                 hashlib.sha256(low).hexdigest())  # fmt: skip
    async with gw.pool.acquire() as conn:
        await conn.execute(
            "UPDATE scan_uploads SET content_digest = $3 WHERE site_id = $1 AND scan_id = $2",
            meta["site_id"], uuid.UUID(meta["scan_id"]), legacy,
        )  # fmt: skip
    status, body = await upload(gw, meta, high=high, low=low)
    assert (status, body["result"]) == (200, "duplicate")
    status, body = await upload(gw, meta, high=low, low=high)  # another pair: a conflict
    assert (status, body["code"]) == (409, "conflict")


async def test_a_scan_id_used_at_two_sites_is_read_by_naming_the_site(
    scan_gateway: RunningGateway,
) -> None:
    gw = scan_gateway
    meta = metadata(gw, "SC0000000033")
    other = {**meta, "site_id": gw.keys.other_site}
    assert (await upload(gw, meta, image=BRIGHT))[0] == 201
    assert (await upload(gw, other, other=True, image=DARK))[0] == 201
    base = f"{gw.url}/v1/scans/{meta['scan_id']}"
    admin = gw.auth("admin")  # reads both sites
    async with gw.http.get(base, headers=admin) as resp:
        problem = await resp.json()
        assert (resp.status, problem["code"]) == (409, "ambiguous_scan_id")
        assert problem["sites"] == sorted([gw.keys.site, gw.keys.other_site])
    for site, verdict in ((gw.keys.site, "clear"), (gw.keys.other_site, "flagged")):
        async with gw.http.get(f"{base}?site_id={site}", headers=admin) as resp:
            body = await resp.json()
            assert (resp.status, body["site_id"], body["verdict"]["result"]) == (200, site, verdict)
            assert body["image_url"].endswith(f"/image?overlay=boxes&site_id={site}")
        async with gw.http.get(body["image_url"], headers=admin) as resp:
            assert resp.status == 200
            assert resp.content_type == "image/png"
    # A key for one site reads its own scan without naming it, and not the other's by naming.
    async with gw.http.get(base, headers=gw.auth("supervisor")) as resp:
        assert (await resp.json())["site_id"] == gw.keys.site
    url = f"{base}?site_id={gw.keys.other_site}"
    async with gw.http.get(url, headers=gw.auth("supervisor")) as resp:
        assert resp.status == 404


async def test_an_inference_failure_is_a_503_to_retry_and_records_nothing(
    scan_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = scan_gateway
    detector = await gw.app[GATEWAY].scans.detector()

    async def failing(image: bytes) -> Any:
        raise InferenceError("the session failed")  # as the worker thread reports one

    meta = metadata(gw, "SC0000000034")
    with monkeypatch.context() as patch:
        patch.setattr(detector, "detect", failing)
        status, problem = await upload(gw, meta, image=BRIGHT)
    assert (status, problem["code"]) == (503, "inference_failed"), problem
    async with gw.http.get(f"{gw.url}/v1/scans/{meta['scan_id']}", headers=gw.auth()) as resp:
        assert resp.status == 404
    status, body = await upload(gw, meta, image=BRIGHT)
    assert (status, body["result"]) == (201, "accepted")
