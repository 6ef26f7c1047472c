"""`delegations`: stored delegations and their history."""

from __future__ import annotations

import click

from app.cli.common import NON_EMPTY, fail, json_option, listing, session_for, when
from vault.apps import delegations
from vault.apps import registry as apps
from vault.history import verification


@click.group("delegations")
def delegations_group() -> None:
    """Stored delegations (user ids masked)."""


@delegations_group.command("list")
@click.option("--app", "slug", type=NON_EMPTY, help="only this app")
@json_option
def delegations_list(slug: str | None, as_json: bool) -> None:
    """Delegations by app and tenant."""
    with session_for() as (rt, session):
        if slug:
            apps.get_app(session, slug)
        rows = [
            (v.app, v.tenant, v.tenant_id, v.state, delegations.mask(v.delegation_user_id),
             when(v.updated_at), v.last_callback_result)
            for v in delegations.list_views(session, rt.keyring, slug)
        ]  # fmt: skip
    headers = ["app", "tenant", "tenant id", "state", "delegated user", "updated", "last callback"]
    listing(headers, rows, as_json)


@delegations_group.command("history")
@click.argument("slug")
@click.argument("tenant", type=NON_EMPTY)
@json_option
def delegations_history(slug: str, tenant: str, as_json: bool) -> None:
    """Every recorded callback for one tenant, oldest first."""
    mask = delegations.mask
    with session_for() as (rt, session):
        entries = delegations.history(session, rt.keyring, apps.get_app(session, slug), tenant)
        rows = [
            (when(e.recorded_at), e.request_id, e.event, e.outcome,
             e.old_state, e.new_state, mask(e.old_user), mask(e.new_user))
            for e in entries
        ]  # fmt: skip
    if not rows:
        fail(f"no history for tenant {tenant!r} of app {slug!r}")
    if as_json:
        headers = ["recorded", "request id", "event", "outcome", "old state", "new state",
                   "old delegated user", "new delegated user"]  # fmt: skip
        listing(headers, rows, as_json)
        return
    arrows = [
        (*r[:4], f"{r[4] or '-'} -> {r[5] or '-'}", f"{r[6] or '-'} -> {r[7] or '-'}") for r in rows
    ]
    listing(
        ["recorded", "request id", "event", "outcome", "state", "delegated user"], arrows, False
    )


@delegations_group.command("verify")
@click.argument("slug", required=False)
@click.argument("tenant", required=False)
def delegations_verify(slug: str | None, tenant: str | None) -> None:
    """Check the history's MAC chains; name the first entry altered, removed, inserted or reordered.

    Reads the service's keyring settings (DV_KEYS, DV_KEYS_FILE or the development key file): an
    entry under a key id this keyring lacks is reported as such, and the status page keeps a
    failure until a run of the same or a wider scope passes.
    """
    with session_for() as (rt, session):
        result = verification.verify_and_record(session, rt.keyring, rt.clock(), slug, tenant)
    if result.finding:
        fail(f"history verification failed: {result.finding}")
    click.echo(
        f"verified {result.entries} history entries in {result.chains} chains ({result.scope})"
    )
