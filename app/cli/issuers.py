"""`issuers`: identity providers whose JWTs the vault trusts (workload identity)."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import json_option, listing, note, session_for, when, writing_session
from vault.callers import issuers
from vault.errors import BadValue


@click.group("issuers")
def issuers_group() -> None:
    """Trusted JWT issuers (Kubernetes, SPIFFE, OIDC providers)."""


@issuers_group.command("add")
@click.argument("name")
@click.option("--url", required=True, help="the issuer, exactly as its tokens' iss claim says")
@click.option("--audience", default=issuers.DEFAULT_AUDIENCE, show_default=True)
@click.option("--jwks-url", default=None, help="the key set's URL (default: OIDC discovery)")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM file of the CA that signs the issuer's TLS certificate",
)
def issuers_add(
    name: str, url: str, audience: str, jwks_url: str | None, ca_file: Path | None
) -> None:
    """Trust an issuer's JWTs; an identity names which of its subjects may call."""
    ca_pem = _read_ca(ca_file) if ca_file is not None else None
    with writing_session() as (rt, session):
        issuers.add_issuer(
            session, name, url, rt.clock(), audience=audience, jwks_url=jwks_url,
            ca_pem=ca_pem, allow_http=rt.settings.allow_http_token_urls,
        )  # fmt: skip
    note(f"added issuer {name!r}; add identities for its subjects with 'identities add'")


def _read_ca(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise BadValue("--ca-file", "cannot be read as a PEM file") from None


@issuers_group.command("list")
@json_option
def issuers_list(as_json: bool) -> None:
    """Issuers and the health of their key sets."""
    with session_for() as (_rt, session):
        rows = [
            (i.name, i.url, i.audience, i.jwks_url or "discovery", bool(i.ca_pem),
             when(i.jwks_fetched_at), list(i.jwks_key_ids) if as_json else ",".join(i.jwks_key_ids),
             i.jwks_error)
            for i in issuers.list_issuers(session)
        ]  # fmt: skip
    headers = ["name", "url", "audience", "jwks", "private ca", "fetched", "key ids", "error"]
    listing(headers, rows, as_json)


@issuers_group.command("remove")
@click.argument("name")
def issuers_remove(name: str) -> None:
    """Stop trusting an issuer, and remove its identities; binds the next request."""
    with writing_session() as (_rt, session):
        gone = issuers.remove_issuer(session, name)
    note(f"removed issuer {name!r} and {gone} identit{'y' if gone == 1 else 'ies'}")
