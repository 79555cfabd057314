"""`make bench`: run every benchmark module that is present, one after the other."""

from __future__ import annotations

import importlib
import sys

MODULES = ("bench.ingest", "bench.bridge", "bench.inference", "bench.alerts")


def main() -> int:
    wanted = sys.argv[1:] or list(MODULES)
    status = 0
    for name in wanted:
        name = name if name.startswith("bench.") else f"bench.{name}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"== {name}: not available ({exc})")
            continue
        print(f"== {name}", flush=True)
        sys.argv = [name]  # each benchmark parses its own (default) arguments
        status |= int(module.main() or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
