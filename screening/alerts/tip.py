"""Threat image projection (TIP): synthetic threat images from ``models.synth`` for the reviewers'
queue, with the ground truth kept on the gateway side.

Rendering one image takes ~0.1-0.3 s of CPU, so a small pool is rendered off the event loop, in
the background, from the first time a reviewer asks for work (a gateway nobody reviews on never
renders); until it is ready, reviewers simply get real items.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2

from screening.background import cancel_and_wait

log = logging.getLogger(__name__)

# models.synth class -> catalogue category (the same mapping the model manifest carries).
_FALLBACK_CATEGORIES = {
    "firearm": "firearms_and_parts",
    "ammunition": "ammunition",
    "knife": "controlled_knives",
    "explosive_device": "explosives",
    "gas_can": "compressed_gases",
    "liquid_container": "flammable_liquids",
    "organic_mass": "drugs_and_paraphernalia",
    "lithium_battery": "lithium_batteries",
}


@dataclass(frozen=True, slots=True)
class TipImage:
    png: bytes
    truth: list[dict[str, Any]]  # [{"class_name", "category", "box"}]


def render_synthetic(seed: int) -> TipImage | None:
    """One pseudo-colour parcel with at least one threat; None if it drew none."""
    # importlib: the generator is an optional, heavier package; the gateway runs without it.
    dataset: Any = importlib.import_module("models.synth.dataset")
    sample = dataset.render_sample(seed, tuple(dataset.STYLES), 1.0)
    if not sample.labels:
        return None
    ok, buf = cv2.imencode(".png", sample.image[..., ::-1])
    if not ok:  # pragma: no cover - a valid array always encodes
        return None
    truth = [
        {
            "class_name": label.cls,
            "category": _FALLBACK_CATEGORIES.get(label.cls, label.cls),
            "box": [float(v) for v in label.box],
        }
        for label in sample.labels
    ]
    return TipImage(bytes(buf.tobytes()), truth)


Renderer = Callable[[int], TipImage | None]


class TipLibrary:
    def __init__(
        self, pool_size: int = 8, renderer: Renderer = render_synthetic, seed: int | None = None
    ) -> None:
        self._pool: list[TipImage] = []
        self._size = pool_size
        self._renderer = renderer
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self.available = True

    def ensure_started(self) -> None:
        """Fill the pool up to its size in the background (idempotent)."""
        running = self._task is not None and not self._task.done()
        if not running and self.available and len(self._pool) < self._size:
            self._task = asyncio.create_task(self._fill(), name="tip-render")

    @property
    def ready(self) -> bool:
        """Whether an image is waiting to be projected."""
        return bool(self._pool)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _fill(self) -> None:
        while len(self._pool) < self._size:
            seed = self._rng.randrange(3_000_000, 4_000_000)  # outside train/val/test seeds
            try:
                image = await asyncio.to_thread(self._renderer, seed)
            except ImportError:
                log.warning("models.synth is not installed; threat image projection is off")
                self.available = False
                return
            if image is not None:
                self._pool.append(image)

    def draw(self) -> TipImage | None:
        """An image from the pool, shown once: a fresh one is rendered in its place (from a
        pool reused instead, reviewers had seen all 8 of them within the hour, and spotting a
        projection then says nothing about spotting a threat). None while the pool is empty."""
        if not self._pool:
            self.ensure_started()
            return None
        image = self._pool.pop(self._rng.randrange(len(self._pool)))
        self.ensure_started()
        return image
