"""``python -m firmware_bridge.dead --spool PATH list|export|retry|discard``: the operator's
tool for scans the gateway rejected for good.

Dead scans (a 409 conflict, another 4xx) stay in the spool with their images and count
towards its bound, so a spool that fills with them stops the belt for good. This tool, safe to
run beside the bridge (SQLite in WAL mode serialises the two), is the way out:

* ``list``: each dead scan's id, when it died and the gateway's answer;
* ``export DIR``: its images and metadata as files, for the station's records or a support
  case (``<scan_id>.png``, ``.high.png``/``.low.png`` for a raw pair, ``<scan_id>.json``);
* ``retry --all | SCAN_ID...``: pending again, sent at once (the cause fixed: a site added at
  the gateway, say); the running bridge picks them up within a minute;
* ``discard --exported DIR --all | SCAN_ID...``: delete those whose export in DIR holds the
  same bytes (anything not exported is kept and named), freeing the spool.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from .errors import SpoolError
from .spool import DeadScan, Spool

_FILES = (("image", ".png"), ("high", ".high.png"), ("low", ".low.png"))


def _files(dead: DeadScan) -> dict[str, bytes]:
    """The exported file names (suffixes) of one dead scan and their bytes."""
    out: dict[str, bytes] = {}
    for attr, suffix in _FILES:
        data = getattr(dead.record, attr)
        if data is not None:
            out[suffix] = data
    return out


def export(spool: Spool, directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    done = []
    for dead in spool.dead_scans():
        scan_id = dead.record.scan_id
        for suffix, data in _files(dead).items():
            (directory / f"{scan_id}{suffix}").write_bytes(data)
        doc = {
            "scan_id": scan_id,
            "metadata": dead.record.metadata,
            "gateway_answer": dead.error,
            "died_at": datetime.fromtimestamp(dead.died_at, UTC).isoformat(),
            "attempts": dead.record.attempts,
            "files": [f"{scan_id}{suffix}" for suffix in _files(dead)],
        }
        (directory / f"{scan_id}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
        done.append(scan_id)
    return done


def exported_in(dead: DeadScan, directory: Path) -> bool:
    """Whether ``directory`` holds this scan's export, byte for byte."""
    scan_id = dead.record.scan_id
    if not (directory / f"{scan_id}.json").is_file():
        return False
    for suffix, data in _files(dead).items():
        path = directory / f"{scan_id}{suffix}"
        if not path.is_file() or path.read_bytes() != data:
            return False
    return True


def _chosen(spool: Spool, args: argparse.Namespace) -> list[DeadScan]:
    dead = spool.dead_scans()
    if args.all:
        return dead
    wanted = set(args.scan_ids)
    found = [d for d in dead if d.record.scan_id in wanted]
    for missing in sorted(wanted - {d.record.scan_id for d in found}):
        print(f"{missing}: not a dead scan in this spool", file=sys.stderr)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.dead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spool", type=Path, default=Path("var/bridge/spool.sqlite3"))
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the dead scans, oldest first")
    exp = sub.add_parser("export", help="write every dead scan's images and metadata to DIR")
    exp.add_argument("directory", type=Path)
    for name, text in (("retry", "send these again"), ("discard", "delete exported ones")):
        action = sub.add_parser(name, help=text)
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true")
        which.add_argument("scan_ids", nargs="*", default=[])
        if name == "discard":
            action.add_argument("--exported", type=Path, required=True,
                                help="the directory `export` wrote them to")
    args = p.parse_args(argv)
    if args.action in ("retry", "discard") and not args.all and not args.scan_ids:
        p.error(f"{args.action}: name scan ids or give --all")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.spool.exists():
        print(f"no spool at {args.spool}", file=sys.stderr)
        return 2
    try:
        spool = Spool(args.spool)
    except SpoolError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            dead = spool.dead_scans()
            for d in dead:
                when = datetime.fromtimestamp(d.died_at, UTC).isoformat(timespec="seconds")
                waybill = d.record.metadata.get("waybill_no") or "(no waybill)"
                print(f"{d.record.scan_id}  {when}  {waybill}  {d.error}")
            print(f"{len(dead)} dead scan(s)", file=sys.stderr)
        elif args.action == "export":
            done = export(spool, args.directory)
            print(f"exported {len(done)} dead scan(s) to {args.directory}", file=sys.stderr)
        elif args.action == "retry":
            done = spool.revive([d.record.scan_id for d in _chosen(spool, args)])
            print(f"{len(done)} scan(s) pending again", file=sys.stderr)
        else:
            chosen = _chosen(spool, args)
            ready = [d.record.scan_id for d in chosen if exported_in(d, args.exported)]
            for d in chosen:
                if d.record.scan_id not in ready:
                    print(f"{d.record.scan_id}: not exported to {args.exported}; kept",
                          file=sys.stderr)
            done = spool.discard(ready)
            print(f"discarded {len(done)} dead scan(s)", file=sys.stderr)
            if len(done) < len(chosen):
                return 1
    except SpoolError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        spool.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
