"""The augmentation done on the training device (models/device_augment.py): labels follow the
pixels through scale, placement, flips and inversion; the letterbox stays grey; the colour
changes do what the OpenCV path does; a live run's pool growth replays exactly. Needs torch (the
`train` extra): `make test-train`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.device_augment import (  # noqa: E402
    Draws,
    Feed,
    Parcel,
    Pool,
    PoolLoader,
    _gaussian_blur,
    _hsv_to_rgb,
    _rgb_to_hsv,
    batch,
    draw,
    geometry,
    photometric,
    read_parcel,
    seed_limit_at,
)
from models.train import NARROW, pool_stems  # noqa: E402
from screening.inference.preprocess import LETTERBOX_VALUE  # noqa: E402

SIZE = 96
CPU = torch.device("cpu")


def _parcel(seed: int, h: int = 60, w: int = 80, box: tuple[int, int, int, int] = (10, 20, 30, 50)
            ) -> Parcel:
    """A dark parcel with one white object at `box` (x1, y1, x2, y2), labelled class 2."""
    img = np.full((h, w, 3), 40, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 250
    return Parcel(seed, img, np.array([[2, x1, y1, x2, y2]], np.float32))


def _plain(d: Draws, **change: object) -> Draws:
    """`d` with no colour change (and whatever `change` sets)."""
    b = len(d.index)
    base = replace(d, contrast=torch.tensor([[1.0, 0.0]] * b), hue=torch.zeros(b, dtype=torch.long),
                   perm=torch.arange(3).repeat(b, 1), grey=torch.zeros(b, dtype=torch.bool),
                   gamma=torch.ones(b), blur=torch.zeros(b), noise=torch.zeros(b))
    return replace(base, **change)  # type: ignore[arg-type]


@pytest.fixture
def pool() -> Pool:
    p = Pool(4, SIZE, CPU)
    p.extend([_parcel(1), _parcel(2, 80, 40, (5, 5, 35, 20))])
    return p


@pytest.mark.parametrize("dense", [False, True], ids=["png-kept", "dense"])
def test_the_pool_gives_back_each_parcel_in_its_canvas(dense: bool) -> None:
    p = Pool(3, SIZE, CPU)
    p.dense = dense
    a, b = _parcel(1), _parcel(2, 80, 40)
    p.extend([a, b])
    got = p.gather(torch.tensor([1, 0, 1]))
    assert got.shape == (3, 3, SIZE, SIZE)
    assert torch.equal(got[1, :, :60, :80], torch.from_numpy(a.image).permute(2, 0, 1))
    assert torch.equal(got[0, :, :80, :40], torch.from_numpy(b.image).permute(2, 0, 1))
    assert int(got[1, :, 60:].min()) == int(got[1, :, 60:].max()) == LETTERBOX_VALUE
    assert p.hw[1].tolist() == [80.0, 40.0]
    assert p.count_upto(1) == 1
    assert p.count_upto(5) == 2
    with pytest.raises(RuntimeError, match="pool full"):
        p.extend([_parcel(3), _parcel(4)])


def test_each_label_covers_its_object_after_scale_placement_flips_and_inversion(
        pool: Pool) -> None:
    gen = torch.Generator().manual_seed(5)
    seen = {"flip_x": 0, "flip_y": 0, "invert": 0}
    for _ in range(8):
        d = _plain(draw(gen, pool.n, 16, 0.5, NARROW))
        x, boxes = geometry(pool, d)
        for i in range(16):
            for k in seen:
                seen[k] += int(getattr(d, k)[i])
            c, x1, y1, x2, y2 = boxes[i, 0].tolist()
            assert c == 2
            bright = 250.0 if not d.invert[i] else 5.0
            inner = x[i, :, round(y1) + 2 : round(y2) - 2, round(x1) + 2 : round(x2) - 2]
            assert inner.numel()
            assert (inner - bright).abs().max() < 1.0
            # Just outside the box is the parcel's background (dark, or light when inverted).
            ring = x[i, :, round(y2) + 2, round(x1) + 2 : round(x2) - 2]
            parcel_bg = 40.0 if not d.invert[i] else 215.0
            assert (ring - parcel_bg).abs().max() < 1.0
            # The letterbox beyond the placed parcel stays grey, inverted or not.
            _h, w = pool.hw[int(d.index[i])].tolist()
            nw = w * float(d.scale[i])
            left = (SIZE - nw) * float(d.place[i, 0])
            if left >= 2:
                assert torch.all(x[i, :, :, : int(left) - 1] == LETTERBOX_VALUE)
    assert all(v > 10 for v in seen.values()), seen


def test_a_flip_mirrors_the_label(pool: Pool) -> None:
    d = _plain(draw(torch.Generator().manual_seed(1), 1, 2, 0.0, NARROW),
               index=torch.tensor([0, 0]), scale=torch.tensor([1.0, 1.0]),
               place=torch.zeros(2, 2), flip_x=torch.tensor([False, True]),
               flip_y=torch.tensor([False, True]), invert=torch.tensor([False, False]))
    x, boxes = geometry(pool, d)
    assert boxes[0, 0].tolist() == [2, 10, 20, 30, 50]
    assert boxes[1, 0].tolist() == [2, 80 - 30, 60 - 50, 80 - 10, 60 - 20]
    assert torch.allclose(x[1, :, :60, :80], x[0, :, :60, :80].flip(1).flip(2))


def test_colour_changes_do_what_the_opencv_path_does() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 3, 24, 32)).astype(np.float32)
    x = torch.from_numpy(img)
    # HSV there and back is the identity.
    h, s, v = _rgb_to_hsv(x / 255)
    assert torch.allclose(_hsv_to_rgb(h, s, v) * 255, x, atol=1e-3)
    # A hue shift of k OpenCV units rotates the hue as OpenCV's HSV does (±1 level).
    d0 = _plain(draw(torch.Generator().manual_seed(0), 1, 2, 0.0, NARROW))
    shifted = photometric(x.clone(), replace(d0, hue=torch.tensor([20, 0])))
    rgb = img[0].transpose(1, 2, 0).astype(np.uint8)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 20) % 180
    want = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32).transpose(2, 0, 1)
    assert np.median(np.abs(shifted[0].numpy() - want)) <= 2.0
    assert torch.equal(shifted[1], x[1])  # not drawn: unchanged
    # Channel order, grey, gamma.
    out = photometric(x.clone(), replace(d0, perm=torch.tensor([[2, 1, 0], [0, 1, 2]])))
    assert torch.equal(out[0], x[0].flip(0))
    out = photometric(x.clone(), replace(d0, grey=torch.tensor([True, False])))
    grey = 0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]
    assert all(torch.allclose(out[0, c], grey) for c in range(3))
    out = photometric(x.clone(), replace(d0, gamma=torch.tensor([2.0, 1.0])))
    assert torch.allclose(out[0], 255 * (x[0] / 255) ** 2, atol=1e-3)
    # Brightness/contrast saturates as cv2.convertScaleAbs does (|a x + b|, clipped).
    out = photometric(x.clone(), replace(d0, contrast=torch.tensor([[1.1, -12.0], [1.0, 0.0]])))
    want = cv2.convertScaleAbs(img[0].transpose(1, 2, 0), alpha=1.1, beta=-12.0)
    assert np.abs(out[0].numpy().transpose(1, 2, 0) - want).max() <= 0.5 + 1e-3
    # Noise of the drawn sigma, only where drawn.
    noisy = photometric(torch.full((2, 3, 64, 64), 128.0),
                        replace(d0, noise=torch.tensor([8.0, 0.0])),
                        torch.Generator().manual_seed(0))
    assert 7.0 < float(noisy[0].std()) < 9.0
    assert float(noisy[1].std()) == 0.0


def test_blur_matches_opencv_and_sigma_zero_leaves_the_image() -> None:
    """The kernel spans ±3 sigma, as OpenCV sizes it when given (0, 0); NARROW's OpenCV path
    fixes a 3 × 3 kernel instead, a weaker blur (module docstring)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 40)).astype(np.float32)
    x = torch.from_numpy(img)[None, None].repeat(2, 3, 1, 1)
    out = _gaussian_blur(x, torch.tensor([1.0, 0.0]))
    want = cv2.GaussianBlur(img, (7, 7), 1.0, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(out[0, 0].numpy() - want).max() < 1e-3
    assert torch.equal(out[1], x[1])


def test_draws_depend_on_seed_and_step_only() -> None:
    a = draw(torch.Generator().manual_seed(11), 100, 8, 0.2, NARROW)
    b = draw(torch.Generator().manual_seed(11), 100, 8, 0.2, NARROW)
    c = draw(torch.Generator().manual_seed(12), 100, 8, 0.2, NARROW)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    assert not torch.equal(a.index, c.index)
    assert int(a.index.max()) < 100


def _write_synth(root: Path, seed: int, *, sidecar: bool = True) -> None:
    """One parcel as our generator writes it: image, YOLO label, then the sidecar."""
    p = _parcel(seed)
    stem = f"{seed:08d}"
    for sub in ("images", "labels", "meta"):
        (root / sub / "train").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / "train" / f"{stem}.png"), p.image)
    x1, y1, x2, y2 = p.boxes[0, 1:]
    (root / "labels" / "train" / f"{stem}.txt").write_text(
        f"2 {(x1 + x2) / 160} {(y1 + y2) / 120} {(x2 - x1) / 80} {(y2 - y1) / 60}")
    if sidecar:
        (root / "meta" / "train" / f"{stem}.json").write_text(json.dumps({"seed": seed}))


