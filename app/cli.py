"""The ``delegation-vault`` command: parse, call vault, print. Secrets come from stdin, never argv.

Exit codes: 0 success, 1 operational failure (one line on standard error), 2 usage error.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault import apps, delegations, keys, migrate, rotation
from vault.clock import iso
from vault.crypto import new_key_entry
from vault.db import make_engine, writing
from vault.errors import OperationalError, VaultError
from vault.models import Grant, Role
from vault.runtime import Runtime, ensure_key_check, migrations_problem
from vault.settings import Settings
from vault.signatures import sign as sign_body


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class Commands(click.Group):
    """Turns expected failures into one line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VaultError as exc:
            fail(exc.reason.replace("_", " "))
        except OperationalError as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            # Never the exception text: it can hold the connection string or bound values.
            fail(f"database error ({type(exc).__name__}); is DATABASE_URL right and reachable?")


# -- set-up ------------------------------------------------------------------------------------


def open_runtime(settings: Settings | None = None) -> Runtime:
    """The runtime for a command. In development, a missing key and database are created."""
    settings = settings or Settings.from_env()
    runtime = Runtime.build(settings, create_key=not settings.production)
    problem = migrations_problem(runtime.engine)
    if problem and settings.production:
        raise OperationalError(problem)
    if problem:
        fresh = migrate.current_revision(runtime.engine) is None
        migrate.upgrade(runtime.engine)
        note(f"{'created' if fresh else 'upgraded'} the database ({_where(settings)})")
    ensure_key_check(runtime)
    return runtime


def _where(settings: Settings) -> str:
    url = settings.database_url
    return url.split("///", 1)[1] if url.startswith("sqlite:///") else "DATABASE_URL"


@contextmanager
def session_for(write: bool = False) -> Iterator[tuple[Runtime, Session]]:
    runtime = open_runtime()
    try:
        with runtime.session() as session:
            if write:
                with writing(session):
                    yield runtime, session
            else:
                yield runtime, session
    finally:
        runtime.engine.dispose()


def note(message: str) -> None:
    click.echo(message, err=True)


def read_secrets(*names: str) -> list[str]:
    """One secret per line from standard input, or hidden prompts on a terminal."""
    if sys.stdin.isatty():
        return [getpass.getpass(f"{name}: ") for name in names]
    values = []
    for name in names:
        line = sys.stdin.readline()
        if not line.strip():
            fail(f"expected the {name} on line {len(values) + 1} of standard input")
        values.append(line.rstrip("\r\n"))
    return values


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    for row in [list(headers), *text]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def when(value: dt.datetime | None) -> str | None:
    return iso(value.replace(microsecond=0)) if value else None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Delegation Vault: Seismic delegations, kept encrypted, exchanged for access tokens."""


# -- serve and db ------------------------------------------------------------------------------


@cli.command()
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


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Run migrations to the newest schema."""
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        note(f"schema at {migrate.current_revision(engine)} (was {before or 'empty'})")
    finally:
        engine.dispose()


# -- apps --------------------------------------------------------------------------------------


@cli.group("apps")
def apps_group() -> None:
    """Registered apps and their secrets."""


@apps_group.command("add")
@click.argument("slug")
@click.option("--vendor-app-id", help="Seismic's app id (required for delegation apps)")
@click.option("--client-id", required=True)
@click.option("--token-url", default=apps.SEISMIC_TOKEN_URL, show_default=True)
@click.option(
    "--grant",
    type=click.Choice([g.value for g in Grant]),
    default=Grant.DELEGATION.value,
    show_default=True,
)
@click.option(
    "--auth-method",
    type=click.Choice(apps.AUTH_METHODS),
    default="client_secret_post",
    show_default=True,
)
@click.option("--scope", default="", help="default scope, space separated")
@click.option("--allowed-scopes", default="", help="scopes callers may ask for (empty: any)")
def apps_add(slug: str, **options: str) -> None:
    """Register an app; reads the client secret, then the signing secret, from standard input."""
    spec = apps.AppSpec(slug=slug, **options)
    wanted = ["client secret"] + (["signing secret"] if spec.grant == Grant.DELEGATION else [])
    secrets = read_secrets(*wanted)
    with session_for(write=True) as (rt, session):
        apps.add_app(
            session, rt.keyring, spec, secrets[0], secrets[1] if len(secrets) > 1 else None,
            rt.clock(), allow_http=rt.settings.allow_http_token_urls,
        )  # fmt: skip
    note(f"registered app {slug!r}")


@apps_group.command("list")
def apps_list() -> None:
    """Registered apps."""
    with session_for() as (_rt, session):
        rows = [(a.slug, a.grant, a.client_id, a.token_url) for a in apps.list_apps(session)]
    table(["slug", "grant", "client id", "token url"], rows)


@apps_group.command("show")
@click.argument("slug")
def apps_show(slug: str) -> None:
    """One app's settings (never its secrets)."""
    with session_for() as (rt, session):
        app = apps.get_app(session, slug)
        previous_valid = (
            app.signing_previous_expires_at and app.signing_previous_expires_at > rt.clock()
        )
        fields = [
            ("slug", app.slug),
            ("vendor app id", app.vendor_app_id),
            ("client id", app.client_id),
            ("token url", app.token_url),
            ("grant", app.grant),
            ("auth method", app.auth_method),
            ("default scope", app.default_scope),
            ("allowed scopes", app.allowed_scopes),
            ("client secret set", when(app.client_secret_set_at)),
            ("previous client secret", "kept" if app.client_secret_previous else None),
            ("signing secret set", when(app.signing_secret_set_at)),
            (
                "previous signing secret until",
                when(app.signing_previous_expires_at) if previous_valid else None,
            ),
        ]
    table(["field", "value"], fields)


