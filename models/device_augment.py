"""Training parcels held on the training device, and the training augmentation done there in
batches (torch), for a GPU whose loader processes could not keep it busy.

`train.augment` (OpenCV, one sample at a time in loader processes) made 2,250 samples/s on 15
cores of a lent H200, a fraction of what the GPU trains at; these functions do the same
changes to a whole batch on the GPU, so the machine's cores are free to generate parcels while
it trains. Each parcel is stored once, fitted into a size × size canvas (letterbox grey); a
sample is then a per-sample affine resampling (scale jitter, placement, flips) plus the
photometric changes, with every random draw made on the CPU from a generator seeded by
(seed, step), so that a run replays the same draws on any device (only the pixel noise is
drawn on the device).

The pool can grow while training: `PoolLoader` reads parcels in seed order from a YOLO-format
folder that the generator is still writing, and `Pool.extend` adds a whole prefix of seeds, so
the seeds a step could draw from are named by one number, recorded per step in the run's
record (`pool`) and replayed from it.

Where the OpenCV path differs: it can JPEG re-compress (`Jitter.jpeg_p`; not done here); it
resamples the scale jitter with INTER_AREA (bilinear here, from a canvas already fitted with
INTER_AREA, so at most a 1.43× reduction); and it blurs with `Jitter.blur_kernel` (3 × 3 in
NARROW), where this path sizes the kernel from sigma (±3 sigma), a stronger blur for the same
sigma (effective sigma 1.2 against 0.77 at sigma 1.2). The recorded runs were trained with this
path as it is, so it stays so that they replay.
"""

from __future__ import annotations

import bisect
import math
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from screening.inference.preprocess import LETTERBOX_VALUE

MAX_LABELS = 16  # per parcel: ours have at most 3 threats
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Parcel:
    """One training image fitted into the canvas: RGB uint8 (h, w, 3) with h, w <= size, and its
    labels (n, 5: class, x1, y1, x2, y2 in the fitted image's pixels)."""

    seed: int
    image: np.ndarray
    boxes: np.ndarray


def read_parcel(data: Path, split: str, stem: str, size: int, seed: int) -> Parcel | None:
    """Read one image and its YOLO label file and fit it into size × size (INTER_AREA, as the
    OpenCV path resizes). None while the generator has not finished it: our generator writes a
    parcel's sidecar (meta/<split>/<stem>.json) last; a folder without meta/ counts as
    complete."""
    meta = data / "meta" / split
    if meta.is_dir() and not (meta / f"{stem}.json").exists():
        return None
    path = next((p for p in (data / "images" / split / f"{stem}{ext}"
                             for ext in IMAGE_SUFFIXES) if p.exists()), None)
    if path is None:
        return None
    img, rows = read_yolo(data, split, path)
    if len(rows) > MAX_LABELS:
        raise RuntimeError(f"{path.stem}: {len(rows)} labels, at most {MAX_LABELS}")
    h, w = img.shape[:2]
    gain = min(size / h, size / w)
    fw, fh = max(round(w * gain), 1), max(round(h * gain), 1)
    fitted = cv2.resize(img, (fw, fh), interpolation=cv2.INTER_AREA)[..., ::-1]
    return Parcel(seed, np.ascontiguousarray(fitted), in_pixels(rows, fw, fh))


