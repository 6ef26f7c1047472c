"""`sign`: the x-seismic-signature of a body, to test a callback set-up by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.cli.common import fail
from vault.callbacks.signatures import sign as sign_body


@click.command()
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
def sign(file: Path | None) -> None:
    """Print the x-seismic-signature of FILE (or of the rest of stdin); the secret is stdin's first line."""
    stdin = sys.stdin.buffer
    secret = stdin.readline().rstrip(b"\r\n")
    if not secret:
        fail("expected the signing secret on the first line of standard input")
    body = file.read_bytes() if file else stdin.read()
    click.echo(sign_body(secret, body))
