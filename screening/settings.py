"""One Settings object read once from SCREENING_* variables: the only reader of the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from screening.runtime import EventLoopChoice


class Settings(BaseSettings):
    """Gateway configuration.

    Without ``database_url`` the gateway starts an embedded PostgreSQL whose data lives under
    ``data_dir`` and is kept between runs.
    """

    # An empty value is no value: `SCREENING_DATABASE_URL=` in an environment file means the
    # embedded database, not a URL of "" (libpq's defaults), and likewise for every path.
    model_config = SettingsConfigDict(
        env_prefix="SCREENING_", env_file=None, extra="ignore", env_ignore_empty=True
    )

    database_url: SecretStr | None = None
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8080
    # Gateway processes `screening serve` runs on the one port (Linux SO_REUSEPORT: the kernel
    # spreads connections over them). One Python process uses one core; set this to the cores
    # the gateway may use. Each process has its own database pool of pool_max_size.
    workers: int = Field(default=1, ge=1, le=64)
    # With several workers: one whose event loop has not run for this long (a blocking call, a
    # deadlock; it still accepts connections) is killed and replaced by the supervisor.
    worker_wedged_s: float = Field(default=30.0, ge=2.0, le=3600.0)
    # Set by `screening serve` for its workers (prometheus_client's own variable, read by it at
    # import): where every worker's metric values go, so /metrics can sum them.
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR"
    )
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)

    # Ingest limits.
    max_batch_events: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # bytes
    # Station clocks drift: 5 min tolerated. At most a week: past that the bound means nothing
    # (and a huge one would overflow the time it is added to).
    max_future_skew_s: float = Field(default=300.0, ge=0, le=7 * 86400)
    # Group commit: the writer takes up to this many events per transaction, waiting at most
    # this long for company after the first one arrives, with up to max_inflight transactions
    # (each on its own connection, taken from the pool) committing at once. What has queued
    # is split evenly over the free transactions (screening.services.ingest). A group's own
    # work in the gateway comes in pieces between its round trips, each as long as the group
    # is large; past about 1,000 events they held up the other commits' answers and the
    # parsing of the next requests (batches of 500, one process: 18.6k events/s at 2,000,
    # 20.3k at 1,000; single-event groups stay far smaller). Three in flight rather than two:
    # single-event POSTs from 256 connections to one process, 6 alternating pairs on two days,
    # went from 2 to 3 by -5 to +21 % (median +10 %; the process idle 5 % of the time instead
    # of 10 %), while batches of 500 (2 processes, 9 pairs) moved by -7 to +8 % bar one +31 %.
    group_commit_max_events: int = Field(default=1000, ge=1)
    group_commit_max_wait_ms: float = Field(default=2.0, ge=0)
    group_commit_max_inflight: int = Field(default=3, ge=1)
    # A group commit still running after this long (a connection that died without a word, a
    # lock held elsewhere) has its connection abandoned: its requests get 503 and retry, and
    # the slot is free again. A commit takes milliseconds; a re-derivation's batch, a second.
    group_commit_timeout_s: float = Field(default=30.0, gt=0)
    ingest_queue_size: int = Field(default=20000, ge=1)
    # Requests parsed and validated per event-loop iteration, in units of one request plus one
    # per 8 KiB of body (screening.api.pacing); 0 parses all that are ready at once.
    ingest_pacing_units: int = Field(default=16, ge=0)
    # Young-generation threshold of the cyclic garbage collector once started
    # (screening.runtime): CPython's default of 700 makes a loaded gateway collect constantly.
    gc_young_threshold: int = Field(default=10_000, ge=100)
    # The event loop a gateway process runs on (screening.runtime.run_server): "auto" takes
    # uvloop (libuv, from asyncpg's authors) where it is installed, else asyncio's own.
    # Single-event POSTs to one process, asyncio -> uvloop, alternating 10 s runs against a site
    # holding 2 million events, the process's CPU per event: 221 -> 194 and 236 -> 179 µs from
    # 256 connections (4,234 -> 4,750 and 4,006 -> 5,063 events/s), 234 -> 229 and 254 -> 187
    # from 64. Batches of 500: one process 14,952 -> 17,217, 16,581 -> 18,093 and 16,228 ->
    # 16,945 events/s; two processes 20,837 -> 19,667 and 18,532 -> 18,749.
    event_loop: EventLoopChoice = "auto"

    # Personal-data protection. Key material as the JSON produced by PersonalDataVault; when
    # unset a key file is created under data_dir (fine for development, not for production).
    pii_keys_json: SecretStr | None = None

    # API keys are cached this long after lookup; revocation takes effect within it.
    api_key_cache_s: float = Field(default=5.0, ge=0)

    # X-ray detector (screening.inference). The default is the model shipped in models/.
    model_path: Path | None = None
    inference_threads: int = Field(default=1, ge=0)  # onnxruntime intra-op threads
    inference_max_batch: int = Field(default=4, ge=1)
    inference_max_wait_ms: float = Field(default=5.0, ge=0)
    inference_queue_size: int = Field(default=32, ge=1)
    inference_max_decoding: int = Field(default=8, ge=1)  # uploads decoded at once; more wait
    max_image_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)  # per uploaded part
    max_image_pixels: int = Field(default=16_000_000, ge=1024)

    # Tamper-evident ledger: the Ed25519 key that signs every site's checkpoints (created on
    # first start if missing; publish its vkey), the origin prefix of the checkpoint notes, and
    # how often grown logs are checkpointed.
    ledger_key_file: Path | None = None
    # No spaces and no '+' (signed-note names): checked at start, not at each signing.
    ledger_origin_prefix: str = Field(default="screening.example/sites", pattern=r"^[^\s+]+$")
    ledger_checkpoint_interval_s: float = Field(default=60.0, gt=0)

    # The gateway's address as clients see it (behind a TLS-terminating proxy, the proxy's):
    # links in webhooks and answers, the console's sign-in origin, Secure cookies. Default:
    # http://host:port for webhooks, each request's own scheme and host for the rest.
    public_base_url: str | None = None
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    alert_relay_enabled: bool = True
    alert_relay_lease_s: float = Field(default=60.0, gt=0)
    alert_relay_batch: int = Field(default=32, ge=1)
    alert_relay_poll_s: float = Field(default=1.0, gt=0)
    review_lease_s: float = Field(default=120.0, gt=0)
    tip_rate: float = Field(default=0.02, ge=0, le=1)  # share of reviewers' items that are TIP
    clear_audit_share: float = Field(default=0.02, ge=0, le=1)  # model-cleared scans re-reviewed
    cleared_audit_share: float = Field(default=0.05, ge=0, le=1)  # reviewer-cleared, audited
    hold_repush_s: float = Field(default=5.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _pool_leaves_room(self) -> Settings:
        # The group-commit writer keeps up to max_inflight connections; the reads, the alert
        # relay, the hold pusher and the review queue need theirs too.
        if self.pool_max_size < self.group_commit_max_inflight + 2:
            raise ValueError(
                f"pool_max_size ({self.pool_max_size}) must be at least "
                f"group_commit_max_inflight + 2 ({self.group_commit_max_inflight + 2})"
            )
        return self

    @property
    def pii_key_file(self) -> Path:
        return self.data_dir / "pii-keys.json"

    @property
    def ledger_key_path(self) -> Path:
        return self.ledger_key_file or self.data_dir / "ledger-signing.key"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"
