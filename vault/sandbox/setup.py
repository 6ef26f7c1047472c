"""The sandbox's app and service key in the vault, made afresh at every start."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.apps import registry as apps
from vault.callers import keys
from vault.db import writing
from vault.keyring.crypto import Keyring
from vault.models import App, ServiceKey

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
    """Replace the app ``sandbox`` (fresh secrets, pointing at ``token_url``) and its key.

    Committed when this returns. Earlier sandbox keys are revoked: they were for the app that
    was just replaced.
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
        if old is not None:
            session.delete(old)
            session.flush()
        apps.insert_app(session, keyring, spec, made.client_secret, made.signing_secret, now)
        for name in session.scalars(
            select(ServiceKey.name).where(
                ServiceKey.name.startswith(KEY_PREFIX), ServiceKey.revoked_at.is_(None)
            )
        ).all():
            keys.revoke_key(session, name, now)
        name = f"{KEY_PREFIX}{secrets.token_hex(4)}"
        key = keys.create_key(session, name, "service", [SLUG], [], now)
    return dataclasses.replace(made, service_key=key)
