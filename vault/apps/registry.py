"""Registered apps: their client and signing secrets, sealed in the apps table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault.db import writing
from vault.errors import BadValue, OperationalError, UnknownApp
from vault.freshness import invalidate
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import App, CachedToken, Delegation, Grant
from vault.scopes import ANY, normalise_allowed, normalise_scope
from vault.upstream import client_auth, pem
from vault.upstream.guards import validate_token_url

SEISMIC_TOKEN_URL = "https://auth.seismic.com/tenants/{tenant}/connect/token"  # noqa: S105 (a URL, not a password)
AUTH_METHODS = tuple(client_auth.AUTH_METHODS)
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Fields whose change alters what a token request sends: cached tokens of the app go with them.
SHAPES_TOKEN_REQUEST = ("token_url", "client_id", "auth_method", "default_scope", "allowed_scopes")
CREDENTIAL = "client credential"  # what update_app reports when it installed a new credential


def drops_tokens(changed: list[str]) -> bool:
    """Whether an update that changed these fields drops the app's cached tokens."""
    return bool(set(changed) & {*SHAPES_TOKEN_REQUEST, CREDENTIAL})


@dataclasses.dataclass(frozen=True)
class AppSpec:
    slug: str
    client_id: str
    vendor_app_id: str | None = None
    token_url: str = SEISMIC_TOKEN_URL
    grant: str = Grant.DELEGATION
    auth_method: str = "client_secret_post"
    scope: str = ""
    allowed_scopes: str = ""  # empty: the default scope and nothing else; "*": any scope
    key_id: str | None = None  # the JWT kid, for private_key_jwt


@dataclasses.dataclass(frozen=True)
class AppChanges:
    """What ``apps update`` was given; None leaves a field as it is."""

    token_url: str | None = None
    client_id: str | None = None
    auth_method: str | None = None
    scope: str | None = None
    allowed_scopes: str | None = None
    vendor_app_id: str | None = None


def validate_spec(spec: AppSpec, *, allow_http: bool) -> None:
    if not SLUG.fullmatch(spec.slug):
        raise BadValue("SLUG", "lower-case letters, digits and '-', at most 63 characters")
    if spec.grant not in {g.value for g in Grant}:
        raise BadValue("--grant", "must be 'delegation' or 'client_credentials'")
    if spec.auth_method not in AUTH_METHODS:
        raise BadValue("--auth-method", f"must be one of {', '.join(AUTH_METHODS)}")
    if spec.grant == Grant.DELEGATION and not spec.vendor_app_id:
        raise BadValue("--vendor-app-id", "a delegation app needs one")
    if not spec.client_id:
        raise BadValue("--client-id", "must not be empty")
    validate_token_url(spec.token_url, allow_http=allow_http)
    allowed = normalise_allowed(spec.allowed_scopes, spec.scope)
    if allowed != ANY and not set(normalise_scope(spec.scope).split()) <= set(allowed.split()):
        raise BadValue(
            "--scope", f"the default scope must lie within the allowed scopes ({allowed})"
        )


def add_app(
    session: Session,
    keyring: Keyring,
    spec: AppSpec,
    client_secret: str,
    signing_secret: str | None,
    now: dt.datetime,
    *,
    allow_http: bool = False,
) -> App:
    """Register an app, committed when this returns.

    ``client_secret`` is the credential of the auth method: the client secret, or the PEM text of
    the private key (private_key_jwt) or of the certificate chain and key (tls_client_auth).
    """
    validate_spec(spec, allow_http=allow_http)
    if spec.grant == Grant.DELEGATION and not signing_secret:
        raise OperationalError("a delegation app needs a signing secret")
    with writing(session):
        return insert_app(session, keyring, spec, client_secret, signing_secret, now)