def read_yolo(data: Path, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image of a YOLO-format split as OpenCV reads it (BGR) and its labels (n, 5: class,
    cx, cy, w, h as fractions; float64), none where it has no label file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # releases the GIL: threads help
    if img is None:
        raise RuntimeError(f"unreadable image {path}")
    label = data / "labels" / split / f"{path.stem}.txt"
    rows = [list(map(float, ln.split())) for ln in label.read_text().splitlines()
            if ln.strip()] if label.exists() else []
    return img, np.array(rows, np.float64).reshape(-1, 5)


def in_pixels(rows: np.ndarray, w: float, h: float) -> np.ndarray:
    """YOLO rows as (n, 5) float32: class, x1, y1, x2, y2 in pixels of a w × h image."""
    c, cx, cy, bw, bh = rows.T
    return np.stack([c, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                     (cy + bh / 2) * h], 1).astype(np.float32).reshape(-1, 5)


class Pool:
    """Parcels in the order added: images (fitted parcel in the top-left corner of a size × size
    canvas, the rest letterbox grey), their fitted sizes and padded labels. On a GPU the
    canvases are held there (uint8 blocks of CHUNK: 0.3 MB a parcel at 320 px); on the CPU each
    is kept PNG-encoded and decoded when drawn, so that a long run's pool fits in memory."""

    CHUNK = 4096  # parcels per block of device memory, allocated as the pool grows

    def __init__(self, capacity: int, size: int, device: torch.device) -> None:
        self.size, self.device, self.n, self.capacity = size, device, 0, capacity
        self.dense = device.type != "cpu"
        self.chunks: list[torch.Tensor] = []
        self.encoded: list[bytes] = []
        self.hw = torch.zeros((capacity, 2), dtype=torch.float32, device=device)
        self.boxes = torch.full((capacity, MAX_LABELS, 5), -1.0, device=device)
        self.seeds: list[int] = []

    def extend(self, parcels: Sequence[Parcel]) -> None:
        if self.n + len(parcels) > self.capacity:
            raise RuntimeError(f"pool full: {self.capacity} parcels")
        for p in parcels:
            h, w = p.image.shape[:2]
            k = self.n
            if self.dense:
                if k // self.CHUNK == len(self.chunks):
                    self.chunks.append(torch.full((self.CHUNK, 3, self.size, self.size),
                                                  LETTERBOX_VALUE, dtype=torch.uint8,
                                                  device=self.device))
                self.chunks[k // self.CHUNK][k % self.CHUNK, :, :h, :w] = torch.from_numpy(
                    p.image).permute(2, 0, 1).to(self.device)
            else:
                self.encoded.append(cv2.imencode(".png", p.image)[1].tobytes())
            self.hw[k] = torch.tensor([h, w], dtype=torch.float32)
            if len(p.boxes):
                self.boxes[k, : len(p.boxes)] = torch.from_numpy(p.boxes).to(self.device)
            self.seeds.append(p.seed)
            self.n += 1

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Canvases of pool rows `idx`: [B, 3, S, S] uint8 on the pool's device."""
        if self.dense:
            idx = idx.to(self.device)
            out = torch.empty((len(idx), 3, self.size, self.size), dtype=torch.uint8,
                              device=self.device)
            block = idx // self.CHUNK
            for c, chunk in enumerate(self.chunks):
                rows = (block == c).nonzero(as_tuple=True)[0]
                out[rows] = chunk[idx[rows] % self.CHUNK]
            return out
        out = torch.full((len(idx), 3, self.size, self.size), LETTERBOX_VALUE, dtype=torch.uint8)
        for i, k in enumerate(idx.tolist()):
            img = cv2.imdecode(np.frombuffer(self.encoded[k], np.uint8), cv2.IMREAD_UNCHANGED)
            out[i, :, : img.shape[0], : img.shape[1]] = torch.from_numpy(img).permute(2, 0, 1)
        return out

    def count_upto(self, seed: int) -> int:
        """How many parcels of the pool have a seed <= `seed` (the pool is in seed order)."""
        return bisect.bisect_right(self.seeds, seed)


class PoolLoader:
    """Reads a split's parcels in seed order on a background thread (OpenCV releases the GIL),
    waiting for the generator where it has not yet written one, and hands them over in order.

    `stems` is the whole list to read, in order; a parcel's seed is its stem where that is a
    number (our generator's), else its place in the list (from 1)."""

    def __init__(self, data: Path, split: str, stems: Sequence[str], size: int,
                 poll_s: float = 0.2) -> None:
        self.data, self.split, self.size, self.poll_s = data, split, size, poll_s
        self.stems = [(s, int(s) if s.isdigit() else i + 1) for i, s in enumerate(stems)]
        self.ready: queue.SimpleQueue[Parcel] = queue.SimpleQueue()
        self.done = threading.Event()
        self.error: Exception | None = None
        self.waiting_for: str | None = None  # the stem the generator has not written yet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pool-loader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for stem, seed in self.stems:
                while (p := read_parcel(self.data, self.split, stem, self.size, seed)) is None:
                    self.waiting_for = stem
                    if self._stop.wait(self.poll_s):
                        return
                self.waiting_for = None
                self.ready.put(p)
                if self._stop.is_set():
                    return
        except Exception as exc:  # noqa: BLE001  handed to the trainer by take(), not lost
            self.error = exc
        finally:
            self.done.set()

    def take(self, limit: int | None = None) -> list[Parcel]:
        """The parcels read so far and not yet taken (at most `limit`), in seed order. Raises
        what stopped the reading thread, once the parcels read before it are taken."""
        out: list[Parcel] = []
        while limit is None or len(out) < limit:
            try:
                out.append(self.ready.get_nowait())
            except queue.Empty:
                if not out and self.error is not None:
                    raise RuntimeError(f"reading the training parcels stopped: "
                                       f"{self.error!r}") from self.error
                break
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def synth_stems(n: int, start: int = 1) -> list[str]:
    """Our generator's file stems for seeds start..start+n-1 (written or still to come)."""
    return [f"{s:08d}" for s in range(start, start + n)]


def image_files(data: Path, split: str) -> list[Path]:
    """The images of a YOLO-format split, sorted."""
    return sorted(p for p in (data / "images" / split).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_stems(data: Path, split: str) -> list[str]:
    """The stems of a YOLO-format split's images, sorted."""
    return [p.stem for p in image_files(data, split)]


@dataclass(frozen=True)
class Jitter:
    """Photometric jitter (here and in `train.augment`): a probability for each change, then
    its range."""

    hue_p: float
    hue: int  # OpenCV hue units (half degrees), either way
    shuffle_p: float
    grey_p: float
    gamma_p: float
    gamma: tuple[float, float]
    blur_p: float
    blur: tuple[float, float]
    blur_kernel: tuple[int, int]  # (0, 0): sized from sigma
    noise_p: float
    noise: tuple[float, float]
    jpeg_p: float = 0.0
    jpeg: tuple[int, int] = (20, 90)


@dataclass(frozen=True)
class Draws:
    """One batch's random choices, made on the CPU (see the module docstring)."""

    index: torch.Tensor  # [B] pool rows
    invert: torch.Tensor  # [B] bool
    flip_x: torch.Tensor
    flip_y: torch.Tensor
    scale: torch.Tensor  # [B] 0.7..1 of the fitted size
    place: torch.Tensor  # [B, 2] 0..1 share of the free room (x, y)
    contrast: torch.Tensor  # [B, 2] alpha, beta (1, 0 where not drawn)
    hue: torch.Tensor  # [B] OpenCV hue units (0 where not drawn)
    perm: torch.Tensor  # [B, 3] channel order
    grey: torch.Tensor  # [B] bool
    gamma: torch.Tensor  # [B] (1 where not drawn)
    blur: torch.Tensor  # [B] sigma (0 where not drawn)
    noise: torch.Tensor  # [B] sigma (0 where not drawn)


def draw(gen: torch.Generator, n_pool: int, batch: int, invert_p: float,
         jitter: Jitter) -> Draws:
    """Every random choice of one batch, from `gen` (CPU), in a fixed order."""
    def u(lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=gen)

    def p(prob: float) -> torch.Tensor:
        return torch.rand(batch, generator=gen) < prob

    index = torch.randint(n_pool, (batch,), generator=gen)
    invert, flip_x, flip_y = p(invert_p), p(0.5), p(0.5)
    scale, place = u(0.7, 1.0), torch.rand((batch, 2), generator=gen)
    bc = p(0.5)
    contrast = torch.stack([torch.where(bc, u(0.85, 1.15), 1.0),
                            torch.where(bc, u(-15.0, 15.0), 0.0)], 1)
    hue = torch.where(p(jitter.hue_p), torch.randint(-jitter.hue, jitter.hue + 1, (batch,),
                                                     generator=gen), 0)
    shuffle = p(jitter.shuffle_p)
    perm = torch.stack([torch.randperm(3, generator=gen) for _ in range(batch)])
    perm = torch.where(shuffle[:, None], perm, torch.arange(3))
    grey = p(jitter.grey_p)
    gamma = torch.where(p(jitter.gamma_p), u(*jitter.gamma), 1.0)
    blur = torch.where(p(jitter.blur_p), u(*jitter.blur), 0.0)
    noise = torch.where(p(jitter.noise_p), u(*jitter.noise), 0.0)
    return Draws(index, invert, flip_x, flip_y, scale, place, contrast, hue, perm, grey, gamma,
                 blur, noise)


def geometry(pool: Pool, d: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterboxed samples [B, 3, S, S] (float, 0..255) and their labels [B, G, 5] (class -1:
    padding): each parcel scaled by `scale`, placed in the free room, flipped, and inverted
    (the parcel only: the letterbox stays grey, as serving pads an inverted frame)."""
    dev, s = pool.device, pool.size
    idx = d.index.to(dev)
    src = pool.gather(d.index).float()
    inv = d.invert.to(dev)[:, None, None, None]
    src = torch.where(inv, 255.0 - src, src)
    hw = pool.hw[idx]  # [B, 2] fitted h, w
    scale = d.scale.to(dev)
    nh, nw = hw[:, 0] * scale, hw[:, 1] * scale
    left = (s - nw) * d.place[:, 0].to(dev)
    top = (s - nh) * d.place[:, 1].to(dev)
    centres = torch.arange(s, device=dev, dtype=torch.float32) + 0.5
    sx = (centres[None, :] - left[:, None]) / scale[:, None]  # [B, S] source x of output x
    sy = (centres[None, :] - top[:, None]) / scale[:, None]
    fx, fy = d.flip_x.to(dev)[:, None], d.flip_y.to(dev)[:, None]
    sx = torch.where(fx, hw[:, 1:2] - sx, sx)
    sy = torch.where(fy, hw[:, 0:1] - sy, sy)
    inside = ((sy >= 0) & (sy <= hw[:, 0:1]))[:, :, None] & \
        ((sx >= 0) & (sx <= hw[:, 1:2]))[:, None, :]  # [B, S, S]
    grid = torch.stack([(2 * sx / s - 1)[:, None, :].expand(-1, s, -1),
                        (2 * sy / s - 1)[:, :, None].expand(-1, -1, s)], -1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = torch.where(inside[:, None], out, float(LETTERBOX_VALUE))
    boxes = pool.boxes[idx].clone()  # [B, G, 5]
    valid = boxes[..., 0] >= 0
    x1, y1, x2, y2 = boxes[..., 1], boxes[..., 2], boxes[..., 3], boxes[..., 4]
    w, h = hw[:, 1:2], hw[:, 0:1]
    x1, x2 = torch.where(fx, w - x2, x1), torch.where(fx, w - x1, x2)
    y1, y2 = torch.where(fy, h - y2, y1), torch.where(fy, h - y1, y2)
    sc = scale[:, None]
    placed = torch.stack([boxes[..., 0], x1 * sc + left[:, None], y1 * sc + top[:, None],
                          x2 * sc + left[:, None], y2 * sc + top[:, None]], -1)
    placed = torch.where(valid[..., None], placed, -1.0)
    g = max(int(valid.sum(1).max()), 1)
    return out, placed[:, :g].contiguous()


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value in 0..1, of RGB in 0..1 ([B, 3, H, W])."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, _ = x.max(1)
    mn, _ = x.min(1)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp(min=1e-8), 0.0)
    dc = delta.clamp(min=1e-8)
    h = torch.where(v == r, (g - b) / dc, torch.where(v == g, 2 + (b - r) / dc, 4 + (r - g) / dc))
    h = torch.where(delta > 0, (h * 60) % 360, 0.0)
    return h, s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k = torch.stack([(5 + h / 60) % 6, (3 + h / 60) % 6, (1 + h / 60) % 6], 1)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian (sigma 0: unchanged), reflected borders."""
    smax = float(sigma.max())
    if smax <= 0:
        return x
    r = max(1, math.ceil(3 * smax))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    sg = sigma.to(x.device, x.dtype).clamp(min=1e-3)[:, None]
    k = torch.exp(-(t[None, :] ** 2) / (2 * sg**2))
    k = torch.where(sigma.to(x.device)[:, None] > 0, k, (t[None, :] == 0).to(x.dtype))
    k = k / k.sum(1, keepdim=True)  # [B, K]
    b, c, h, w = x.shape
    kk = k.repeat_interleave(c, 0)  # [B*C, K]
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, kk[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kk[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def photometric(x: torch.Tensor, d: Draws, gen: torch.Generator | None = None) -> torch.Tensor:
    """Brightness/contrast, then hue rotation, channel order, grey, gamma, blur and noise, as
    `train._photometric` orders them; `x` float 0..255, returned likewise."""
    dev = x.device
    ab = d.contrast.to(dev)
    x = (x * ab[:, 0, None, None, None] + ab[:, 1, None, None, None]).abs().clamp(0, 255)
    hue = d.hue.to(dev)
    if bool((d.hue != 0).any()):
        h, s, v = _rgb_to_hsv(x / 255)
        h = (h + 2.0 * hue[:, None, None].float()) % 360  # OpenCV hue units are half degrees
        rot = _hsv_to_rgb(h, s, v) * 255
        x = torch.where((hue != 0)[:, None, None, None], rot, x)
    x = x.gather(1, d.perm.to(dev)[:, :, None, None].expand_as(x))
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].expand_as(x)
    x = torch.where(d.grey.to(dev)[:, None, None, None], grey, x)
    gamma = d.gamma.to(dev)[:, None, None, None]
    x = torch.where(gamma != 1, 255 * (x / 255).clamp(min=0) ** gamma, x)
    x = _gaussian_blur(x, d.blur)
    sigma = d.noise.to(dev)
    if bool((d.noise > 0).any()):
        noise = torch.randn(x.shape, device=dev, generator=gen)
        x = (x + noise * sigma[:, None, None, None]).clamp(0, 255)
    return x


def batch(pool: Pool, n_pool: int, step: int, seed: int, batch_size: int, invert_p: float,
          jitter: Jitter, noise_gen: torch.Generator | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s samples from the first `n_pool` parcels of the pool: images [B, 3, S, S]
    (0..1, float) and labels [B, G, 5]."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    d = draw(gen, n_pool, batch_size, invert_p, jitter)
    x, boxes = geometry(pool, d)
    return photometric(x, d, noise_gen).div_(255.0), boxes


def seed_limit_at(schedule: Sequence[Sequence[int]], step: int) -> int:
    """The pool's seed limit in force at `step`: the last (from_step, seed) entry at or before
    it."""
    limit = schedule[0][1]
    for from_step, seed in schedule:
        if from_step > step:
            break
        limit = seed
    return int(limit)


class Feed:
    """Training batches from a pool on the training device. Live (no `replay`): the pool grows
    every `refresh_every` steps by the parcels read since, and `schedule` records each growth as
    (step, last seed). Replayed: the pool is read up to the schedule's last seed first, and each
    step draws from the parcels the schedule had at that step."""

    def __init__(self, data: Path, split: str, stems: Sequence[str], size: int,
                 device: torch.device, seed: int, batch_size: int, invert_p: float,
                 jitter: Jitter, replay: Sequence[Sequence[int]] | None = None,
                 min_pool: int = 1, refresh_every: int = 25) -> None:
        self.pool = Pool(len(stems), size, device)
        self.loader = PoolLoader(data, split, stems, size)
        self.replay = [tuple(p) for p in replay] if replay else None
        self.schedule: list[tuple[int, int]] = []
        self.seed, self.batch_size, self.invert_p, self.jitter = seed, batch_size, invert_p, jitter
        # Never more than there are to read (a live run over a short folder starts on all).
        self.min_pool = min(max(min_pool, 1), max(len(self.loader.stems), 1))
        self.refresh_every = refresh_every
        self.noise = torch.Generator(device=device).manual_seed(seed)

    def fill(self, poll_s: float = 0.5, stall_s: float = 600.0) -> None:
        """Wait for the parcels the first step needs (live: `min_pool`; replayed: all). Gives
        up when the data runs out first, or when no parcel arrives for `stall_s` (a generator
        that died or never wrote a seed)."""
        def enough() -> bool:
            if self.replay is None:
                return self.pool.n >= self.min_pool
            return bool(self.pool.seeds) and self.pool.seeds[-1] >= self.replay[-1][1]

        def need() -> str:
            want = f"up to seed {self.replay[-1][1]}" if self.replay else f"{self.min_pool}"
            have = self.pool.seeds[-1] if self.pool.seeds else None
            return f"the pool needs parcels {want}; it holds {self.pool.n} (up to seed {have})"

        last = time.monotonic()
        while not enough():
            done = self.loader.done.is_set()
            new = self.loader.take()
            if new:
                self.pool.extend(new)
                last = time.monotonic()
            if done and not enough():
                self.pool.extend(self.loader.take())  # raises what stopped the reading, if any
                if not enough():
                    raise RuntimeError(f"{need()}, and the data has no more")
            if not enough():
                if time.monotonic() - last > stall_s:
                    raise RuntimeError(f"{need()}; no parcel for {stall_s:.0f} s, waiting for "
                                       f"{self.loader.waiting_for}")
                self.loader.done.wait(poll_s)
        if self.replay is None:
            self.schedule.append((0, self.pool.seeds[-1]))

    def next(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.replay is None:
            if step % self.refresh_every == 0 and step:
                new = self.loader.take()
                if new:
                    self.pool.extend(new)
                    self.schedule.append((step, self.pool.seeds[-1]))
            n = self.pool.n
        else:
            n = self.pool.count_upto(seed_limit_at(self.replay, step))
        return batch(self.pool, n, step, self.seed, self.batch_size, self.invert_p, self.jitter,
                     self.noise)

    def close(self) -> None:
        self.loader.close()
