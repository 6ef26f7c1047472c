"""Typed SQLAlchemy models on one base. Columns that hold ciphertext say so in their comment."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    types,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CIPHERTEXT = "ciphertext: AES-256-GCM, dv1:<key id>:<nonce+sealed>, bound to this row"
HISTORY_MAC = "HMAC-SHA256 (hex) chaining history entries; key derived from a keyring key"


class UTCDateTime(types.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on SQLite (which drops tzinfo) and PostgreSQL alike."""

    impl = types.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime}  # noqa: RUF012 (SQLAlchemy reads it as is)


class Grant(enum.StrEnum):
    DELEGATION = "delegation"
    CLIENT_CREDENTIALS = "client_credentials"


class State(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"


class Role(enum.StrEnum):
    SERVICE = "service"
    OPERATOR = "operator"


class App(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    vendor_app_id: Mapped[str | None] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(256))
    token_url: Mapped[str] = mapped_column(String(2048))
    grant: Mapped[str] = mapped_column(String(32))
    auth_method: Mapped[str] = mapped_column(String(32))
    default_scope: Mapped[str] = mapped_column(Text, default="")
    allowed_scopes: Mapped[str] = mapped_column(Text, default="")
    # The credential of auth_method: a client secret, or PEM text for private_key_jwt (the
    # private key) and tls_client_auth (certificate chain and key); see vault/upstream/client_auth.py.
    client_secret: Mapped[str] = mapped_column(Text, comment=CIPHERTEXT)
    client_secret_previous: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT)
    client_secret_set_at: Mapped[dt.datetime]
    client_key_id: Mapped[str | None] = mapped_column(String(256))  # the JWT kid, not a secret
    client_key_id_previous: Mapped[str | None] = mapped_column(String(256))
    client_cert_expires_at: Mapped[dt.datetime | None]
    signing_secret: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT)
    signing_secret_previous: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT)
    signing_previous_expires_at: Mapped[dt.datetime | None]
    signing_secret_set_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]


class Delegation(Base):
    """One row per app and tenant: who the app may act as, and the last applied vendor change."""

    __tablename__ = "delegations"
    __table_args__ = (
        UniqueConstraint("app_id", "tenant_id"),
        Index("ix_delegations_app_tenant", "app_id", "tenant"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str] = mapped_column(String(64))
    delegation_user_id: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT)
    state: Mapped[str] = mapped_column(String(16))
    # Bumped on every change of user or state: token caches compare it on every hit.
    version: Mapped[int] = mapped_column(Integer, default=1)
    vendor_timestamp: Mapped[dt.datetime]
    request_id: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime]
    last_callback_at: Mapped[dt.datetime]
    last_callback_result: Mapped[str] = mapped_column(String(32))
    # The head of the history's MAC chain (vault/history/chain.py): the newest entry's seq and MAC.
    history_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    history_mac: Mapped[str | None] = mapped_column(String(64), comment=HISTORY_MAC)


class DelegationHistory(Base):
    """Append-only: every callback that reached the apply step, with its outcome."""

    __tablename__ = "delegation_history"
    __table_args__ = (
        Index("ix_history_app_tenant", "app_id", "tenant_id", "id"),
        UniqueConstraint("app_id", "tenant_id", "seq", name="uq_history_chain_seq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    old_state: Mapped[str | None] = mapped_column(String(16))
    new_state: Mapped[str | None] = mapped_column(String(16))
    old_user: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT)
    new_user: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT)
    actor: Mapped[str | None] = mapped_column(Text, comment=CIPHERTEXT + " (userId, userEmail)")
    vendor_timestamp: Mapped[dt.datetime]
    recorded_at: Mapped[dt.datetime]
    # Position in the app and tenant's chain (1 = first), the MAC and the id of its key.
    seq: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(64), comment=HISTORY_MAC)
    mac_key_id: Mapped[str] = mapped_column(String(32))


class HistoryVerification(Base):
    """The last result of verifying the history's MAC chains, per scope (all, app, app/tenant),
    and when a run of that scope last passed: a failure stays open until then."""

    __tablename__ = "history_verifications"

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    verified_at: Mapped[dt.datetime]
    ok: Mapped[bool]
    entries: Mapped[int] = mapped_column(Integer)
    chains: Mapped[int] = mapped_column(Integer)
    finding: Mapped[str | None] = mapped_column(Text)
    passed_at: Mapped[dt.datetime | None]
    missing_key_id: Mapped[str | None] = mapped_column(String(32))  # the failure's cause, if so


class ProcessedRequest(Base):
    """Vendor request ids already applied: the dedupe guard, inserted in the same transaction."""

    __tablename__ = "processed_requests"

    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(index=True)  # swept after the dedupe window


class CallbackRejection(Base):
    """Rejected callbacks counted per hour, app slug and reason (never the body)."""

    __tablename__ = "callback_rejections"

    hour: Mapped[dt.datetime] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    last_remote: Mapped[str | None] = mapped_column(String(64))


class ServiceKey(Base):
    __tablename__ = "service_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, comment="sha256 of the key")
    role: Mapped[str] = mapped_column(String(16))
    apps: Mapped[list[str]] = mapped_column(JSON, default=list)
    tenants: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]


class Issuer(Base):
    """An identity provider whose JWTs the operator trusts (workload identity)."""

    __tablename__ = "issuers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)  # the exact `iss`
    audience: Mapped[str] = mapped_column(String(512))
    jwks_url: Mapped[str | None] = mapped_column(String(2048))  # None: OIDC discovery
    ca_pem: Mapped[str | None] = mapped_column(Text)  # a private CA's certificates (public)
    created_at: Mapped[dt.datetime]
    # JWKS health, written when a process fetches the key set (at most once a minute each).
    jwks_fetched_at: Mapped[dt.datetime | None]
    jwks_key_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    jwks_error: Mapped[str | None] = mapped_column(String(256))
    jwks_error_at: Mapped[dt.datetime | None]


