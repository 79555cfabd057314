"""`python -m models.synth --out DIR`: write a YOLO-format synthetic dataset (train/val/test)."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.synth import GENERATOR_VERSION, GENERATORS
from models.synth.dataset import (
    TEST_N,
    TRAIN_SEEDS_START,
    VAL_SEEDS_START,
    Split,
    held_out_split,
    write_yolo,
)

DEFAULT_TRAIN = 6000
DEFAULT_VAL = 0
DEFAULT_TEST = TEST_N


def splits(n_train: int, n_val: int, n_test: int, styles: tuple[str, ...]) -> list[Split]:
    out = [Split("train", range(TRAIN_SEEDS_START, TRAIN_SEEDS_START + n_train), styles, 0.8)]
    if n_val:  # not used by models.train; for tuning by hand
        out.append(Split("val", range(VAL_SEEDS_START, VAL_SEEDS_START + n_val), styles, 0.8))
    if n_test:
        out.append(held_out_split(n_test))
    return out



def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("models/data"))
    ap.add_argument("--train", type=int, default=DEFAULT_TRAIN)
    ap.add_argument("--val", type=int, default=DEFAULT_VAL)
    ap.add_argument("--test", type=int, default=DEFAULT_TEST)
    ap.add_argument("--styles", default="A,B,C", help="vendor styles for train/val")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--generator", choices=GENERATORS, default=GENERATOR_VERSION,
                    help="render as this generator version did (a recipe's recorded data)")
    a = ap.parse_args(argv)
    write_yolo(a.out, splits(a.train, a.val, a.test, tuple(a.styles.split(","))), a.workers,
               generator=a.generator)


if __name__ == "__main__":
    main()
