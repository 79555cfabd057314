"""Command line (console script ``screening``): serve, migrate, sites, keys, contracts, verify,
ledger, pii and demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from screening import logs, pii_cli
from screening.api.protocol import GatewayRunner
from screening.app import create_app, load_vault, require_pii_keys
from screening.background import cancel_and_wait
from screening.domain.access import Role
from screening.domain.checkpoint import CheckpointError, NoteVerifier
from screening.errors import ScreeningError
from screening.runtime import (
    SHUTDOWN_DRAIN_S,
    StartupError,
    loop_name,
    run_server,
    stop_on_signals,
    tune_collector,
)
from screening.services import access
from screening.services import ledger as ledger_service
from screening.services.ledger import LedgerSigner, SignerKeyError
from screening.settings import Settings
from screening.storage.database import (
    create_pool,
    embedded_postgres,
    migrate,
    pending_migrations,
)
from screening.workers import (
    RunDir,
    Supervisor,
    first_beat,
    keep_beating,
    watch_parent,
    worker_command,
    worker_env,
)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured PostgreSQL, or an embedded one kept under the data dir."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    with embedded_postgres(settings.pgdata) as dsn:
        yield dsn


async def _with_pool(
    dsn: str, action: Callable[[asyncpg.Pool[Any]], Awaitable[int]], *, may_migrate: bool = True
) -> int:
    """Run ``action`` on a pool of ``dsn``, the schema first brought up to this version's; or,
    without ``may_migrate``, refused (StartupError) when it is not."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            if may_migrate:
                await migrate(conn)
            elif pending := await pending_migrations(conn):
                raise StartupError(
                    f"the database lacks {len(pending)} migration(s) of this version (first:"
                    f" {pending[0]}): run `screening migrate` once every gateway of the older"
                    " version is stopped"
                )
        return await action(pool)
    finally:
        await pool.close()


async def serve(
    settings: Settings, dsn: str, *, supervisor: int | None = None, heartbeats: Path | None = None
) -> None:
    """Run the gateway until SIGTERM or SIGINT, then stop: no new connections, station streams
    closed (1001), requests in flight finished with their group commits (for up to
    SHUTDOWN_DRAIN_S; later ones fail, never reported accepted).

    ``supervisor``: the pid of the supervisor of which this is one of several workers on the
    port (screening.workers): it binds with SO_REUSEPORT and stops, too, when that is gone.
    ``heartbeats``: where it beats for that supervisor once it listens (``workers.beat``)."""
    worker = supervisor is not None
    pool = await create_pool(dsn, min_size=settings.pool_min_size, max_size=settings.pool_max_size)
    watchdog: asyncio.Task[None] | None = None
    heartbeat: asyncio.Task[None] | None = None
    try:
        stop = asyncio.Event()
        stop_on_signals(stop, second_ends=not worker)
        if supervisor is not None:
            watchdog = asyncio.create_task(watch_parent(stop, supervisor), name="supervisor-watch")
        app = create_app(settings, pool=pool, check_pii_keys=True)
        runner = GatewayRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_DRAIN_S)
        await runner.setup()
        try:  # from here the app's parts run: whatever fails, they are stopped
            site = web.TCPSite(runner, settings.host, settings.port, reuse_port=worker or None)
            try:
                await site.start()
            except OSError as exc:  # a port in use, an address not on this host
                raise StartupError(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
                ) from exc
            tune_collector(settings.gc_young_threshold)
            if heartbeats is not None:
                # The first beat is written before the line below: the supervisor takes a
                # worker that has not beaten as still starting, and never replaces it.
                heartbeat = asyncio.create_task(
                    keep_beating(first_beat(heartbeats)), name="heartbeat"
                )
            print(
                f"gateway listening on http://{settings.host}:{settings.port} "
                f"(event loop: {loop_name()})",
                file=sys.stderr,
            )
            await stop.wait()
            print("gateway stopping", file=sys.stderr)
        finally:
            await runner.cleanup()
    finally:
        await cancel_and_wait(heartbeat)
        await cancel_and_wait(watchdog)
        await pool.close()


def _probe_port(host: str, port: int) -> None:
    """Refuse to start workers on a port something already listens on. They bind with
    SO_REUSEPORT, which another process's SO_REUSEPORT socket of the same user lets them
    share: an old gateway left running would silently take part of the traffic."""
    try:  # every address the host names, as the workers' listener binds them
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            try:
                probe = socket.socket(family, kind, proto)
            except OSError as exc:  # no IPv6 on this host: asyncio's listener skips it too
                if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                    continue
                raise
            with probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


