"""create_app: wires settings, database, vault, writer and routes (the only module knowing all)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
from aiohttp import web

from screening.alerts import ALERT_OPTIONS, ALERTS, AlertsComponent
from screening.api.context import GATEWAY, Gateway, Metrics
from screening.api.ledger import LEDGER_SIGNER
from screening.api.pacing import Pacer
from screening.api.problems import problem_middleware
from screening.api.protocol import name_the_server
from screening.api.routes import add_routes
from screening.background import cancel_and_wait
from screening.domain.ledger import LedgerInconsistentError
from screening.files import create_once
from screening.inference import DEFAULT_MODEL_PATH, DetectorConfig
from screening.protection import PersonalDataVault
from screening.runtime import StartupError
from screening.services import ledger as ledger_service
from screening.services import pii
from screening.services.access import KeyAuthenticator
from screening.services.ingest import CommitReport, GroupCommitWriter
from screening.services.ledger import LedgerSigner
from screening.services.scans import ScanLimits, ScanService
from screening.settings import Settings
from screening.storage.database import create_pool, migrate
from screening.storage.images import ImageStore
from screening.storage.ledger import LedgerTips
from screening.web import add_console

log = logging.getLogger(__name__)


PII_KEYS_MISMATCH = (
    "the personal-data keys (SCREENING_PII_KEYS_JSON, else the key file under"
    " SCREENING_DATA_DIR) are not the ones this database's records were made with: every"
    " gateway of one database needs the same keys (deploy/gateway.env.example)"
)


async def require_pii_keys(pool: asyncpg.Pool[Any], vault: PersonalDataVault) -> None:
    """StartupError unless ``vault`` holds the keys the database's records were made with."""
    if not await pii.keys_match(pool, vault):
        raise StartupError(PII_KEYS_MISMATCH)


def load_vault(settings: Settings) -> PersonalDataVault:
    """Key material from settings, else from (or newly into) the data dir's key file."""
    if settings.pii_keys_json is not None:
        return PersonalDataVault.from_json_dict(
            json.loads(settings.pii_keys_json.get_secret_value())
        )
    path = settings.pii_key_file
    if not path.exists() and create_once(
        path, json.dumps(PersonalDataVault.generate().to_json_dict())
    ):
        log.warning("generated development PII keys", extra={"path": str(path)})
    return PersonalDataVault.from_json_dict(json.loads(path.read_text()))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STOP_LIMIT_S = 10.0  # per part at shutdown


async def _stop(what: str, close: Callable[[], Awaitable[Any]]) -> None:
    try:
        await asyncio.wait_for(close(), STOP_LIMIT_S)
    except TimeoutError:
        log.critical("%s did not stop within %.0f s; abandoning it", what, STOP_LIMIT_S)


async def _close_station_sockets(gw: Gateway) -> None:
    for sockets in gw.station_streams.values():
        for ws in list(sockets):
            await _stop("station socket", partial(ws.close, code=1001, message=b"shutting down"))


async def _end_streams(app: web.Application) -> None:
    """First step of a stop, before the server waits for its handlers: long-lived streams would
    otherwise hold that wait to its limit. Stations get close code 1001 (going away) and
    reconnect, to another gateway or to this one restarted; police feeds end, and their
    consumers resume from Last-Event-ID."""
    try:
        if ALERTS in app:
            app[ALERTS].feed.close()
        if GATEWAY in app:
            # A snapshot (a stream still opening may add a site meanwhile), closed all at once
            # under one bound: a dead peer's close waits for its timeout, not once per socket.
            sockets = {ws for group in list(app[GATEWAY].station_streams.values()) for ws in group}
            closing = (ws.close(code=1001, message=b"shutting down") for ws in sockets)
            all_closed = asyncio.gather(*closing, return_exceptions=True)
            await _stop("station sockets", lambda: all_closed)
    except Exception:  # never let this hook abort the stop: the parts after it must still run
        log.exception("closing the streams at shutdown failed")


