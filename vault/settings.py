"""Configuration: the one place that reads the environment."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from vault.errors import ConfigError

# Hosts where DV_ALLOW_HTTP_TOKEN_URLS may allow plain http (token endpoints, issuers, the sandbox).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")  # what the install ships


def default_instance() -> Path:
    """The instance folder: ``instance/`` in a checkout, else under the environment's prefix.

    Flask's rule, so the development database and key stay in one place whatever directory a
    command is run from.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return root / "instance"
    return Path(sys.prefix) / "var" / "delegation-vault-instance"


def sqlite_in(instance: Path) -> str:
    """The contract's default ``sqlite:///instance/vault.db``: vault.db in the instance folder."""
    return f"sqlite:///{instance / 'vault.db'}"


DEFAULT_INSTANCE = default_instance()
DEFAULT_DATABASE_URL = sqlite_in(DEFAULT_INSTANCE)


def _int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def normalise_database_url(url: str) -> str:
    """Accept Heroku-style ``postgres://`` and pick the psycopg 3 driver for PostgreSQL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        driver = make_url(url).drivername
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a database URL") from None  # never echo it
    if driver not in DRIVERS:
        raise ConfigError(
            f"DATABASE_URL names an unsupported database driver {driver!r}; "
            "use sqlite:///PATH or postgresql://USER@HOST/NAME"
        )
    return url


WRAPPING_NEEDS = {
    "none": (),
    "pkcs11": ("DV_PKCS11_MODULE", "DV_PKCS11_TOKEN", "DV_PKCS11_KEY"),
    "aws-kms": ("DV_KMS_KEY_ID",),
}


def _key_wrapping(environ: Mapping[str, str]) -> dict[str, Any]:
    """DV_KEY_WRAPPING and what the chosen wrapper needs (see vault/keyring/wrapping.py)."""
    mode = environ.get("DV_KEY_WRAPPING", "").strip() or "none"
    if mode not in WRAPPING_NEEDS:
        raise ConfigError("DV_KEY_WRAPPING must be 'none', 'pkcs11' or 'aws-kms'")
    missing = [name for name in WRAPPING_NEEDS[mode] if not environ.get(name, "").strip()]
    if mode == "pkcs11" and not (environ.get("DV_PKCS11_PIN") or environ.get("DV_PKCS11_PIN_FILE")):
        missing.append("DV_PKCS11_PIN or DV_PKCS11_PIN_FILE")
    if missing:
        raise ConfigError(f"DV_KEY_WRAPPING={mode} needs {', '.join(missing)}")
    found = {
        name.lower()[3:]: environ.get(name, "").strip() or None
        for name in (
            "DV_PKCS11_MODULE",
            "DV_PKCS11_TOKEN",
            "DV_PKCS11_KEY",
            "DV_PKCS11_PIN_FILE",
            "DV_KMS_KEY_ID",
        )
    }
    return {"key_wrapping": mode, "pkcs11_pin": environ.get("DV_PKCS11_PIN") or None, **found}


def _notify(environ: Mapping[str, str], production: bool) -> dict[str, Any]:
    """DV_NOTIFY_URL and its Standard Webhooks secret (whsec_ + base64 of 24 to 64 bytes)."""
    url = environ.get("DV_NOTIFY_URL", "").strip() or None
    secret = environ.get("DV_NOTIFY_SECRET", "").strip() or None
    if url is None:
        return {"notify_url": None, "notify_secret": None}
    schemes = ("https://",) if production else ("https://", "http://")
    if not url.startswith(schemes) or any(c.isspace() for c in url):
        raise ConfigError("DV_NOTIFY_URL must be an https:// URL (http:// outside production)")
    if secret is None:
        raise ConfigError("DV_NOTIFY_URL needs DV_NOTIFY_SECRET (whsec_ followed by base64)")
    try:
        size = len(base64.b64decode(secret.removeprefix("whsec_"), validate=True))
    except binascii.Error:
        size = 0
    if not secret.startswith("whsec_") or not 24 <= size <= 64:
        raise ConfigError("DV_NOTIFY_SECRET must be whsec_ followed by base64 of 24 to 64 bytes")
    return {"notify_url": url, "notify_secret": secret}


MAX_BODY = 64 * 1024  # the largest request body any route takes (413 above it)


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    env: str = "development"
    keys: str | None = None
    keys_file: str | None = None
    instance_path: Path = DEFAULT_INSTANCE
    port: int = 8000
    webhook_max_age: int = 120
    webhook_max_skew: int = 60
    dedupe_days: int = 7  # processed callback request ids are kept this long (DV_DEDUPE_DAYS)
    token_refresh_margin: int = 300
    token_default_ttl: int = 600
    upstream_max_attempts: int = 3
    upstream_timeout: float = 5.0
    db_timeout: float = 5.0  # seconds any wait on the database may last (DV_DB_TIMEOUT)
    partition_grace: float = 30.0  # seconds answered from memory after last hearing the database
    allow_http_token_urls: bool = False
    forwarded_allow_ips: str = "127.0.0.1"  # proxies whose X-Forwarded-For is believed
    metrics_public: bool = False
    log_format: str = "text"
    key_wrapping: str = "none"
    pkcs11_module: str | None = None
    pkcs11_token: str | None = None
    pkcs11_key: str | None = None
    pkcs11_pin: str | None = dataclasses.field(default=None, repr=False)
    pkcs11_pin_file: str | None = None
    kms_key_id: str | None = None
    notify_url: str | None = None  # a secret itself (a Slack webhook URL is): never logged
    notify_secret: str | None = None

    def __repr__(self) -> str:  # never print the notification URL or secret, or the PIN
        shown = dataclasses.replace(
            self, notify_url="(set)" if self.notify_url else None,
            notify_secret="(set)" if self.notify_secret else None,
            pkcs11_pin="(set)" if self.pkcs11_pin else None,
        )  # fmt: skip
        return (
            "Settings("
            + ", ".join(f"{f.name}={getattr(shown, f.name)!r}" for f in dataclasses.fields(shown))
            + ")"
        )

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every DV_* variable once."""
        env = os.environ if environ is None else environ
        mode = env.get("DV_ENV", "development").strip() or "development"
        if mode not in {"development", "production"}:
            raise ConfigError("DV_ENV must be 'development' or 'production'")
        production = mode == "production"
        allow_http = _flag(env, "DV_ALLOW_HTTP_TOKEN_URLS")
        if allow_http and production:
            raise ConfigError("DV_ALLOW_HTTP_TOKEN_URLS is never allowed in production")
        log_format = env.get("DV_LOG_FORMAT", "json" if production else "text").strip()
        if log_format not in {"json", "text"}:
            raise ConfigError("DV_LOG_FORMAT must be 'json' or 'text'")
        instance = Path(env.get("DV_INSTANCE_PATH", "").strip() or DEFAULT_INSTANCE).absolute()
        return cls(
            database_url=normalise_database_url(
                env.get("DATABASE_URL", "").strip() or sqlite_in(instance)
            ),
            env=mode,
            keys=env.get("DV_KEYS") or None,
            keys_file=env.get("DV_KEYS_FILE") or None,
            instance_path=instance,
            port=_int(env, "PORT", 8000, 1, 65535),
            webhook_max_age=_int(env, "DV_WEBHOOK_MAX_AGE", 120, 1, 86400),
            webhook_max_skew=_int(env, "DV_WEBHOOK_MAX_SKEW", 60, 0, 3600),
            dedupe_days=_int(env, "DV_DEDUPE_DAYS", 7, 1, 3650),
            token_refresh_margin=_int(env, "DV_TOKEN_REFRESH_MARGIN", 300, 0, 86400),
            token_default_ttl=_int(env, "DV_TOKEN_DEFAULT_TTL", 600, 1, 86400),
            upstream_max_attempts=_int(env, "DV_UPSTREAM_MAX_ATTEMPTS", 3, 1, 10),
            upstream_timeout=_float(env, "DV_UPSTREAM_TIMEOUT", 5.0, 0.05, 9.0),
            db_timeout=_float(env, "DV_DB_TIMEOUT", 5.0, 0.1, 300.0),
            partition_grace=_float(env, "DV_PARTITION_GRACE", 30.0, 0.0, 3600.0),
            allow_http_token_urls=allow_http,
            forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
            metrics_public=_flag(env, "DV_METRICS_PUBLIC"),
            log_format=log_format,
            **_key_wrapping(env),
            **_notify(env, production),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
