"""`apps`: registered apps and their secrets."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from app.cli.common import (
    NON_EMPTY,
    UsageFailure,
    fields,
    json_option,
    listing,
    note,
    read_secrets,
    session_for,
    when,
    writing_session,
)
from app.cli.credentials import credential_from_files, credential_options
from vault.apps import registry as apps
from vault.models import App, Grant
from vault.settings import Settings

ALLOWED_HELP = "scopes callers may ask for; '*' for any (default: the default scope)"


@click.group("apps")
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
@click.option("--allowed-scopes", default="", help=ALLOWED_HELP)
@credential_options
def apps_add(
    slug: str, private_key_file: Path | None, client_cert_file: Path | None, **options: str
) -> None:
    """Register an app; reads the client secret (unless a file holds the credential), then the
    signing secret, from standard input."""
    spec = apps.AppSpec(slug=slug, **options)
    # Usage errors before any secret is asked for.
    apps.validate_spec(spec, allow_http=Settings.from_env().allow_http_token_urls)
    credential = credential_from_files(
        spec.auth_method, private_key_file, client_cert_file, spec.key_id
    )
    wanted = ([] if credential else ["client secret"]) + (
        ["signing secret"] if spec.grant == Grant.DELEGATION else []
    )
    secrets = read_secrets(*wanted)
    if credential is None:
        credential = secrets.pop(0)
    with session_for(write=True) as (rt, session):
        apps.add_app(
            session, rt.keyring, spec, credential, secrets[0] if secrets else None,
            rt.clock(), allow_http=rt.settings.allow_http_token_urls,
        )  # fmt: skip
    note(f"registered app {slug!r}")


@apps_group.command("update")
@click.argument("slug")
@click.option("--token-url")
@click.option("--client-id", type=NON_EMPTY)
@click.option("--auth-method", type=click.Choice(apps.AUTH_METHODS))
@click.option("--scope", help="default scope, space separated")
@click.option("--allowed-scopes", help=ALLOWED_HELP)
@click.option("--vendor-app-id", type=NON_EMPTY)
@credential_options
def apps_update(
    slug: str,
    private_key_file: Path | None,
    key_id: str | None,
    client_cert_file: Path | None,
    **options: str | None,
) -> None:
    """Change what is given; the app's cached tokens go when a token request changes shape.

    A private key or client certificate file installs a new credential (the current one stays
    as the previous one while the auth method is the same)."""
    changes = apps.AppChanges(**options)
    files_given = private_key_file or client_cert_file or key_id
    if not files_given and not any(value is not None for value in options.values()):
        raise UsageFailure("nothing to change: give at least one option (see --help)")
    material = None
    if files_given:
        with session_for() as (_rt, session):
            method = options["auth_method"] or apps.get_app(session, slug).auth_method
        material = credential_from_files(method, private_key_file, client_cert_file, key_id)
    with session_for(write=True) as (rt, session):
        credential = None
        if material is not None:
            credential = apps.NewCredential(material, key_id, rt.keyring, rt.clock())
        changed = apps.update_app(
            session, slug, changes, allow_http=rt.settings.allow_http_token_urls,
            credential=credential,
        )  # fmt: skip
    if not changed:
        note(f"app {slug!r} unchanged")
        return
    dropped = apps.drops_tokens(changed)
    note(
        f"updated app {slug!r}: {', '.join(changed)}"
        + ("; cached tokens dropped" if dropped else "")
    )


@apps_group.command("list")
@json_option
def apps_list(as_json: bool) -> None:
    """Registered apps."""
    with session_for() as (_rt, session):
        rows = [(a.slug, a.grant, a.client_id, a.token_url) for a in apps.list_apps(session)]
    listing(["slug", "grant", "client id", "token url"], rows, as_json)


@apps_group.command("show")
@click.argument("slug")
@json_option
def apps_show(slug: str, as_json: bool) -> None:
    """One app's settings (never its secrets)."""
    with session_for() as (rt, session):
        pairs = _settings_of(apps.get_app(session, slug), rt.clock())
    fields(pairs, as_json)


def _settings_of(app: App, now: dt.datetime) -> list[tuple[str, object]]:
    previous_until = app.signing_previous_expires_at
    return [
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
        ("key id", app.client_key_id),
        ("client certificate expires", when(app.client_cert_expires_at)),
        ("signing secret set", when(app.signing_secret_set_at)),
        (
            "previous signing secret until",
            when(previous_until) if previous_until and previous_until > now else None,
        ),
    ]


@apps_group.command("remove")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="remove without asking (needed in scripts)")
def apps_remove(slug: str, yes: bool) -> None:
    """Delete an app with its delegations, history and cached tokens."""
    if not yes:
        _confirm_removal(slug)
    with session_for(write=True) as (_rt, session):
        apps.remove_app(session, slug)
    note(f"removed app {slug!r}")


def _confirm_removal(slug: str) -> None:
    if not sys.stdin.isatty():
        raise UsageFailure(
            f"removing app {slug!r} deletes its delegations and history; "
            "pass --yes when standard input is not a terminal"
        )
    with session_for() as (_rt, session):
        count = apps.delegation_count(session, slug)
    click.confirm(
        f"Remove app {slug!r} with its {count} delegation(s), their history and cached tokens?",
        abort=True,
        err=True,
    )


@apps_group.command("rotate-signing-secret")
@click.argument("slug")
@click.option(
    "--keep-previous-hours", type=click.IntRange(0, 24 * 30), default=24, show_default=True
)
def apps_rotate_signing_secret(slug: str, keep_previous_hours: int) -> None:
    """Install a new signing secret (from stdin); the old one verifies for N more hours."""
    (secret,) = read_secrets("new signing secret")
    with writing_session() as (rt, session):
        app = apps.get_app(session, slug)
        keep = dt.timedelta(hours=keep_previous_hours)
        apps.rotate_signing_secret(rt.keyring, app, secret, keep, rt.clock())
    note(f"new signing secret for {slug!r}; the previous one verifies for {keep_previous_hours} h")


@apps_group.command("set-client-secret")
@click.argument("slug")
@click.option("--drop-previous", is_flag=True, help="forget the previous client credential")
@credential_options
def apps_set_client_secret(
    slug: str,
    drop_previous: bool,
    private_key_file: Path | None,
    client_cert_file: Path | None,
    key_id: str | None,
) -> None:
    """Install a new client secret (from stdin), or the private key or client certificate of an
    app that authenticates with one; the previous one is tried on invalid_client."""
    with session_for() as (_rt, session):
        method = apps.get_app(session, slug).auth_method
    credential = credential_from_files(method, private_key_file, client_cert_file, key_id)
    if credential is None:
        (credential,) = read_secrets("new client secret")
    with writing_session() as (rt, session):
        app = apps.get_app(session, slug)
        apps.set_client_credential(
            rt.keyring, app, credential, rt.clock(), key_id=key_id, drop_previous=drop_previous
        )
    note(
        f"new client credential for {slug!r}" + ("; previous one dropped" if drop_previous else "")
    )
