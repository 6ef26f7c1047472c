"""`identities`: workloads that prove who they are with a trusted issuer's JWT."""

from __future__ import annotations

import click

from app.cli.common import json_option, listing, note, session_for, when, writing_session
from app.cli.keys import grants, limits
from vault.apps import registry as apps
from vault.callers import identities


@click.group("identities")
def identities_group() -> None:
    """Workload identities: an issuer's subject with the grants of a key."""


@identities_group.command("add")
@click.argument("name")
@click.option("--issuer", required=True, help="the issuer's name (see 'issuers list')")
@click.option("--subject", required=True, help="the tokens' sub claim, exactly")
@grants
def identities_add(
    name: str,
    issuer: str,
    subject: str,
    role: str,
    app_slugs: tuple[str, ...],
    tenants: tuple[str, ...],
) -> None:
    """Let an issuer's subject call with these grants."""
    with writing_session() as (rt, session):
        for slug in app_slugs:
            apps.get_app(session, slug)
        identities.add_identity(
            session, name, issuer, subject, role, list(app_slugs), list(tenants), rt.clock()
        )
    note(f"added {role} identity {name!r}")


@identities_group.command("list")
@json_option
def identities_list(as_json: bool) -> None:
    """Identities (issuer, subject, role and limits)."""
    with session_for() as (_rt, session):
        rows = [
            (i.name, issuer, i.subject, i.role, limits(i.apps, as_json),
             limits(i.tenants, as_json), when(i.last_used_at))
            for i, issuer in identities.list_identities(session)
        ]  # fmt: skip
    headers = ["name", "issuer", "subject", "role", "apps", "tenants", "last used"]
    listing(headers, rows, as_json)


@identities_group.command("remove")
@click.argument("name")
def identities_remove(name: str) -> None:
    """Remove an identity; it stops working on the next request."""
    with writing_session() as (_rt, session):
        identities.remove_identity(session, name)
    note(f"removed identity {name!r}")
