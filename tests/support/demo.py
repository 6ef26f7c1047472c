"""A demo vault for the status page: tenants in every state, a rotation under way, rejections.

Used by the browser test and by ``python -m tests.support.screenshot`` (the picture in docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app import create_app
from tests.support.builders import create_key, delegation_body, lifecycle_body, register_app, signed
from vault.apps import registry as apps
from vault.keyring.sealing import row_aad
from vault.models import Delegation, TokenHealth, UpstreamHealth
from vault.runtime import Runtime

USERS = [str(uuid.UUID(int=0xB48D244C1CCE4E6BAAD97E6820A99A00 + i)) for i in range(8)]


def seed(runtime: Runtime, bulk: int = 120) -> str:
    """Fill ``runtime``'s database; return an operator key."""
    register_app(runtime, token_url="https://auth.seismic.com/tenants/{tenant}/connect/token")
    register_app(
        runtime, "okta-reporting", grant="client_credentials", vendor_app_id=None,
        token_url="https://example.okta.com/oauth2/default/v1/token", scope="reports.read",
    )  # fmt: skip
    client = create_app(runtime=runtime).test_client()
    now = runtime.clock()
    for i, name in enumerate(["intdev2", "acme", "globex", "initech"]):
        body = delegation_body(
            now, tenant=name, tenantId=str(uuid.UUID(int=i + 1)), delegationUserId=USERS[i]
        )
        raw, headers = signed(body)
        client.post("/api/v1/applications/zendesk/config", data=raw, headers=headers)
    later = now + dt.timedelta(seconds=1)
    raw, headers = signed(
        lifecycle_body(later, "disable", tenant="globex", tenantId=str(uuid.UUID(int=3)))
    )
    client.post("/api/v1/applications/zendesk/lifecycle", data=raw, headers=headers)
    raw, headers = signed(
        lifecycle_body(later, "uninstall", tenant="initech", tenantId=str(uuid.UUID(int=4)))
    )
    client.post("/api/v1/applications/zendesk/lifecycle", data=raw, headers=headers)
    client.post(
        "/api/v1/applications/zendesk/config", data=b"{}", headers={"x-seismic-signature": "0" * 64}
    )
    _bulk(runtime, bulk)
    with runtime.session() as session:
        session.add(UpstreamHealth(
            host="auth.seismic.com", consecutive_failures=0, last_success_at=now,
            last_error_at=now - dt.timedelta(minutes=5), last_error="invalid_client",
            latencies_ms=[88.0, 93.5, 101.2, 97.0, 140.3],
        ))  # fmt: skip
        _token_health(session, runtime, now)
        session.commit()
    create_key(runtime, "billing-sync", apps=["zendesk"])
    return create_key(runtime, "ops", role="operator")


def _bulk(runtime: Runtime, count: int) -> None:
    now = runtime.clock()
    with runtime.session() as session:
        app_id = apps.get_app(session, "zendesk").id
        rows = []
        for i in range(count):
            row = Delegation(
                app_id=app_id, tenant=f"tenant{i:05d}", tenant_id=str(uuid.UUID(int=1000 + i))
            )
            user = runtime.keyring.encrypt(str(uuid.uuid4()), row_aad(row, "delegation_user_id"))
            rows.append({
                "app_id": app_id, "tenant": row.tenant, "tenant_id": row.tenant_id, "state": "active",
                "delegation_user_id": user, "version": 1, "vendor_timestamp": now,
                "request_id": f"bulk-{i}", "updated_at": now, "last_callback_at": now,
                "last_callback_result": "delegation:applied",
            })  # fmt: skip
        session.execute(insert(Delegation), rows)
        session.commit()


def _token_health(session: Session, runtime: Runtime, now: dt.datetime) -> None:
    """intdev2 gets tokens; acme's delegated user is no longer accepted by the vendor."""
    app_id = apps.get_app(session, "zendesk").id
    session.add_all([
        TokenHealth(app_id=app_id, tenant_key=str(uuid.UUID(int=1)), tenant="intdev2",
                    tenant_id=str(uuid.UUID(int=1)), host="auth.seismic.com",
                    last_success_at=now - dt.timedelta(minutes=2), consecutive_failures=0),
        TokenHealth(app_id=app_id, tenant_key=str(uuid.UUID(int=2)), tenant="acme",
                    tenant_id=str(uuid.UUID(int=2)), host="auth.seismic.com",
                    last_success_at=now - dt.timedelta(hours=26),
                    last_failure_at=now - dt.timedelta(minutes=1), last_failure_reason="invalid_grant",
                    last_failure_status=400, failing_since=now - dt.timedelta(minutes=47),
                    consecutive_failures=6),
    ])  # fmt: skip
