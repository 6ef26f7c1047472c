"""`serve`: the service under gunicorn."""

from __future__ import annotations

import os

import click

from app.cli.common import open_runtime
from vault.settings import Settings


@click.command()
@click.option("--bind", help="HOST:PORT (default 0.0.0.0:$PORT, PORT defaulting to 8000)")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="default: $WEB_CONCURRENCY or 2"
)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
def serve(bind: str | None, workers: int | None, threads: int) -> None:
    """Run the service under gunicorn with production settings."""
    from app import server

    settings = Settings.from_env()
    open_runtime(settings).engine.dispose()  # refuse early: no key, old schema, wrong keyring
    bind = bind or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
    workers = workers or int(os.environ.get("WEB_CONCURRENCY", "2"))
    server.run(settings, bind=bind, workers=workers, threads=threads)
