"""Callbacks as Seismic sends them: a JSON body, signed over its raw bytes, fresh timestamp."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import httpx

from vault.callbacks.signatures import sign
from vault.clock import iso

KINDS = ("delegation", "disable", "enable", "uninstall", "install", "upgrade")
TENANT_IDS = uuid.UUID("6f0c3a52-2f1e-4c55-9d1b-5b1de0a5e0c1")  # tenant ids derive from names


def body(
    kind: str, tenant: str, vendor_app_id: str, user_id: str | None, now: dt.datetime
) -> bytes:
    """The raw body of one callback; a delegation names the user, the others carry ``type``."""
    fields: dict[str, Any] = {
        "userId": "1",
        "userEmail": "admin@sandbox.example",
        "appId": vendor_app_id,
        "appName": "Sandbox",
        "tenant": tenant,
        "tenantId": str(uuid.uuid5(TENANT_IDS, tenant)),
        "requestId": str(uuid.uuid4()),
        "version": "0.1.1",
        "timestamp": iso(now.replace(microsecond=0)),
    }
    if kind == "delegation":
        fields |= {"delegationUserId": user_id, "language": "en-US"}
    else:
        fields["type"] = kind
    return json.dumps(fields).encode()


def send(
    service: str, slug: str, kind: str, raw: bytes, signing_secret: str
) -> tuple[int, dict[str, Any]]:
    """POST one callback to the service; its status and JSON reply."""
    route = "config" if kind == "delegation" else "lifecycle"
    headers = {"Content-Type": "application/json", "x-seismic-signature": sign(signing_secret, raw)}
    reply = httpx.post(
        f"{service}/api/v1/applications/{slug}/{route}", content=raw, headers=headers, timeout=5
    )
    try:
        payload = reply.json()
    except ValueError:
        payload = {}
    return reply.status_code, payload if isinstance(payload, dict) else {}