async def supervise(settings: Settings, dsn: str, count: int) -> int:
    """Run ``count`` gateway workers on the port (screening.workers) until SIGTERM or SIGINT."""
    # Migrations, once, before any worker starts; and the development key file, made here so
    # workers cannot race, checked against the database's records (each worker checks again).
    vault = load_vault(settings)

    async def check_keys(pool: asyncpg.Pool[Any]) -> int:
        await require_pii_keys(pool, vault)
        return 0

    await _with_pool(dsn, check_keys)
    _probe_port(settings.host, settings.port)
    LedgerSigner.load_or_create(settings.ledger_key_path)
    run = RunDir.of(settings)
    run.make_fresh()
    print(
        f"gateway starting {count} workers on http://{settings.host}:{settings.port}",
        file=sys.stderr,
    )
    supervisor = Supervisor(
        count,
        worker_command(run.heartbeats),
        worker_env(dsn, run.metrics),
        heartbeats=run.heartbeats,
        wedged_s=settings.worker_wedged_s,
    )
    try:
        return await supervisor.run()
    finally:
        run.remove()  # nobody reads this run's metrics or heartbeats any more


async def _nothing(pool: asyncpg.Pool[Any]) -> int:
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be from 1 to 64")
    return value


def _number(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` from ``low`` to ``high`` (a refused value is a
    usage error, not a traceback later)."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="screening", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the gateway")
    serve_p.add_argument(
        "--workers", type=_positive, help="gateway processes on the port (SCREENING_WORKERS)"
    )
    serve_p.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)  # supervisor's pid
    serve_p.add_argument("--heartbeats", type=Path, help=argparse.SUPPRESS)  # where to beat
    sub.add_parser("migrate", help="apply database migrations")

    sites = sub.add_parser("sites", help="manage sites").add_subparsers(
        dest="action", required=True
    )
    add = sites.add_parser("add", help="add or update a site")
    add.add_argument("site_id")
    add.add_argument("--name", required=True)
    add.add_argument(
        "--timezone", help="IANA zone its days are cut in (a new site: Asia/Shanghai; else kept)"
    )
    add.add_argument(
        "--xray-flows",
        help='comma-separated flows that must be X-rayed ("" for none; a new site: every flow;'
        " else kept)",
    )
    sites.add_parser("list", help="list sites")
    rederive = sites.add_parser(
        "rederive",
        help="derive the sites' stored parcels again under this version's compliance rules",
    )
    rederive.add_argument("site_id", nargs="*", help="default: every site")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key (printed once)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument(
        "--site", action="extend", nargs="+", default=[], metavar="SITE",
        help="sites in scope: --site A B, or --site A --site B",
    )  # fmt: skip
    create.add_argument("--label", default="")
    keys.add_parser("list", help="list keys (never the keys themselves)")
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")

    contracts = sub.add_parser(
        "contracts", help="contract customers (security agreements instead of sender IDs)"
    ).add_subparsers(dest="action", required=True)
    contract = contracts.add_parser("add", help="record or update a security agreement")
    contract.add_argument("--site", required=True)
    contract.add_argument("--ref", required=True, help="the contract_customer_ref stations send")
    contract.add_argument("--name", required=True, help="the organisation")
    contract.add_argument("--uscc", required=True, help="its unified social credit code")
    contract.add_argument("--agreement", required=True, help="the agreement's number")
    contract.add_argument("--from", dest="valid_from", required=True, type=date.fromisoformat)
    contract.add_argument("--until", dest="valid_until", type=date.fromisoformat)
    listed = contracts.add_parser("list", help="a site's contract customers")
    listed.add_argument("--site", required=True)

    verify = sub.add_parser(
        "verify", help="check a site's stored records against a saved signed checkpoint"
    )
    verify.add_argument("--site", required=True)
    verify.add_argument("--checkpoint", required=True, type=Path, help="checkpoint note file")
    verify.add_argument("--vkey", help="verifier key (default: the gateway's own signing key file)")

    ledger = sub.add_parser("ledger", help="ledger checkpoints and key").add_subparsers(
        dest="action", required=True
    )
    checkpoint = ledger.add_parser("checkpoint", help="sign a checkpoint now and print it")
    checkpoint.add_argument("--site", required=True)
    checkpoint.add_argument("--out", type=Path, help="also write the note to this file")
    checkpoint.add_argument(
        "--adopt-key",
        action="store_true",
        help="sign although another key signed the site's last checkpoint (after replacing "
        "a lost or retired key; publish the new vkey), or under another origin (after "
        "changing SCREENING_LEDGER_ORIGIN_PREFIX)",
    )
    ledger.add_parser("vkey", help="print the verifier key to publish")

    pii_cli.add_parser(sub)

    demo = sub.add_parser("demo", help="gateway + embedded PostgreSQL + simulated stations")
    demo.add_argument("--duration", type=_number(float, 0.1, 1e9), default=None,
                      help="stop after SECONDS")  # fmt: skip
    demo.add_argument("--sites", type=_number(int, 1, 50), default=4)
    demo.add_argument("--rate", type=_number(float, 0.01, 1000), default=2.0,
                      help="parcels per second per site")  # fmt: skip
    demo.add_argument(
        "--no-xray-images",
        action="store_true",
        help="stations report X-ray verdicts as events instead of uploading generated frames",
    )
    demo.add_argument(
        "--break-share",
        type=_number(float, 0, 1),
        default=0.08,
        help="share of parcels with a rule break",
    )
    demo.add_argument("--port", type=_number(int, 0, 65535), default=None)
    demo.add_argument(
        "--scanners",
        type=_number(int, 0, 50),
        default=2,
        help="sites that also run a virtual X-ray scanner and its firmware bridge",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # SCREENING_* values: one line each, not a traceback
        for err in exc.errors(include_url=False, include_input=False):
            name = "_".join(str(part) for part in err["loc"]).upper()
            where = f"SCREENING_{name}" if name else "SCREENING_* settings"
            print(f"error: {where}: {err['msg']}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, json_lines=settings.log_json and args.command != "demo")
    try:
        return _run(args, settings)
    except ScreeningError as exc:
        print(f"error: {exc.detail} ({exc.code})", file=sys.stderr)
        return 2
    except (SignerKeyError, CheckpointError, StartupError) as exc:
        # a key file or a --vkey that is not one; a port in use
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    # The admin commands bring the schema up to date on the embedded database (a developer's),
    # never on a configured one: that would migrate it under gateways of the older version
    # still serving it (README: upgrades). There, `screening migrate` does it.
    admin_migrates = settings.database_url is None
    if args.command == "ledger" and args.action == "vkey":
        # Load, never create: a new key made here (say, under a mistyped data directory) would
        # be published or used by nobody who knows the gateway's. The gateway makes its key.
        print(_signing_key(settings).vkey())
        return 0
    if args.command == "pii":

        def with_pool(action: pii_cli.PoolAction) -> int:
            with database(settings) as dsn:
                return asyncio.run(_with_pool(dsn, action, may_migrate=admin_migrates))

        return pii_cli.main(args, settings, with_pool)
    if args.command == "demo":
        from screening.demo import run_demo

        if args.port is not None:
            settings = settings.model_copy(update={"port": args.port})
        status: int = run_demo(settings, args)
        return status

    with database(settings) as dsn:
        if args.command == "serve":
            count = args.workers if args.workers is not None else settings.workers
            with contextlib.suppress(KeyboardInterrupt):
                if count > 1 and args.worker_of is None:
                    return asyncio.run(supervise(settings, dsn, count))
                run_server(
                    serve(settings, dsn, supervisor=args.worker_of, heartbeats=args.heartbeats),
                    settings.event_loop,
                )
            return 0
        if args.command == "migrate":
            asyncio.run(_with_pool(dsn, _nothing))
            print("migrations applied")
            return 0
        admin: dict[str, Callable[[asyncpg.Pool[Any]], Awaitable[int]]] = {
            "sites": lambda pool: _sites(pool, args),
            "keys": lambda pool: _keys(pool, args),
            "contracts": lambda pool: _contracts(pool, args),
            "verify": lambda pool: _verify(pool, args, settings),
            "ledger": lambda pool: _ledger(pool, args, settings),
        }
        if args.command in admin:
            action = admin[args.command]
            return asyncio.run(_with_pool(dsn, action, may_migrate=admin_migrates))
    return 2


async def _sites(pool: asyncpg.Pool[Any], args: argparse.Namespace) -> int:
    if args.action == "add":
        # Not given: the site's own (a new site: every flow). Given empty: none.
        named: list[str] | None = (
            None
            if args.xray_flows is None
            else [f.strip() for f in args.xray_flows.split(",") if f.strip()]
        )
        reevaluated = await access.add_site(
            pool, args.site_id, args.name, timezone=args.timezone, xray_flows=named
        )
        print(f"site {args.site_id} saved")
        if reevaluated is not None:
            print(f"its policy changed: {reevaluated} parcels derived again under the new one")
    elif args.action == "rederive":
        for site_id, count in (await access.rederive_sites(pool, args.site_id)).items():
            print(f"{site_id}: {count} parcels derived again")
    else:
        for site in await access.list_sites(pool):
            flows = ",".join(sorted(site.policy.xray_flows))
            print(f"{site.site_id}\t{site.name}\t{site.policy.timezone}\txray:{flows}")
    return 0


async def _keys(pool: asyncpg.Pool[Any], args: argparse.Namespace) -> int:
    if args.action == "create":
        key_id, key = await access.create_key(pool, Role(args.role), args.site, args.label)
        print(f"key id: {key_id}\nkey (shown once, store it now): {key}")
    elif args.action == "list":
        for k in await access.list_keys(pool):
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            scope = ",".join(k.site_ids) or "*"
            print(f"{k.key_id}\t{k.role}\t{scope}\t{state}\t{k.label}")
    else:
        await access.revoke_key(pool, args.key_id)
        print(f"key {args.key_id} revoked")
    return 0


async def _contracts(pool: asyncpg.Pool[Any], args: argparse.Namespace) -> int:
    if args.action == "add":
        await access.add_contract(
            pool,
            args.site,
            args.ref,
            name=args.name,
            uscc=args.uscc,
            agreement_no=args.agreement,
            valid_from=args.valid_from,
            valid_until=args.valid_until,
        )
        print(f"contract customer {args.ref} of site {args.site} saved")
        return 0
    for c in await access.list_contracts(pool, args.site):
        until = c["valid_until"] or "open"
        print(
            f"{c['customer_ref']}\t{c['name']}\t{c['uscc']}\t{c['agreement_no']}\t"
            f"{c['valid_from']}..{until}"
        )
    return 0


def _signing_key(settings: Settings) -> LedgerSigner:
    path = settings.ledger_key_path
    if not path.exists():
        raise SignerKeyError(
            f"no ledger signing key at {path}: the gateway creates it on its first start "
            "(or set SCREENING_LEDGER_KEY_FILE to where it is)"
        )
    return LedgerSigner.load(path)


async def _ledger(pool: asyncpg.Pool[Any], args: argparse.Namespace, settings: Settings) -> int:
    signer = _signing_key(settings)
    if not await access.site_exists(pool, args.site):
        print(f"error: no site {args.site!r}", file=sys.stderr)
        return 2
    note = await ledger_service.make_checkpoint(
        pool,
        args.site,
        signer,
        origin_prefix=settings.ledger_origin_prefix,
        adopt_key=args.adopt_key,
    )
    print(note, end="")  # first: signed and stored, the note is not lost if --out fails
    if args.out:
        try:
            args.out.write_text(note)
        except OSError as exc:
            print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


async def _verify(pool: asyncpg.Pool[Any], args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when every record matches the checkpoint; 1 naming each record that does not."""
    if args.vkey:
        verifier = NoteVerifier.from_vkey(args.vkey)
    else:
        verifier = LedgerSigner.load(settings.ledger_key_path).verifier()
    try:
        note = args.checkpoint.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        # 2, not 1: 1 says the records were changed
        print(f"error: cannot read {args.checkpoint}: {exc}", file=sys.stderr)
        return 2
    try:
        report = await ledger_service.verify(
            pool, args.site, note, verifier, origin_prefix=settings.ledger_origin_prefix
        )
    except CheckpointError as exc:
        print(f"checkpoint rejected: {exc}", file=sys.stderr)
        return 1
    print(
        f"site {report.site_id}: checkpoint covers {report.checkpoint_size} records, "
        f"{report.stored_size} stored"
    )
    for f in report.altered:
        print(f"ALTERED   leaf {f.leaf_index}  event {f.event_id}  waybill {f.waybill_no}")
    for f in report.removed:
        print(f"REMOVED   leaf {f.leaf_index}  event {f.event_id}")
    for r in report.reordered:
        print(
            f"REORDERED leaf {r.leaf_index}  event {r.event_id} carries the {r.swapped} "
            f"logged for leaf {r.logged_as} (event {r.logged_event_id})"
        )
    for f in report.unlogged:
        print(f"UNLOGGED  event {f.event_id}  waybill {f.waybill_no}")
    if report.missing_leaves:
        print(f"MISSING   ledger leaves {list(report.missing_leaves)[:20]}")
    if report.short_of_checkpoint:
        print(f"TRUNCATED {report.short_of_checkpoint} records the checkpoint covers are gone")
    if not report.leaves_match_checkpoint:
        print("LEDGER    the stored leaf hashes no longer hash to the checkpoint's root")
    if not report.origin_matches:
        print("ORIGIN    the checkpoint was made for another site")
    print("OK: the records match the checkpoint" if report.ok else "FAILED: records were changed")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
