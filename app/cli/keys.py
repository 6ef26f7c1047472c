"""`keys`: service and operator keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from app.cli.common import NON_EMPTY, json_option, listing, note, session_for, when, writing_session
from vault.apps import registry as apps
from vault.callers import keys
from vault.models import Role

F = TypeVar("F", bound=Callable[..., Any])


def grants(command: F) -> F:
    """The grants a key or a workload identity carries: --role, --app..., --tenant..."""
    for option in reversed((
        click.option("--role", type=click.Choice([r.value for r in Role]),
                     default=Role.SERVICE.value, show_default=True),
        click.option("--app", "app_slugs", type=NON_EMPTY, multiple=True,
                     help="limit to this app (repeatable)"),
        click.option("--tenant", "tenants", type=NON_EMPTY, multiple=True,
                     help="limit to this tenant (repeatable)"),
    )):  # fmt: skip
        command = option(command)
    return command


@click.group("keys")
def keys_group() -> None:
    """Service and operator keys."""


@keys_group.command("create")
@click.argument("name")
@grants
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None)
def keys_create(
    name: str,
    role: str,
    app_slugs: tuple[str, ...],
    tenants: tuple[str, ...],
    expires_days: int | None,
) -> None:
    """Create a key and print it once, alone on standard output."""
    with writing_session() as (rt, session):
        for slug in app_slugs:
            apps.get_app(session, slug)
        presented = keys.create_key(
            session, name, role, list(app_slugs), list(tenants), rt.clock(), expires_days
        )
    note(f"created {role} key {name!r}; it is shown once, store it now")
    click.echo(presented)


@keys_group.command("list")
@json_option
def keys_list(as_json: bool) -> None:
    """Keys (names, roles and limits; never the keys)."""
    with session_for() as (_rt, session):
        rows = [
            (k.name, k.role, limits(k.apps, as_json), limits(k.tenants, as_json),
             when(k.expires_at), when(k.last_used_at), "revoked" if k.revoked_at else "active")
            for k in keys.list_keys(session)
        ]  # fmt: skip
    listing(["name", "role", "apps", "tenants", "expires", "last used", "state"], rows, as_json)


@keys_group.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key; it stops working on the next request."""
    with writing_session() as (rt, session):
        keys.revoke_key(session, name, rt.clock())
    note(f"revoked key {name!r}")


def limits(names: list[str], as_json: bool) -> list[str] | str:
    """JSON keeps the list (empty: no limit); the table says "all"."""
    return list(names) if as_json else ",".join(names) or "all"