def insert_app(
    session: Session,
    keyring: Keyring,
    spec: AppSpec,
    client_secret: str,
    signing_secret: str | None,
    now: dt.datetime,
) -> App:
    """Insert a validated app inside the caller's write transaction."""
    credential = pem.prepare(spec.auth_method, client_secret, spec.key_id, now)
    if session.scalar(select(App.id).where(App.slug == spec.slug)) is not None:
        raise OperationalError(f"an app named {spec.slug!r} already exists")
    app = App(
        slug=spec.slug,
        vendor_app_id=spec.vendor_app_id,
        client_id=spec.client_id,
        token_url=spec.token_url,
        grant=spec.grant,
        auth_method=spec.auth_method,
        default_scope=normalise_scope(spec.scope),
        allowed_scopes=normalise_allowed(spec.allowed_scopes, spec.scope),
        client_secret="",
        client_secret_set_at=now,
        client_key_id=credential.key_id,
        client_cert_expires_at=credential.cert_expires_at,
        signing_secret_set_at=now if signing_secret else None,
        created_at=now,
    )
    session.add(app)
    session.flush()  # the row id is part of what the secrets are bound to
    app.client_secret = keyring.encrypt(credential.secret, row_aad(app, "client_secret"))
    if signing_secret:
        app.signing_secret = keyring.encrypt(signing_secret, row_aad(app, "signing_secret"))
    return app


@dataclasses.dataclass(frozen=True)
class NewCredential:
    """A client credential given with ``apps update``: a private key or certificate chain (PEM)."""

    material: str
    key_id: str | None
    keyring: Keyring
    now: dt.datetime


def update_app(
    session: Session,
    slug: str,
    changes: AppChanges,
    *,
    allow_http: bool = False,
    credential: NewCredential | None = None,
) -> list[str]:
    """Change what is given, committed when this returns; the names of the fields that changed.

    Cached tokens of the app are dropped when anything that shapes a token request changed, so
    no token obtained with the old settings is served again. A new credential is installed for
    the (new) auth method, the current one kept as the previous one when the method stays.
    """
    with writing(session):
        app = get_app(session, slug)
        given = {k: v for k, v in dataclasses.asdict(changes).items() if v is not None}
        spec = dataclasses.replace(_spec_of(app), **given)
        validate_spec(spec, allow_http=allow_http)
        installed = []
        if credential is None:
            _same_credential_kind(app.auth_method, spec.auth_method)
        else:  # before the columns: it compares the new method with the stored one
            set_client_credential(
                credential.keyring, app, credential.material, credential.now,
                method=spec.auth_method, key_id=credential.key_id,
            )  # fmt: skip
            installed = [CREDENTIAL]
        values = _columns(spec)
        changed = [name for name, value in values.items() if getattr(app, name) != value]
        for name in changed:
            setattr(app, name, values[name])
        changed = installed + changed
        if changed:
            invalidate(session, "app", app.slug)
        if drops_tokens(changed):
            session.execute(delete(CachedToken).where(CachedToken.app_id == app.id))
    return changed


def _same_credential_kind(before: str, after: str) -> None:
    """A change of auth method keeps the stored credential only between the two secret methods."""
    if before != after and not {before, after} <= set(pem.SECRET_METHODS):
        raise BadValue(
            "--auth-method",
            f"{before} to {after} needs the new credential: remove and add the app again, "
            "with --private-key-file, --client-cert-file or the client secret",
        )


def _spec_of(app: App) -> AppSpec:
    return AppSpec(
        slug=app.slug, client_id=app.client_id, vendor_app_id=app.vendor_app_id,
        token_url=app.token_url, grant=app.grant, auth_method=app.auth_method,
        scope=app.default_scope, allowed_scopes=app.allowed_scopes,
    )  # fmt: skip


def _columns(spec: AppSpec) -> dict[str, str | None]:
    """The apps columns an update may change, as stored."""
    return {
        "token_url": spec.token_url,
        "client_id": spec.client_id,
        "auth_method": spec.auth_method,
        "default_scope": normalise_scope(spec.scope),
        "allowed_scopes": normalise_allowed(spec.allowed_scopes, spec.scope),
        "vendor_app_id": spec.vendor_app_id,
    }


def get_app(session: Session, slug: str) -> App:
    if not SLUG.fullmatch(slug):  # no such app can exist; PostgreSQL would refuse a NUL as an error
        raise UnknownApp(slug)
    app = session.scalar(select(App).where(App.slug == slug))
    if app is None:
        raise UnknownApp(slug)
    return app


