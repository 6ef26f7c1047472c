"""The sandbox's app and service key in the vault, made afresh at every start."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import uuid

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault.apps import registry as apps
from vault.callers import keys
from vault.db import writing
from vault.keyring.crypto import Keyring
from vault.keyring.sealing import row_aad
from vault.models import App, CachedToken, Delegation, ServiceKey, State

SLUG = "sandbox"
CLIENT_ID = "sandbox-client"
SCOPE = "seismic.library.view"
ALLOWED_SCOPES = "seismic.library.view seismic.reporting"
KEY_PREFIX = "sandbox-"


@dataclasses.dataclass(frozen=True)
class Registered:
    vendor_app_id: str
    client_secret: str = dataclasses.field(repr=False)
    signing_secret: str = dataclasses.field(repr=False)
    service_key: str = dataclasses.field(repr=False)


def register(session: Session, keyring: Keyring, token_url: str, now: dt.datetime) -> Registered:
    """Make the app ``sandbox`` new (fresh secrets, pointing at ``token_url``) and its key.

    Committed when this returns. The app's delegations are kept (``delegated_users`` tells the new
    stand-in about them), its cached tokens dropped (the stand-in that issued them is gone), and
    earlier sandbox keys revoked.
    """
    made = Registered(
        vendor_app_id=str(uuid.uuid4()),
        client_secret=secrets.token_urlsafe(32),
        signing_secret=secrets.token_urlsafe(32),
        service_key="",
    )
    spec = apps.AppSpec(
        slug=SLUG, client_id=CLIENT_ID, vendor_app_id=made.vendor_app_id, token_url=token_url,
        scope=SCOPE, allowed_scopes=ALLOWED_SCOPES,
    )  # fmt: skip
    apps.validate_spec(spec, allow_http=True)  # loopback only: the stand-in binds nothing else
    with writing(session):
        old = session.scalar(select(App).where(App.slug == SLUG))
        if old is None:
            apps.insert_app(session, keyring, spec, made.client_secret, made.signing_secret, now)
        else:  # in place: the delegations of every tenant it was told about stay
            _renew(session, keyring, old, spec, made, now)
        for name in session.scalars(
            select(ServiceKey.name).where(
                ServiceKey.name.startswith(KEY_PREFIX), ServiceKey.revoked_at.is_(None)
            )
        ).all():
            keys.revoke_key(session, name, now)
        name = f"{KEY_PREFIX}{secrets.token_hex(4)}"
        key = keys.create_key(session, name, "service", [SLUG], [], now)
    return dataclasses.replace(made, service_key=key)


def _renew(
    session: Session, keyring: Keyring, app: App, spec: apps.AppSpec, made: Registered,
    now: dt.datetime,
) -> None:  # fmt: skip
    app.token_url, app.vendor_app_id, app.client_id = spec.token_url, spec.vendor_app_id, CLIENT_ID
    apps.set_client_secret(keyring, app, made.client_secret, now, drop_previous=False)
    apps.set_client_secret(keyring, app, None, now, drop_previous=True)
    apps.rotate_signing_secret(keyring, app, made.signing_secret, dt.timedelta(0), now)
    session.execute(delete(CachedToken).where(CachedToken.app_id == app.id))


def delegated_users(session: Session, keyring: Keyring) -> dict[str, str]:
    """Tenant -> delegated user of the app's active delegations, for the new stand-in to know."""
    rows = session.scalars(
        select(Delegation)
        .join(App, App.id == Delegation.app_id)
        .where(App.slug == SLUG, Delegation.state == State.ACTIVE.value)
    )
    return {
        row.tenant: keyring.decrypt_text(row.delegation_user_id, row_aad(row, "delegation_user_id"))
        for row in rows
        if row.delegation_user_id
    }
