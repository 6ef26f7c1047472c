"""An app's credential at the token endpoint given in a file (private_key_jwt, tls_client_auth),
and `apps test`, which asks the token endpoint for a token now."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from app.cli.common import fail, session_for
from vault.tokens import probe
from vault.upstream.client import Upstream

MAX_FILE = 64 * 1024  # far above any PEM key or certificate chain
FILE_FLAG = {"private_key_jwt": "--private-key-file", "tls_client_auth": "--client-cert-file"}
Command = TypeVar("Command", bound=Callable[..., Any])
PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def credential_options(command: Command) -> Command:
    """--private-key-file, --key-id and --client-cert-file, for the auth methods that take them."""
    for option in (
        click.option(
            "--client-cert-file", type=PEM_FILE,
            help="tls_client_auth: PEM certificate chain and private key (stored encrypted; the path is not kept)",
        ),
        click.option("--key-id", default=None, help="private_key_jwt: the key's kid, sent in the JWT header"),
        click.option(
            "--private-key-file", type=PEM_FILE,
            help="private_key_jwt: PEM private key, RSA or EC P-256 (stored encrypted; the path is not kept)",
        ),
    ):  # fmt: skip
        command = option(command)
    return command


def credential_from_files(
    method: str, private_key_file: Path | None, client_cert_file: Path | None, key_id: str | None
) -> str | None:
    """The credential in the file ``method`` takes; None for the methods whose secret is read
    from standard input. A file or key id that does not go with ``method`` is a usage error."""
    given = {"--private-key-file": private_key_file, "--client-cert-file": client_cert_file}
    wanted = FILE_FLAG.get(method)
    for flag, path in given.items():
        if path is not None and flag != wanted:
            raise click.UsageError(f"{flag} does not go with auth method {method}")
    if key_id is not None and method != "private_key_jwt":
        raise click.UsageError("--key-id goes with auth method private_key_jwt only")
    if wanted is None:
        return None
    path = given[wanted]
    if path is None:
        raise click.UsageError(f"auth method {method} needs {wanted}")
    return _read(path)


def _read(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        fail(f"{path.name} is larger than {MAX_FILE // 1024} KiB; a PEM file is far smaller")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        fail(f"{path.name} is not a PEM file (PEM is ASCII text)")


@click.command("test")
@click.argument("slug")
@click.option("--tenant", help="the tenant to ask a token for (delegation apps, {tenant} URLs)")
@click.option("--scope", default=None, help="scope to ask for (default: the app's default scope)")
def apps_test(slug: str, tenant: str | None, scope: str | None) -> None:
    """Ask the token endpoint for a token now (not from the cache); never prints the token.

    Exit 0 when a token came back, 1 otherwise, saying what to do about it.
    """
    with session_for() as (rt, session), Upstream(rt.settings) as upstream:
        outcome = probe.check_app(session, rt, upstream, slug, tenant, scope)
    if not outcome.ok:
        status = f" (HTTP {outcome.status})" if outcome.status else ""
        fail(f"no token: {outcome.error}{status}; {outcome.advice}")
    click.echo(
        f"ok: the token endpoint issued a token for {slug!r}"
        + (f", tenant {tenant!r}" if tenant else "")
    )
    click.echo(f"lifetime: {outcome.expires_in} s")
    click.echo(f"scope: {outcome.scope or '(none)'}")
    if outcome.advice:
        click.echo(f"note: {outcome.advice}")
