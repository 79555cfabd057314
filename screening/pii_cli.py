"""`screening pii status|rotate|reseal|retire`: the operator's side of ``services.pii``.

Guards against the mistakes that cost data: the keyring is read, never made here (a new one
under a mistyped data directory would "rotate" keys nobody uses); keys kept in
SCREENING_PII_KEYS_JSON are never checked against the embedded database a shell without
SCREENING_DATABASE_URL would start (it holds none of their records, so a key would look unused);
the key file is changed under a lock and replaced whole, keeping its owner and permissions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from screening.files import create_once, locked, replace_file
from screening.protection import KeyMaterialError, PersonalDataVault
from screening.services import pii as pii_service
from screening.settings import Settings

UNREADABLE_SHOWN = 20  # unreadable records named on stderr; the count covers them all


class KeyringError(Exception):
    """The keyring cannot be read or written as asked (the message says why)."""


ORDER = (
    "in order: rotate; restart every gateway; reseal; retire the old key once status shows it "
    "seals no record (the keyring: SCREENING_PII_KEYS_JSON, else DATA_DIR/pii-keys.json)"
)


def add_parser(sub: Any) -> None:
    what = "rotate the keys that seal personal data (ID numbers, names, phones)"
    pii = sub.add_parser("pii", help=what, description=what, epilog=ORDER).add_subparsers(
        dest="action", required=True
    )

    def command(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = pii.add_parser(
            name, help=text, description=f"{text}.", epilog=ORDER
        )
        return parser

    command(
        "status",
        "each key and each key id that stored records name: how many records it sealed, and "
        "when the latest was received (exit 1: one is not in the keyring)",
    )
    out_help = ("with SCREENING_PII_KEYS_JSON: write the new key set to this new file (0600) "
                "instead of stdout")  # fmt: skip
    rotate = command("rotate", "add a fresh key to the keyring and make it the active one")
    rotate.add_argument("--out", type=Path, help=out_help)
    reseal = command("reseal", "seal stored records again under the active key, each field "
                     "bound to its column (exit 1: some record does not open)")  # fmt: skip
    reseal.add_argument("--batch", type=int, default=500,
                        help="records per transaction, 1 to 100,000 (default 500)")  # fmt: skip
    retire = command("retire", "remove a key from the keyring; refused while it is active or "
                     "any stored record uses it")  # fmt: skip
    retire.add_argument("key_id", help="the key to remove (see status)")
    retire.add_argument("--out", type=Path, help=out_help)


def refusal(args: argparse.Namespace, settings: Settings) -> str | None:
    """Why the command must not run with these settings, if it must not."""
    from_env = settings.pii_keys_json is not None
    if getattr(args, "out", None) is not None and not from_env:
        return "--out is for keys kept in SCREENING_PII_KEYS_JSON; the key file is rewritten"
    if from_env and settings.database_url is None and args.action != "rotate":
        return (
            "the keys come from SCREENING_PII_KEYS_JSON but SCREENING_DATABASE_URL is not set: "
            "the embedded database this would start holds none of their records"
        )
    if args.action == "reseal" and not 1 <= args.batch <= 100_000:
        return "--batch is 1 to 100,000"
    return None


def describe(args: argparse.Namespace, settings: Settings) -> str:
    keys = ("SCREENING_PII_KEYS_JSON" if settings.pii_keys_json is not None
            else str(settings.pii_key_file))  # fmt: skip
    if args.action == "rotate":  # no database
        return f"keyring: {keys}"
    database = ("SCREENING_DATABASE_URL" if settings.database_url is not None
                else f"embedded, under {settings.pgdata}")  # fmt: skip
    return f"keyring: {keys}; database: {database}"


def read_keyring(settings: Settings) -> PersonalDataVault:
    """The gateway's keyring as it reads it, never a new one."""
    if settings.pii_keys_json is not None:
        text = settings.pii_keys_json.get_secret_value()
    else:
        try:
            text = settings.pii_key_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyringError(
                f"no keyring at {settings.pii_key_file} (a gateway makes one at its first "
                "start under this data directory; or set SCREENING_PII_KEYS_JSON)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"cannot read {settings.pii_key_file}: {exc}") from None
    try:
        return PersonalDataVault.from_json_dict(json.loads(text))
    except (ValueError, KeyMaterialError) as exc:  # JSONDecodeError is a ValueError
        raise KeyringError(f"the keyring is not readable: {exc}") from None


@contextlib.contextmanager
def changing(settings: Settings) -> Iterator[None]:
    """Hold the key file's lock for a read, change and write (nothing to lock for keys kept in
    SCREENING_PII_KEYS_JSON: the operator stores the printed set)."""
    if settings.pii_keys_json is not None:
        yield
        return
    with locked(settings.pii_key_file):
        yield


def save_keyring(settings: Settings, vault: PersonalDataVault, out: Path | None) -> None:
    """Store a changed keyring where the gateway reads it: its key file, or, when the keys come
    from SCREENING_PII_KEYS_JSON, ``out`` (a new file) or stdout, to put where that value is
    kept."""
    # No spaces: the value goes into an environment file, quoted in single quotes.
    text = json.dumps(vault.to_json_dict(), separators=(",", ":"))
    if settings.pii_keys_json is None:
        try:
            replace_file(settings.pii_key_file, text)
        except PermissionError as exc:
            raise KeyringError(
                f"cannot replace {settings.pii_key_file} ({exc.strerror}): run this as the user "
                "that owns it, with write access to its directory"
            ) from None
        print(f"keyring saved to {settings.pii_key_file}", file=sys.stderr)
        return
    if out is not None:
        if not create_once(out, text):
            raise KeyringError(f"{out} exists already: name a new file")
        print(f"key set written to {out}: store it as SCREENING_PII_KEYS_JSON", file=sys.stderr)
        return
    print(text)
    print("SCREENING_PII_KEYS_JSON is set: store the key set above as its new value",
          file=sys.stderr)  # fmt: skip


def rotate(args: argparse.Namespace, settings: Settings) -> int:
    with changing(settings):
        vault = pii_service.rotated(read_keyring(settings))
        save_keyring(settings, vault, args.out)
    print(f"active key: {vault.active_key_id}; restart every gateway, then run "
          "`screening pii reseal`", file=sys.stderr)  # fmt: skip
    return 0


async def run(
    pool: asyncpg.Pool[Any],
    args: argparse.Namespace,
    settings: Settings,
    vault: PersonalDataVault,
) -> int:
    """status, reseal and retire (they read the stored records) with the keyring ``vault``
    (retire reads it again under the lock, as it changes it)."""
    if args.action == "status":
        missing = 0
        for key_id, (records, last) in (await pii_service.records_by_key(pool, vault)).items():
            state = ("active" if key_id == vault.active_key_id
                     else "old" if key_id in vault.key_ids else "NOT IN THE KEYRING")  # fmt: skip
            missing += key_id not in vault.key_ids
            latest = f"\tlatest received {last:%Y-%m-%d %H:%M:%S%z}" if last else ""
            print(f"{key_id}\t{state}\t{records} records{latest}")
        return 1 if missing else 0
    if args.action == "reseal":
        report = await pii_service.reseal(pool, vault, batch=args.batch)
        print(f"{report.examined} records examined: {report.resealed} sealed again under "
              f"{vault.active_key_id}, {report.current} already were, "
              f"{len(report.unreadable)} unreadable")  # fmt: skip
        for site_id, event_id in report.unreadable[:UNREADABLE_SHOWN]:
            print(f"unreadable: site {site_id}, event {event_id}", file=sys.stderr)
        return 1 if report.unreadable else 0
    with changing(settings):
        vault = read_keyring(settings)
        try:
            smaller = await pii_service.retire(pool, vault, args.key_id)
        except KeyError:
            raise KeyringError(f"no key {args.key_id} in the keyring") from None
        except pii_service.KeyInUseError as exc:
            raise KeyringError(str(exc)) from None
        save_keyring(settings, smaller, args.out)
    print(f"key {args.key_id} retired", file=sys.stderr)
    return 0


PoolAction = Callable[["asyncpg.Pool[Any]"], Awaitable[int]]


def main(
    args: argparse.Namespace, settings: Settings, with_pool: Callable[[PoolAction], int]
) -> int:
    """Run ``screening pii ...``; ``with_pool(action)`` runs ``action(pool)`` on the configured
    database (the CLI's ``database`` and ``_with_pool``)."""
    why = refusal(args, settings)
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    print(describe(args, settings), file=sys.stderr)
    try:
        # First, before any database starts (an embedded one under a mistyped data directory
        # would be made there): the keyring must be there and readable. Read again under the
        # lock where it is changed.
        vault = read_keyring(settings)
        if args.action == "rotate":  # the keyring only: no database
            return rotate(args, settings)
        return with_pool(lambda pool: run(pool, args, settings, vault))
    except KeyringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the key file's directory: not there, not writable, read-only
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


__all__ = ["KeyringError", "add_parser", "main"]
