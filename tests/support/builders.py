"""Builders: registered apps, signed callbacks and keys, so no test computes an HMAC by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

from vault.apps import registry as apps
from vault.callbacks.signatures import sign
from vault.callers import keys
from vault.clock import iso
from vault.db import writing
from vault.runtime import Runtime

# Seismic's example callbacks, byte for byte
VENDOR = Path(__file__).resolve().parents[1] / "vendor"
VENDOR_APP_ID = "fcdd244c-1cce-4e6b-aad9-7e6820a99a20"
SIGNING_SECRET = "whsec-demo-signing-secret-1"
PREVIOUS_SIGNING_SECRET = "whsec-demo-signing-secret-0"
CLIENT_SECRET = "client-secret-for-tests-3f9a1c"
TENANT = "intdev2"
TENANT_ID = "b061ad37-1f5a-4531-b7d3-89807dccca68"
USER = "b48d244c-1cce-4e6b-aad9-7e6820a99aa7"


def register_app(runtime: Runtime, slug: str = "zendesk", **overrides: Any) -> None:
    client_secret = overrides.pop("client_secret", CLIENT_SECRET)
    signing_secret = overrides.pop("signing_secret", SIGNING_SECRET)
    spec = apps.AppSpec(
        slug=slug,
        client_id=overrides.pop("client_id", f"{slug}-client"),
        vendor_app_id=overrides.pop("vendor_app_id", VENDOR_APP_ID),
        # Any scope unless a test says otherwise; the default (the default scope alone) is
        # tested where scopes are the subject.
        allowed_scopes=overrides.pop("allowed_scopes", "*"),
        **overrides,
    )
    with runtime.session() as session:
        apps.add_app(
            session,
            runtime.keyring,
            spec,
            client_secret,
            signing_secret,
            runtime.clock(),
            allow_http=runtime.settings.allow_http_token_urls,
        )


def create_key(runtime: Runtime, name: str = "svc", role: str = "service", **kw: Any) -> str:
    with runtime.session() as session, writing(session):
        return keys.create_key(
            session, name, role, kw.get("apps", []), kw.get("tenants", []), runtime.clock(),
            kw.get("expires_days"),
        )  # fmt: skip


def delegation_body(now: dt.datetime, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": "1",
        "userEmail": "admin@example.com",
        "delegationUserId": USER,
        "appId": VENDOR_APP_ID,
        "appName": "ZendeskTest",
        "tenant": TENANT,
        "tenantId": TENANT_ID,
        "requestId": str(uuid.uuid4()),
        "version": "0.1.1",
        "language": "en-US",
        "timestamp": iso(now.replace(microsecond=0)),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not dataclasses.MISSING}


def lifecycle_body(now: dt.datetime, kind: str, **overrides: Any) -> dict[str, Any]:
    body = delegation_body(now, **overrides)
    body.pop("delegationUserId", None)
    body.pop("language", None)
    body["type"] = kind
    return body


def signed(
    body: dict[str, Any] | bytes, secret: str = SIGNING_SECRET, **headers: str
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, {
        "Content-Type": "application/json",
        "x-seismic-signature": sign(secret, raw),
        **headers,
    }


def example(name: str) -> bytes:
    return (VENDOR / name).read_bytes()
