"""The committed model on held-out generated parcels, through the real serving path."""

from __future__ import annotations

import asyncio
import json

import cv2
import numpy as np
import onnx
import pytest

from models.synth import generate_parcel
from models.synth.colour import STYLES, colourise
from models.synth.dataset import TEST_SEEDS_START, render_sample
from models.synth.physics import calibrate
from screening.inference import DEFAULT_MODEL_PATH, Detector, DetectorConfig, Result, judge

# Held-out seeds (training uses seeds below 1,000,000); fixed so the test is repeatable.
SEEDS = range(TEST_SEEDS_START + 50_000, TEST_SEEDS_START + 50_030)
# Regression guards set below what the shipped model (2.3.0) measures on these seeds: 0.70 of
# these threat parcels flagged (21 of 30; 2.2.0 flagged 22), one clean parcel of 30; short of
# the 0.8. On the card's 300 threat parcels 2.3.0 flags more knives and organic masses
# than 2.2.0 at fewer false alarms; 30 parcels move by one either way.
MIN_RECALL = 0.65  # share of threat parcels flagged at the manifest thresholds
MAX_CLEAN_FLAGGED = 0.1  # share of clean parcels flagged


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()


def test_export_contract() -> None:
    model = onnx.load(str(DEFAULT_MODEL_PATH))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    manifest = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    assert meta["names"] == str(dict(enumerate(manifest["classes"])))
    assert DEFAULT_MODEL_PATH.stat().st_size < 12_000_000  # about 2 M float32 weights


@pytest.fixture(scope="module")
def verdicts() -> tuple[list[Result], list[Result]]:
    threat = [png(render_sample(s, ("A", "B", "C"), 1.0).image) for s in SEEDS]
    clean = [png(render_sample(s, ("A", "B", "C"), 0.0).image) for s in SEEDS]

    async def run() -> tuple[list[Result], list[Result]]:
        det = Detector(DetectorConfig(model_path=DEFAULT_MODEL_PATH, intra_op_threads=1))
        await det.start()
        try:
            out = []
            for group in (threat, clean):
                found = await asyncio.gather(*(det.detect(p) for p in group))
                out.append([judge(d.boxes, det.info).result for d in found])
            return out[0], out[1]
        finally:
            await det.close()

    return asyncio.run(run())


def test_finds_threats_on_held_out_parcels(verdicts: tuple[list[Result], list[Result]]) -> None:
    threat, _ = verdicts
    recall = np.mean([r is Result.FLAGGED for r in threat])
    assert recall >= MIN_RECALL


def test_stays_quiet_on_most_clean_parcels(verdicts: tuple[list[Result], list[Result]]) -> None:
    _, clean = verdicts
    assert np.mean([r is Result.FLAGGED for r in clean]) <= MAX_CLEAN_FLAGGED


async def test_full_belt_frame_from_the_generator_is_cropped_and_screened() -> None:
    """A 750-channel frame as the bridge delivers it, coloured like a station display."""
    flagged = 0
    det = Detector(DetectorConfig(model_path=DEFAULT_MODEL_PATH))
    await det.start()
    try:
        seeds = [s for s in range(TEST_SEEDS_START + 60_000, TEST_SEEDS_START + 60_040)
                 if generate_parcel(s).labels][:8]
        for seed in seeds:
            p = generate_parcel(seed)
            pl = -np.log(calibrate(p.low, p.dark_low))
            ph = -np.log(calibrate(p.high, p.dark_high))
            rgb = colourise(pl, ph, p.scanner, STYLES["A"])
            d = await det.detect(png(rgb))
            assert (d.width, d.height) == (750, p.high.shape[0])
            verdict = judge(d.boxes, det.info)
            flagged += verdict.result is Result.FLAGGED
            # Boxes come back in frame pixels, on the parcel (the crop is undone).
            px0, py0, px1, py1 = p.parcel_box
            for f in verdict.findings:
                x1, y1, x2, y2 = f.box
                assert px0 - 25 <= x1 < x2 <= px1 + 25
                assert py0 - 25 <= y1 < y2 <= py1 + 25
    finally:
        await det.close()
    assert flagged >= 1  # measured 3 of 8: the point here is the crop and the box mapping


def test_the_ensemble_maps_each_flipped_pass_back_onto_the_image() -> None:
    """The shipped graph pools four passes (as is, mirrored left-right, top-bottom, both) along
    N. Its second block for an image must be its first block for the mirrored image, mirrored
    back, and so on: the flips are undone exactly, not approximately."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(DEFAULT_MODEL_PATH))
    size = 320
    image = np.random.default_rng(7).random((1, 3, size, size), dtype=np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {"images": np.ascontiguousarray(x)})[0]
        return out

    pooled = run(image)
    n = pooled.shape[2] // 4
    assert pooled.shape == (1, 12, 4 * n)
    for block, (flip_x, flip_y) in enumerate(((True, False), (False, True), (True, True)), 1):
        axes = tuple(a for a, f in ((3, flip_x), (2, flip_y)) if f)
        alone = run(np.flip(image, axes))[:, :, :n].copy()
        if flip_x:
            alone[:, 0] = size - alone[:, 0]
        if flip_y:
            alone[:, 1] = size - alone[:, 1]
        np.testing.assert_allclose(pooled[:, :, block * n : (block + 1) * n], alone, atol=1e-3)
