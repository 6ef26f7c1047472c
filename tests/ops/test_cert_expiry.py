"""Client certificates near or past their expiry are named, soonest first, with what to do."""

from __future__ import annotations

import datetime as dt

from tests.support.builders import register_app
from tests.support.client_auth_server import Authority, rsa_key
from tests.support.clock import FrozenClock
from vault.ops import cert_expiry, status
from vault.runtime import Runtime


def _register(runtime: Runtime, slug: str, days: float, method: str = "tls_client_auth") -> None:
    issued = Authority(f"{slug} CA").issue(slug, days=days, key=rsa_key())
    register_app(
        runtime, slug, grant="client_credentials", vendor_app_id=None,
        token_url="https://idp.example/token", auth_method=method,
        client_secret=issued.bundle(), signing_secret=None,
    )  # fmt: skip


def test_certificates_within_30_days_warn_and_expired_ones_are_critical(
    runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(dt.datetime.now(dt.UTC))
    _register(runtime, "far", days=90)
    _register(runtime, "soon", days=20.5)
    _register(runtime, "sooner", days=2.5, method="private_key_jwt")
    _register(runtime, "plain", days=1)
    register_app(runtime, "secret-only")  # no certificate at all
    clock.advance(2 * 86400)  # "plain" has now expired
    with runtime.session() as session:
        found = cert_expiry.expiring(session, clock())
    assert [(e.app, e.level) for e in found] == [
        ("plain", "critical"), ("sooner", "warning"), ("soon", "warning"),
    ]  # fmt: skip
    plain, sooner, soon = (e.text(clock()) for e in found)
    assert "expired on" in plain and "--client-cert-file" in plain
    assert "(within a day)" in sooner and "--private-key-file" in sooner
    assert "(in 18 days)" in soon


def test_the_status_page_warns_of_a_certificate_within_30_days(
    runtime: Runtime, clock: FrozenClock
) -> None:
    clock.set(dt.datetime.now(dt.UTC))
    _register(runtime, "mtls", days=10.5)
    with runtime.session() as session:
        shown = status.gather(session, runtime.keyring, clock(), status.TenantFilter()).as_json()
    (item,) = [i for i in shown["attention"] if i.get("app") == "mtls"]
    assert item["level"] == "warning" and "(in 10 days)" in item["text"]
    assert shown["certificates"][0]["app"] == "mtls"