@apps_group.command("remove")
@click.argument("slug")
def apps_remove(slug: str) -> None:
    """Delete an app with its delegations, history and cached tokens."""
    with session_for(write=True) as (_rt, session):
        apps.remove_app(session, slug)
    note(f"removed app {slug!r}")


@apps_group.command("rotate-signing-secret")
@click.argument("slug")
@click.option(
    "--keep-previous-hours", type=click.IntRange(0, 24 * 30), default=24, show_default=True
)
def apps_rotate_signing_secret(slug: str, keep_previous_hours: int) -> None:
    """Install a new signing secret (from stdin); the old one verifies for N more hours."""
    (secret,) = read_secrets("new signing secret")
    with session_for(write=True) as (rt, session):
        app = apps.get_app(session, slug)
        keep = dt.timedelta(hours=keep_previous_hours)
        apps.rotate_signing_secret(rt.keyring, app, secret, keep, rt.clock())
    note(f"new signing secret for {slug!r}; the previous one verifies for {keep_previous_hours} h")


@apps_group.command("set-client-secret")
@click.argument("slug")
@click.option("--drop-previous", is_flag=True, help="forget the previous client secret")
def apps_set_client_secret(slug: str, drop_previous: bool) -> None:
    """Install a new client secret (from stdin); the previous one is tried on invalid_client."""
    (secret,) = read_secrets("new client secret")
    with session_for(write=True) as (rt, session):
        app = apps.get_app(session, slug)
        apps.set_client_secret(rt.keyring, app, secret, rt.clock(), drop_previous=drop_previous)
    note(f"new client secret for {slug!r}" + ("; previous one dropped" if drop_previous else ""))


# -- keys --------------------------------------------------------------------------------------


@cli.group("keys")
def keys_group() -> None:
    """Service and operator keys."""


@keys_group.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.SERVICE.value,
    show_default=True,
)
@click.option("--app", "app_slugs", multiple=True, help="limit to this app (repeatable)")
@click.option("--tenant", "tenants", multiple=True, help="limit to this tenant (repeatable)")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None)
def keys_create(
    name: str,
    role: str,
    app_slugs: tuple[str, ...],
    tenants: tuple[str, ...],
    expires_days: int | None,
) -> None:
    """Create a key and print it once, alone on standard output."""
    with session_for(write=True) as (rt, session):
        for slug in app_slugs:
            apps.get_app(session, slug)
        presented = keys.create_key(
            session, name, role, list(app_slugs), list(tenants), rt.clock(), expires_days
        )
    note(f"created {role} key {name!r}; it is shown once, store it now")
    click.echo(presented)


@keys_group.command("list")
def keys_list() -> None:
    """Keys (names, roles and limits; never the keys)."""
    with session_for() as (_rt, session):
        rows = [
            (k.name, k.role, ",".join(k.apps) or "all", ",".join(k.tenants) or "all",
             when(k.expires_at), when(k.last_used_at), "revoked" if k.revoked_at else "active")
            for k in keys.list_keys(session)
        ]  # fmt: skip
    table(["name", "role", "apps", "tenants", "expires", "last used", "state"], rows)


@keys_group.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key; it stops working on the next request."""
    with session_for(write=True) as (rt, session):
        keys.revoke_key(session, name, rt.clock())
    note(f"revoked key {name!r}")


# -- delegations -------------------------------------------------------------------------------


@cli.group("delegations")
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


# -- crypto ------------------------------------------------------------------------------------


@cli.group("crypto")
def crypto_group() -> None:
    """The keyring."""


@crypto_group.command("new-key")
@click.option("--key-id", default=None, help="default: k<random hex>")
def crypto_new_key(key_id: str | None) -> None:
    """Print a fresh keyring entry (kid:base64); put it first in DV_KEYS to make it primary."""
    click.echo(new_key_entry(key_id))


@crypto_group.command("status")
def crypto_status() -> None:
    """Rows per key id in every encrypted column."""
    with session_for() as (rt, session):
        counts = rotation.status(session)
        primary, known = rt.keyring.primary_id, set(rt.keyring.key_ids)
    table(
        ["table", "column", "key id", "rows", "note"],
        [
            (c.table, c.column, c.key_id, c.rows,
             "primary" if c.key_id == primary else ("old key" if c.key_id in known else "NOT IN KEYRING"))
            for c in counts
        ],
    )  # fmt: skip


@crypto_group.command("reencrypt")
@click.option("--batch", type=click.IntRange(1, 100_000), default=500, show_default=True)
def crypto_reencrypt(batch: int) -> None:
    """Move every stored value to the primary key, in batches; run again to resume."""
    with session_for() as (rt, session):
        progress = rotation.reencrypt(session, rt.keyring, batch)
        left = {
            k: n for k, n in rotation.rows_per_key(session).items() if k != rt.keyring.primary_id
        }
    note(
        f"moved {progress.moved} values to key {rt.keyring.primary_id!r} ({progress.skipped} changed meanwhile)"
    )
    if left:
        fail(f"values remain under other keys: {left}; run again")


# -- sign --------------------------------------------------------------------------------------


@cli.command()
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


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="delegation-vault")
