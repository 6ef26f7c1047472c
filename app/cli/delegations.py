"""`delegations`: stored delegations and their history."""

from __future__ import annotations

import click

from app.cli.common import fail, session_for, table, when
from vault import apps, delegations


@click.group("delegations")
def delegations_group() -> None:
    """Stored delegations (user ids masked)."""


@delegations_group.command("list")
@click.option("--app", "slug", help="only this app")
def delegations_list(slug: str | None) -> None:
    """Delegations by app and tenant."""
    with session_for() as (rt, session):
        if slug:
            apps.get_app(session, slug)
        rows = [
            (v.app, v.tenant, v.tenant_id, v.state, delegations.mask(v.delegation_user_id),
             when(v.updated_at), v.last_callback_result)
            for v in delegations.list_views(session, rt.keyring, slug)
        ]  # fmt: skip
    table(
        ["app", "tenant", "tenant id", "state", "delegated user", "updated", "last callback"], rows
    )


@delegations_group.command("history")
@click.argument("slug")
@click.argument("tenant")
def delegations_history(slug: str, tenant: str) -> None:
    """Every recorded callback for one tenant, oldest first."""
    with session_for() as (rt, session):
        entries = delegations.history(session, rt.keyring, apps.get_app(session, slug), tenant)
        rows = [
            (when(e.recorded_at), e.request_id, e.event, e.outcome,
             f"{e.old_state or '-'} -> {e.new_state or '-'}",
             f"{delegations.mask(e.old_user) or '-'} -> {delegations.mask(e.new_user) or '-'}")
            for e in entries
        ]  # fmt: skip
    if not rows:
        fail(f"no history for tenant {tenant!r} of app {slug!r}")
    table(["recorded", "request id", "event", "outcome", "state", "delegated user"], rows)