def delegation_count(session: Session, slug: str) -> int:
    """How many tenants' delegations removing the app would delete."""
    app = get_app(session, slug)
    return session.scalar(select(func.count()).where(Delegation.app_id == app.id)) or 0


def list_apps(session: Session) -> list[App]:
    return list(session.scalars(select(App).order_by(App.slug)))


def remove_app(session: Session, slug: str) -> None:
    """Delete an app and, by cascade, its delegations, history and cached tokens, and end every
    key's and identity's grant to it; committed."""
    from vault.callers.grants import end_grants  # here: vault.callers imports this module

    with writing(session):
        app = get_app(session, slug)
        end_grants(session, app)
        session.delete(app)
        invalidate(session, "app", slug)


def signing_secrets(
    keyring: Keyring, app: App, now: dt.datetime
) -> tuple[bytes | None, bytes | None]:
    """(current, previous-while-still-valid) signing secrets as bytes."""
    current = app.signing_secret and keyring.decrypt(
        app.signing_secret, row_aad(app, "signing_secret")
    )
    previous = None
    expires = app.signing_previous_expires_at
    if app.signing_secret_previous and expires is not None and expires > now:
        previous = keyring.decrypt(
            app.signing_secret_previous, row_aad(app, "signing_secret_previous")
        )
    return current or None, previous


def client_secrets(keyring: Keyring, app: App) -> tuple[str, str | None]:
    """(current, previous) client credentials as text (see client_auth.credentials)."""
    current, previous = client_auth.credentials(keyring, app)
    return current.secret, previous.secret if previous else None


def rotate_signing_secret(
    keyring: Keyring, app: App, new_secret: str, keep_previous: dt.timedelta, now: dt.datetime
) -> None:
    """The new secret signs from now on; the current one keeps verifying for ``keep_previous``."""
    if not new_secret:
        raise OperationalError("the new signing secret is empty")
    if app.signing_secret and keep_previous > dt.timedelta(0):
        old = keyring.decrypt(app.signing_secret, row_aad(app, "signing_secret"))
        app.signing_secret_previous = keyring.encrypt(old, row_aad(app, "signing_secret_previous"))
        app.signing_previous_expires_at = now + keep_previous
    else:
        app.signing_secret_previous = None
        app.signing_previous_expires_at = None
    app.signing_secret = keyring.encrypt(new_secret, row_aad(app, "signing_secret"))
    app.signing_secret_set_at = now


def set_client_secret(
    keyring: Keyring, app: App, new_secret: str | None, now: dt.datetime, *, drop_previous: bool
) -> None:
    """Install a new client secret (keeping the old one for activation) or drop the previous one."""
    set_client_credential(keyring, app, new_secret, now, drop_previous=drop_previous)


def set_client_credential(
    keyring: Keyring,
    app: App,
    material: str | None,
    now: dt.datetime,
    *,
    method: str | None = None,
    key_id: str | None = None,
    drop_previous: bool = False,
) -> None:
    """Install a new credential for ``method`` (default: the app's own) or drop the previous one.

    The current credential is kept as the previous one, tried once on ``invalid_client`` while the
    new one activates; a change of auth method drops it (it would not prove anything any more).
    """
    method = method or app.auth_method
    if method not in AUTH_METHODS:
        raise OperationalError(f"auth method must be one of {', '.join(AUTH_METHODS)}")
    if material:
        new = pem.prepare(method, material, key_id, now)
        if method == app.auth_method:
            old = keyring.decrypt(app.client_secret, row_aad(app, "client_secret"))
            app.client_secret_previous = keyring.encrypt(
                old, row_aad(app, "client_secret_previous")
            )
            app.client_key_id_previous = app.client_key_id
        else:
            drop_previous = True
        app.client_secret = keyring.encrypt(new.secret, row_aad(app, "client_secret"))
        app.client_key_id, app.client_cert_expires_at = new.key_id, new.cert_expires_at
        app.auth_method, app.client_secret_set_at = method, now
    elif method != app.auth_method:
        raise OperationalError(f"--auth-method {method} needs its credential")
    if drop_previous:
        app.client_secret_previous = app.client_key_id_previous = None