class Identity(Base):
    """A workload known by (issuer, subject), with the same grants as a key."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("issuer_id", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("issuers.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(1024))
    role: Mapped[str] = mapped_column(String(16))
    apps: Mapped[list[str]] = mapped_column(JSON, default=list)
    tenants: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime]
    last_used_at: Mapped[dt.datetime | None]


class CachedToken(Base):
    """The shared (second-level) token cache."""

    __tablename__ = "token_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    tenant: Mapped[str | None] = mapped_column(String(128))
    delegation_version: Mapped[int] = mapped_column(Integer, default=0)
    scope: Mapped[str] = mapped_column(Text, default="")
    access_token: Mapped[str] = mapped_column(Text, comment=CIPHERTEXT)
    token_type: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)  # expired rows are swept by it
    obtained_at: Mapped[dt.datetime]
    # The last stale_token eviction of this key: another is refused for ``cache.EVICT_EVERY``.
    evicted_at: Mapped[dt.datetime | None]


class UpstreamHealth(Base):
    __tablename__ = "upstream_health"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_success_at: Mapped[dt.datetime | None]
    last_error_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(64))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    circuit_open_until: Mapped[dt.datetime | None]
    latencies_ms: Mapped[list[float]] = mapped_column(JSON, default=list)


class TokenHealth(Base):
    """Per app and tenant: how its last requests to the token endpoint went.

    Written only when a request reaches the token endpoint or is refused before it (open
    circuit), never on a cache hit. ``tenant_key`` is the tenant id of a delegation app, the tenant
    name of a client-credentials app whose token URL names one, else "".
    """

    __tablename__ = "token_health"
    __table_args__ = (Index("ix_token_health_failing", "failing_since"),)

    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    tenant_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(128))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    last_success_at: Mapped[dt.datetime | None]
    last_failure_at: Mapped[dt.datetime | None]
    last_failure_reason: Mapped[str | None] = mapped_column(String(64))
    last_failure_detail: Mapped[str | None] = mapped_column(String(64))
    last_failure_status: Mapped[int | None] = mapped_column(Integer)
    failing_since: Mapped[dt.datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # Whether tenant.token_failing went out for the current failure (see vault/upstream/token_health.py).
    failing_notified: Mapped[bool] = mapped_column(Boolean, default=False)


class RecentRejection(Base):
    """The last few rejected callbacks, one row each (slug as sent, cut and made printable), kept
    apart by whether the signature verified: unsigned noise cannot push genuine ones out."""

    __tablename__ = "recent_rejections"
    __table_args__ = (Index("ix_recent_rejections_signed", "signed", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime]
    slug: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    remote: Mapped[str | None] = mapped_column(String(64))
    signed: Mapped[bool] = mapped_column(default=False)  # the signature verified, then refused
    peer: Mapped[str | None] = mapped_column(String(64))  # the proxy that told ``remote``


class RejectionSource(Base):
    """Rejected callbacks counted per hour, source (an address, an IPv6 /64) and whether signed;
    at most ``rejections.SOURCES_PER_HOUR`` sources an hour, the rest as "(others)"."""

    __tablename__ = "rejection_sources"

    hour: Mapped[dt.datetime] = mapped_column(primary_key=True)
    signed: Mapped[bool] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class Notification(Base):
    """The outbox: one row per change of state worth telling, written in the transaction that
    made the change, delivered later by whichever process holds the ``notify`` lease."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_pending", "state", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True, comment="webhook-id")
    type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text, comment="the JSON body as sent: no secret, no user id")
    state: Mapped[str] = mapped_column(String(16))  # pending, delivered, dropped
    created_at: Mapped[dt.datetime]
    next_attempt_at: Mapped[dt.datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(64))
    done_at: Mapped[dt.datetime | None]


class Lease(Base):
    """A named lease: at most one holder until it expires (one notification sender at a time)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    until: Mapped[dt.datetime]


class Invalidation(Base):
    """A binding write's invalidation, in commit order: what cache holders replay (vault/freshness)."""

    __tablename__ = "freshness_invalidations"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    ident: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime]


class CacheLease(Base):
    """A process's lease on serving from memory: renewed while it hears the database."""

    __tablename__ = "freshness_leases"

    holder: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[dt.datetime]
    acked: Mapped[int] = mapped_column(BigInteger)  # the last invalidation it applied


class UpstreamThrottle(Base):
    """A token endpoint's 429 for one app and tenant: no call for that target until ``until``."""

    __tablename__ = "upstream_throttles"

    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)  # "" for no tenant
    host: Mapped[str] = mapped_column(String(255))
    until: Mapped[dt.datetime]


class KeyCheck(Base):
    """One value per key id that only that key decrypts: detects a wrong keyring at start-up."""

    __tablename__ = "key_checks"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text, comment=CIPHERTEXT + " (a constant)")
    created_at: Mapped[dt.datetime]


# (table, column) pairs that hold ciphertext, for re-encryption and status.
ENCRYPTED_COLUMNS: tuple[tuple[type[Base], str], ...] = (
    (App, "client_secret"),
    (App, "client_secret_previous"),
    (App, "signing_secret"),
    (App, "signing_secret_previous"),
    (Delegation, "delegation_user_id"),
    (DelegationHistory, "old_user"),
    (DelegationHistory, "new_user"),
    (DelegationHistory, "actor"),
    (CachedToken, "access_token"),
)
