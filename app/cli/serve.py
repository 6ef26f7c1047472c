"""`serve`: the service under gunicorn."""

from __future__ import annotations

import os

import click

from app.cli.common import note, open_runtime
from vault import tracing
from vault.errors import KeyringError
from vault.keyring import gaps as keyring_gaps
from vault.runtime import Runtime
from vault.settings import Settings


@click.command()
@click.option(
    "--bind",
    help="HOST:PORT (default: $PORT, 8000 if unset, on 0.0.0.0 in production, 127.0.0.1 otherwise)",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="default: $WEB_CONCURRENCY or 2"
)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
def serve(bind: str | None, workers: int | None, threads: int) -> None:
    """Run the service under gunicorn.

    Settings come from the environment: development defaults (a SQLite database and a key file
    in the instance folder, created on first start; loopback only) unless DV_ENV=production,
    which refuses to start without a keyring (DV_KEYS or DV_KEYS_FILE) and listens on every
    interface.
    """
    from app import server

    settings = Settings.from_env()
    tracing.check()  # an OTLP endpoint without the exporter installed: say so before the fork
    runtime = open_runtime(settings)  # refuse early: no key, old schema, wrong keyring
    try:
        _check_key_ids(runtime)
    finally:
        runtime.engine.dispose()
    # Every interface is the contract's production bind; a development vault (a generated key
    # beside its database) listens on loopback only.
    everywhere = "0.0.0.0"  # noqa: S104  # nosec B104
    host = everywhere if settings.production else "127.0.0.1"
    bind = bind or f"{host}:{settings.port}"
    workers = workers or int(os.environ.get("WEB_CONCURRENCY", "2"))
    # Workers take the keyring unwrapped here: an HSM or KMS is asked once, before the fork.
    server.run(settings, bind=bind, workers=workers, threads=threads, keyring=runtime.keyring)


def _check_key_ids(runtime: Runtime) -> None:
    """Production never serves while stored values wait on a key id the keyring lacks."""
    with runtime.session() as session:
        problem = keyring_gaps.incomplete(session, runtime.keyring)
    if problem and runtime.settings.production:
        raise KeyringError(f"refusing to start: {problem}")
    if problem:
        note(f"warning: {problem}; requests that need those values answer 503")
