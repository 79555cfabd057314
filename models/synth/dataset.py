"""Dataset rendering: a parcel seed -> pseudo-colour image + YOLO labels, and the YOLO writer.

Images are what a station display or the bridge's colouriser shows: the scan calibrated against
its leading air lines, cropped across the belt to the parcel plus a random margin, coloured by one
vendor style (randomised per image), sometimes JPEG-compressed as a screen capture would be.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from models.synth import GENERATOR_VERSION
from models.synth.colour import STYLES, colourise
from models.synth.physics import calibrate
from models.synth.scene import Label, render
from models.taxonomy import CLASSES

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Split:
    """A named range of seeds rendered with some vendor styles."""

    name: str
    seeds: range
    styles: tuple[str, ...]
    threat_rate: float


# Seed ranges never overlap, so held-out evaluation seeds are never seen in training.
TRAIN_SEEDS_START = 1
VAL_SEEDS_START = 1_000_000
TEST_SEEDS_START = 2_000_000


TEST_N = 600  # held-out test parcels, by default


def held_out_split(n: int) -> Split:
    """The held-out test parcels: half of them clean, for false-alarm rates on clean parcels."""
    return Split("test", range(TEST_SEEDS_START, TEST_SEEDS_START + n), ("A", "B", "C"), 0.5)


@dataclass(frozen=True)
class Sample:
    seed: int
    image: U8  # RGB
    labels: tuple[Label, ...]
    style: str


def _style_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng((seed, 7))  # independent of the scene's stream


def style_of(seed: int, styles: Sequence[str]) -> str:
    """The vendor style `render_sample` picks for a seed, without rendering."""
    return styles[int(_style_rng(seed).integers(len(styles)))]


def render_sample(seed: int, styles: Sequence[str], threat_rate: float,
                  generator: str = GENERATOR_VERSION) -> Sample:
    """One training/evaluation image from a seed (deterministic for a generator version)."""
    parcel = render(seed, pixels_per_line=None, pitch_mm=None, threat_rate=threat_rate,
                    generator=generator)
    rng = _style_rng(seed)
    style_name = styles[int(rng.integers(len(styles)))]
    style = STYLES[style_name].randomised(rng)
    p_low = -np.log(calibrate(parcel.low, parcel.dark_low))
    p_high = -np.log(calibrate(parcel.high, parcel.dark_high))
    rgb = colourise(p_low, p_high, parcel.scanner, style)
    if rng.random() < 0.3:  # screen capture / JPEG export
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                      int(rng.integers(60, 95))])
        if ok:
            rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return Sample(seed, rgb, parcel.labels, style_name)


def yolo_lines(labels: Iterable[Label], width: int, height: int) -> list[str]:
    out = []
    for lab in labels:
        x0, y0, x1, y1 = lab.box
        out.append(
            f"{lab.class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
            f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
        )
    return out


def _write_one(args: tuple[Path, str, int, tuple[str, ...], float, str]) -> dict[str, object]:
    out, split, seed, styles, threat_rate, generator = args
    name = f"{seed:08d}"
    sidecar = out / "meta" / split / f"{name}.json"
    if sidecar.exists() and (out / "images" / split / f"{name}.png").exists():
        row = dict(json.loads(sidecar.read_text()))
        # Sidecars without the field predate it, all from generator 1.0.0.
        if row.get("generator", "1.0.0") == generator:
            return row  # resumed: already rendered by this generator
    # Another version's parcel is re-rendered: its sidecar goes first, so that no reader takes
    # the new image with the old labels (or a half-written image) for a whole parcel.
    sidecar.unlink(missing_ok=True)
    s = render_sample(seed, styles, threat_rate, generator)
    h, w = s.image.shape[:2]
    cv2.imwrite(str(out / "images" / split / f"{name}.png"), s.image[..., ::-1])
    (out / "labels" / split / f"{name}.txt").write_text("\n".join(yolo_lines(s.labels, w, h)))
    row = {"seed": seed, "file": f"images/{split}/{name}.png", "style": s.style,
           "width": w, "height": h, "labels": [asdict(lab) for lab in s.labels],
           "generator": generator}
    sidecar.write_text(json.dumps(row))  # written last: its presence means the image is whole
    return row


def write_yolo(out: Path, splits: Sequence[Split], workers: int = 1,
               progress: bool = True, generator: str = GENERATOR_VERSION) -> None:
    """Write images/<split>, labels/<split>, meta/<split>.jsonl and data.yaml under `out`, each
    parcel rendered by `generator` (one of models.synth.GENERATORS)."""
    from tqdm import tqdm

    for split in splits:
        for sub in ("images", "labels", "meta"):
            (out / sub / split.name).mkdir(parents=True, exist_ok=True)
        jobs = [(out, split.name, s, split.styles, split.threat_rate, generator)
                for s in split.seeds]
        with _single_threaded_children():
            pool_cm = multiprocessing.get_context("spawn").Pool(
                workers, initializer=_one_thread) if workers > 1 else _Serial()
        with pool_cm as pool:
            rows = list(tqdm(pool.imap(_write_one, jobs, chunksize=8), total=len(jobs),
                             desc=split.name, disable=not progress))
        with (out / "meta" / f"{split.name}.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    lines = [f"# synthetic dual-energy X-ray parcels, generator {generator}",
             f"path: {out.resolve()}"]
    present = sorted(d.name for d in (out / "images").iterdir() if d.is_dir())
    lines += [f"{name}: images/{name}" for name in present]  # every split written so far
    (out / "data.yaml").write_text("\n".join(lines) + f"\nnames:\n{names}\n")


# Read by the BLAS and OpenMP runtimes when they load, so they must be in a worker's environment
# before it imports numpy: hence spawned workers, not forked copies of a parent that has.
_ONE_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                    "MKL_NUM_THREADS")}


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _ONE_THREAD_ENV}
    os.environ.update(_ONE_THREAD_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_thread() -> None:
    """A worker per core: a thread pool per worker (OpenCV's, or numpy's BLAS) oversubscribes
    the machine. On 16 cores, forked workers with numpy's default threads made 17 parcels/s;
    single-threaded ones made 117 (3,087 vs 27,047 parcels in the same 3-4 minutes)."""
    cv2.setNumThreads(1)


class _Serial:
    """Pool stand-in for workers=1 (keeps tracebacks simple)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn, it, chunksize: int = 1):  # type: ignore[no-untyped-def]
        return map(fn, it)