def test_a_parcel_counts_once_its_sidecar_is_written(tmp_path: Path) -> None:
    _write_synth(tmp_path, 1, sidecar=False)
    assert read_parcel(tmp_path, "train", "00000001", SIZE, 1) is None
    (tmp_path / "meta" / "train" / "00000001.json").write_text("{}")
    p = read_parcel(tmp_path, "train", "00000001", SIZE, 1)
    assert p is not None
    assert p.image.shape == (72, 96, 3)
    assert np.allclose(p.boxes, [[2, 12, 24, 36, 60]], atol=1e-4)


def test_the_loader_hands_over_parcels_in_seed_order_as_they_appear(tmp_path: Path) -> None:
    for s in (1, 3):
        _write_synth(tmp_path, s)
    loader = PoolLoader(tmp_path, "train", [f"{s:08d}" for s in (1, 2, 3)], SIZE, poll_s=0.01)
    try:
        first = []
        for _ in range(100):
            first += loader.take()
            if first:
                break
            loader.done.wait(0.01)
        assert [p.seed for p in first] == [1]  # 3 waits for 2
        _write_synth(tmp_path, 2)
        loader.done.wait(5)
        assert [p.seed for p in loader.take()] == [2, 3]
    finally:
        loader.close()


def _wait_read(feed: Feed, n: int) -> None:
    """Until the feed's loader has read `n` parcels not yet in its pool."""
    for _ in range(500):
        if feed.loader.ready.qsize() >= n:
            return
        feed.loader.done.wait(0.01)
    raise AssertionError(f"the loader did not read {n} parcels")


