"""Inference throughput of the shipped model: bare `session.run` (the limit) against the gateway
path (decode -> preprocess -> infer -> decode -> verdict) on the same model, threads and images.

``python -m bench.inference [--images 40] [--threads 1]`` prints images/s, p50/p99 latency and
the ratio gateway / bare (target >= 0.85), for batch 1 and for micro-batching under concurrent
load, plus bare model latency at 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import cv2
import numpy as np

from models.synth.dataset import TEST_SEEDS_START, render_sample
from screening.inference import DEFAULT_MODEL_PATH, Detector, DetectorConfig, judge
from screening.inference.detector import create_session
from screening.inference.preprocess import decode_image, prepare, to_tensor

TARGET_RATIO = 0.85


def images(n: int) -> list[bytes]:
    out = []
    for seed in range(TEST_SEEDS_START, TEST_SEEDS_START + n):
        s = render_sample(seed, ("A", "B", "C"), 0.5)
        out.append(cv2.imencode(".png", s.image[..., ::-1])[1].tobytes())
    return out


def bare(config: DetectorConfig, pngs: list[bytes], batch: int, rounds: int) -> float:
    """images/s of session.run alone on already prepared tensors."""
    det = Detector(config)
    det.load_sync()
    info = det.info
    session = create_session(config)
    name = session.get_inputs()[0].name
    prepared = [prepare(decode_image(p), info.input_size, crop_to_content=info.crop_to_content)[0]
                for p in pngs]
    tensors = [to_tensor(prepared[k : k + batch]) for k in range(0, len(prepared), batch)]
    session.run(None, {name: tensors[0]})
    t0 = time.perf_counter()
    for _ in range(rounds):
        for x in tensors:
            session.run(None, {name: x})
    return rounds * len(prepared) / (time.perf_counter() - t0)


async def gateway(config: DetectorConfig, pngs: list[bytes], concurrency: int, rounds: int
                  ) -> tuple[float, list[float]]:
    """images/s and per-image latencies (ms) through Detector.detect + judge."""
    det = Detector(config)
    await det.start()
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(data: bytes) -> None:
        async with sem:
            t = time.perf_counter()
            d = await det.detect(data)
            judge(d.boxes, det.info)
            latencies.append((time.perf_counter() - t) * 1000)

    try:
        await det.detect(pngs[0])
        t0 = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one(p) for p in pngs))
        rate = rounds * len(pngs) / (time.perf_counter() - t0)
    finally:
        await det.close()
    return rate, latencies


def report(label: str, rate: float, limit: float, lat: list[float],
           results: dict[str, object]) -> None:
    ratio = rate / limit
    results[label] = {"images_per_s": round(rate, 1),
                      "p50_ms": round(float(np.percentile(lat, 50)), 1),
                      "p99_ms": round(float(np.percentile(lat, 99)), 1), "ratio": round(ratio, 2)}
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"inference: {label}: {rate:.1f} images/s, p50 {np.percentile(lat, 50):.1f} ms, "
          f"p99 {np.percentile(lat, 99):.1f} ms; ratio vs bare session.run {ratio:.2f} "
          f"(target >= {TARGET_RATIO}) {verdict}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__)
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    results: dict[str, object] = {"threads": args.threads, "images": args.images}
    cv2.setNumThreads(1)
    pngs = images(args.images)
    one = DetectorConfig(model_path=args.model, intra_op_threads=args.threads,
                         max_batch=1)
    bare1 = bare(one, pngs, 1, args.rounds)
    bare4 = bare(one, pngs, 4, args.rounds)
    print(f"inference: bare session.run, {args.threads} thread(s): batch 1 {bare1:.1f} images/s,"
          f" batch 4 {bare4:.1f} images/s")
    results["bare_batch1_images_per_s"] = round(bare1, 1)
    results["bare_batch4_images_per_s"] = round(bare4, 1)
    rate, lat = asyncio.run(gateway(one, pngs, 1, args.rounds))
    report("gateway path, batch 1, one client", rate, bare1, lat, results)
    batched = DetectorConfig(model_path=args.model, intra_op_threads=args.threads,
                             max_batch=4, max_wait_ms=5.0)
    rate, lat = asyncio.run(gateway(batched, pngs, 8, args.rounds))
    report("gateway path, micro-batched (max 4, 5 ms), 8 clients", rate, bare1, lat, results)
    for threads in (1, 2):
        cfg = DetectorConfig(model_path=args.model, intra_op_threads=threads)
        r = bare(cfg, pngs[:10], 1, args.rounds)
        print(f"inference: model latency, {threads} thread(s), batch 1: {1000 / r:.1f} ms")
        results[f"model_latency_ms_threads{threads}"] = round(1000 / r, 1)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