async def checkpoint_periodically(
    pool: asyncpg.Pool[Any], signer: LedgerSigner, settings: Settings
) -> None:
    """Sign a checkpoint for every site whose ledger grew, every interval (all gateways may run
    this: a checkpoint of an unchanged tree is not signed twice)."""
    while True:
        await asyncio.sleep(settings.ledger_checkpoint_interval_s)
        try:
            await ledger_service.checkpoint_all(
                pool, signer, origin_prefix=settings.ledger_origin_prefix
            )
        except LedgerInconsistentError:
            log.critical("a site's ledger does not extend its last checkpoint; not signing it")
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("ledger checkpointing failed; will retry: %s", exc)
        except Exception:  # unforeseen: the next round must still come, for every site
            log.exception("ledger checkpointing failed; will retry")


async def _report_depth(metrics: Metrics, writer: GroupCommitWriter) -> None:
    """The writer's queue depth, every second: with several workers, /metrics may be answered
    by another process, and a stalled writer commits nothing that would update it."""
    while True:
        metrics.writer_depth.set(writer.depth)
        await asyncio.sleep(1.0)


def _metrics_middleware(metrics: Metrics) -> Any:
    # The labelled histogram of each (method, route, status), looked up once: labels() takes
    # a lock and builds the label tuple on every call, on every request.
    series: dict[tuple[str, str, int], Any] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            key = (request.method, route, status)
            histogram = series.get(key)
            if histogram is None:
                histogram = series[key] = metrics.requests.labels(request.method, route, status)
            histogram.observe(time.perf_counter() - started)

    return middleware


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool[Any] | None = None,
    vault: PersonalDataVault | None = None,
    run_migrations: bool = True,
    check_pii_keys: bool = False,
) -> web.Application:
    """The gateway application. Without ``pool`` it connects to ``settings.database_url``.
    ``check_pii_keys``: refuse to start (StartupError) with other personal-data matching keys
    than the database's records were made with (``services.pii.keys_match``)."""
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[_metrics_middleware(metrics), problem_middleware],
    )
    app.on_response_prepare.append(name_the_server)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # Each part that starts registers its stop at once, so a failure later in the startup
        # (a key file that cannot be read, say) stops what had started and the process exits,
        # instead of hanging on a pool that a running task still holds. Stops run in reverse:
        # depth and checkpoints, alerts, station sockets, writer, detector, pool. Each gets a
        # bounded time, so one stuck part cannot hold the process past its service manager's
        # stop timeout with the others not yet stopped.
        async with contextlib.AsyncExitStack() as stops:
            if pool is None:
                if settings.database_url is None:
                    raise RuntimeError("no database: set SCREENING_DATABASE_URL or use the CLI")
                the_pool = await create_pool(
                    settings.database_url.get_secret_value(),
                    min_size=settings.pool_min_size,
                    max_size=settings.pool_max_size,
                )
                stops.push_async_callback(_stop, "database pool", the_pool.close)
            else:
                the_pool = pool
            if run_migrations:
                async with the_pool.acquire() as conn:
                    await migrate(conn)
            # Key material before anything starts: what most often fails at a start.
            the_vault = vault or load_vault(settings)
            if check_pii_keys:
                await require_pii_keys(the_pool, the_vault)
            model_path = settings.model_path or DEFAULT_MODEL_PATH
            if not model_path.is_file():  # else every scan would be 503 model_unavailable
                raise StartupError(f"no X-ray model at {model_path} (SCREENING_MODEL_PATH)")
            signer = await asyncio.to_thread(LedgerSigner.load_or_create, settings.ledger_key_path)
            app[LEDGER_SIGNER] = signer
            # Where this process left each site's ledger: shared by the group-commit writer and
            # the X-ray uploads, so that each finds the other's appends (storage.ledger).
            ledger_tips = LedgerTips()
            scans = ScanService(
                the_pool,
                the_vault,
                ImageStore(settings.image_dir),
                DetectorConfig(
                    model_path=model_path,
                    intra_op_threads=settings.inference_threads,
                    max_batch=settings.inference_max_batch,
                    max_wait_ms=settings.inference_max_wait_ms,
                    queue_size=settings.inference_queue_size,
                    max_decoding=settings.inference_max_decoding,
                ),
                ScanLimits(settings.max_image_bytes, settings.max_image_pixels),
                ledger_tips=ledger_tips,
            )
            stops.push_async_callback(_stop, "detector", scans.close)
            writer = GroupCommitWriter(
                the_pool,
                max_events=settings.group_commit_max_events,
                max_wait_s=settings.group_commit_max_wait_ms / 1000.0,
                max_inflight=settings.group_commit_max_inflight,
                queue_size=settings.ingest_queue_size,
                commit_timeout_s=settings.group_commit_timeout_s,
                ledger_tips=ledger_tips,
            )

            def observe(report: CommitReport, size: int) -> None:
                metrics.commit_size.observe(size)
                metrics.commit_seconds.observe(report.seconds)

            writer.on_commit.append(observe)
            await writer.start()
            stops.push_async_callback(_stop, "writer", writer.close)
            app[GATEWAY] = Gateway(
                settings=settings,
                pool=the_pool,
                vault=the_vault,
                writer=writer,
                authenticator=KeyAuthenticator(the_pool, settings.api_key_cache_s),
                metrics=metrics,
                scans=scans,
                pacer=Pacer(settings.ingest_pacing_units) if settings.ingest_pacing_units else None,
            )
            stops.push_async_callback(_close_station_sockets, app[GATEWAY])
            if settings.public_base_url is None and settings.host in ("0.0.0.0", "::", ""):
                log.warning(
                    "SCREENING_PUBLIC_BASE_URL is not set: police webhook links will name "
                    "http://%s:%d, which nobody can open; set it to the gateway's public address",
                    settings.host, settings.port,
                )  # fmt: skip
            alert_options: dict[str, Any] = {
                "public_base_url": settings.public_base_url
                or f"http://{settings.host}:{settings.port}",
                "webhook_timeout_s": settings.webhook_timeout_s,
                "retry_jitter": settings.webhook_retry_jitter,
                "relay_enabled": settings.alert_relay_enabled,
                "relay_lease_s": settings.alert_relay_lease_s,
                "relay_batch": settings.alert_relay_batch,
                "relay_poll_s": settings.alert_relay_poll_s,
                "review_lease_s": settings.review_lease_s,
                "tip_rate": settings.tip_rate,
                "clear_audit_share": settings.clear_audit_share,
                "cleared_audit_share": settings.cleared_audit_share,
                "hold_repush_s": settings.hold_repush_s,
            }
            if ALERT_OPTIONS in app:  # tests inject clocks, transports and schedules
                overrides: dict[str, Any] = app[ALERT_OPTIONS]
                alert_options.update(overrides)
            alerts = AlertsComponent(
                the_pool,
                the_vault,
                scans.images,
                app[GATEWAY].station_streams,
                scans=scans,
                **alert_options,
            )
            scans.on_verdict = alerts.on_verdict  # in the upload transaction
            writer.on_accepted = alerts.on_events  # in the ingest transaction
            app[ALERTS] = alerts
            stops.push_async_callback(_stop, "alerts", alerts.close)
            await alerts.start()
            checkpoints = asyncio.create_task(
                checkpoint_periodically(the_pool, signer, settings), name="ledger-checkpoints"
            )
            stops.push_async_callback(cancel_and_wait, checkpoints)
            depth = asyncio.create_task(_report_depth(metrics, writer), name="queue-depth")
            stops.push_async_callback(cancel_and_wait, depth)
            yield

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(_end_streams)
    add_routes(app)
    add_console(app)
    return app