def test_a_live_runs_pool_growth_replays_to_the_same_batches(tmp_path: Path) -> None:
    for s in range(1, 5):
        _write_synth(tmp_path, s)
    stems = pool_stems(tmp_path, 12, None)
    live = Feed(tmp_path, "train", stems, SIZE, CPU, seed=3, batch_size=4, invert_p=0.2,
                jitter=NARROW, min_pool=4, refresh_every=2)
    live.fill()
    got = []
    for step in range(6):
        if step in (1, 3):  # the generator writes more while the run trains
            for s in range(4 * step // 2 + 3, 4 * step // 2 + 7):  # seeds 5-8, then 9-12
                _write_synth(tmp_path, s)
            _wait_read(live, 4)
        got.append(live.next(step))
    live.close()
    assert live.schedule == [(0, 4), (2, 8), (4, 12)]
    replay = Feed(tmp_path, "train", stems, SIZE, CPU, seed=3, batch_size=4, invert_p=0.2,
                  jitter=NARROW, replay=live.schedule)
    replay.fill()
    assert replay.pool.n == 12
    again = [replay.next(step) for step in range(6)]
    replay.close()
    for (xa, ba), (xb, bb) in zip(got, again, strict=True):
        assert torch.equal(xa, xb)
        assert torch.equal(ba, bb)
    assert seed_limit_at([[0, 4], [2, 9], [4, 12]], 3) == 9
    assert seed_limit_at([[0, 4], [2, 9], [4, 12]], 0) == 4


def test_a_batch_depends_on_seed_and_step(pool: Pool) -> None:
    """Every draw but the pixel noise comes from (seed, step); the noise from the generator
    given for it (a run seeds one on its device)."""
    def noise() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    a = batch(pool, 2, 7, 0, 4, 0.2, NARROW, noise())
    b = batch(pool, 2, 7, 0, 4, 0.2, NARROW, noise())
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(batch(pool, 2, 8, 0, 4, 0.2, NARROW, noise())[0], a[0])
    assert not torch.equal(batch(pool, 2, 7, 1, 4, 0.2, NARROW, noise())[0], a[0])
    assert float(a[0].min()) >= 0.0
    assert float(a[0].max()) <= 1.0


def test_a_reading_error_reaches_the_trainer(tmp_path: Path) -> None:
    for s in (1, 2):
        _write_synth(tmp_path, s)
    (tmp_path / "labels" / "train" / "00000002.txt").write_text(
        "\n".join("1 0.5 0.5 0.1 0.1" for _ in range(17)))  # more than MAX_LABELS
    feed = Feed(tmp_path, "train", pool_stems(tmp_path, 2, None), SIZE, CPU, seed=0,
                batch_size=2, invert_p=0.0, jitter=NARROW, min_pool=2)
    with pytest.raises(RuntimeError, match="17 labels"):
        feed.fill(poll_s=0.01)
    feed.close()


def test_a_generator_that_stops_writing_stops_the_wait(tmp_path: Path) -> None:
    for s in (1, 2, 4):  # seed 3 never comes
        _write_synth(tmp_path, s)
    feed = Feed(tmp_path, "train", pool_stems(tmp_path, 4, None), SIZE, CPU, seed=0,
                batch_size=2, invert_p=0.0, jitter=NARROW, min_pool=3)
    with pytest.raises(RuntimeError, match="waiting for 00000003"):
        feed.fill(poll_s=0.01, stall_s=0.3)
    assert feed.pool.n == 2
    feed.close()
    # A live run over fewer parcels than min_pool starts on all of them.
    short = Feed(tmp_path, "train", ["00000001", "00000002"], SIZE, CPU, seed=0,
                 batch_size=2, invert_p=0.0, jitter=NARROW, min_pool=1000)
    short.fill(poll_s=0.01, stall_s=5)
    assert short.pool.n == 2
    short.close()


def test_a_replay_asks_for_the_parcels_it_needs(tmp_path: Path) -> None:
    for s in range(1, 4):
        _write_synth(tmp_path, s)
    feed = Feed(tmp_path, "train", pool_stems(tmp_path, 3, None), SIZE, CPU, seed=0,
                batch_size=2, invert_p=0.0, jitter=NARROW, replay=[[0, 2], [5, 9]])
    with pytest.raises(RuntimeError, match="up to seed 9"):
        feed.fill(poll_s=0.01)
    feed.close()


def test_pool_stems_keep_the_styles_asked_for(tmp_path: Path) -> None:
    from models.synth.dataset import style_of

    (tmp_path / "meta").mkdir()
    ab = pool_stems(tmp_path, 60, {"A", "B"})
    assert ab
    assert all(style_of(int(s), ("A", "B", "C")) in "AB" for s in ab)
    assert len(ab) < 60
    assert pool_stems(tmp_path, 60, None) == [f"{s:08d}" for s in range(1, 61)]


def test_a_replay_of_a_run_that_stopped_short_takes_its_steps_on_its_schedule(
    tmp_path: Path,
) -> None:
    """Found by review: `lr_steps` (the planned length of a run stopped over budget) also set
    the number of steps, so its replay trained the whole plan instead of the steps recorded."""
    from models.train import main

    data = tmp_path / "data"
    for s in range(1, 7):
        _write_synth(data, s)
    record = tmp_path / "stopped.train.json"
    record.write_text(json.dumps({"pool": [[0, 6]], "lr_steps": 40}))
    out = tmp_path / "replay.onnx"
    main(["--data", str(data), "--out", str(out), "--steps", "3", "--batch", "2",
          "--imgsz", "64", "--device", "cpu", "--threads", "1", "--workers", "0",
          "--pool-record", str(record), "--min-pool", "6", "--no-evaluate", "--no-flips"])
    done = json.loads(out.with_suffix(".train.json").read_text())
    assert done["steps"] == 3
    assert done["lr_steps"] == 40
