"""The status page in a real headless Chromium (Debian's, driven by Playwright; never downloaded)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from tests.support import demo, live_server
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.builders import CLIENT_SECRET, SIGNING_SECRET
from vault.runtime import Runtime

pytestmark = pytest.mark.browser


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.exists():
        why = "playwright or /usr/bin/chromium is missing (apt-get install chromium)"
        if os.environ.get("DV_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return sync_playwright


@pytest.fixture
def browser() -> Iterator[Any]:
    with _playwright()() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def served(runtime: Runtime) -> Iterator[tuple[str, str]]:
    """The demo vault served on loopback, and an operator key for it."""
    key = demo.seed(runtime)
    with live_server.serving(create_app(runtime=runtime)) as base:
        yield base, key


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_operator_sees_attention_first_pages_and_filters_without_csp_violations(
    browser: Any, served: tuple[str, str], tmp_path: Path
) -> None:
    base, key = served
    context = browser.new_context(http_credentials={"username": "ops", "password": key})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))

    assert page.goto(f"{base}/status").status == 200
    attention = page.locator("#attention li")
    assert attention.count() >= 2
    assert "disabled" in page.locator("#attention").inner_text()
    # The stylesheet applied (CSP allows 'self' styles only): the attention items carry a border.
    border = attention.first.evaluate("e => getComputedStyle(e).borderLeftWidth")
    assert border == "4px"
    rows = page.locator("#tenants tbody tr")
    assert rows.count() == 50
    first_page = rows.first.inner_text()

    page.click("a[rel=next]")
    page.wait_for_load_state()
    assert "page 2 of" in page.locator(".pages").inner_text()
    assert page.locator("#tenants tbody tr").first.inner_text() != first_page

    page.fill("input[name=q]", "intdev2")
    page.click(".filters button")
    page.wait_for_load_state()
    assert page.locator("#tenants tbody tr").count() == 1
    assert "b48d…9a00" in page.locator("#tenants").inner_text()

    html = page.content()
    for secret in (*demo.USERS, CLIENT_SECRET, SIGNING_SECRET, key):
        assert secret not in html
    page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
    assert (tmp_path / "status.png").stat().st_size > 10_000
    context.close()
    assert not [line for line in console if line.startswith(("error", "pageerror"))], console


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_a_phone_the_page_never_scrolls_sideways_and_wide_tables_scroll_in_place(
    browser: Any, served: tuple[str, str], tmp_path: Path
) -> None:
    base, key = served
    context = browser.new_context(
        http_credentials={"username": "ops", "password": key},
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
    )
    page = context.new_page()
    assert page.goto(f"{base}/status").status == 200
    viewport = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport
    tenants = page.locator("#tenants table").first
    # The tenant table is wider than the phone: it scrolls inside its own box.
    assert tenants.evaluate("t => getComputedStyle(t).overflowX") == "auto"
    assert tenants.evaluate("t => t.scrollWidth > t.clientWidth")
    assert page.locator("#attention li").first.is_visible()
    page.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
    context.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_tenant_refused_with_invalid_grant_is_critical_until_a_token_succeeds(
    browser: Any, app: Any, runtime: Runtime, key: str, oauth: Any, delegated: None
) -> None:
    from tests.support.builders import create_key
    from tests.support.oauth_server import Reply
    from tests.support.token_fixtures import ask

    operator = create_key(runtime, "ops", role="operator")
    client = app.test_client()
    oauth.then(Reply(400, {"error": "invalid_grant"}))
    assert ask(client, key).json["upstream_error"] == "invalid_grant"
    with live_server.serving(app) as base:
        context = browser.new_context(http_credentials={"username": "ops", "password": operator})
        page = context.new_page()
        assert page.goto(f"{base}/status").status == 200
        first = page.locator("#attention li").first
        assert first.get_attribute("class") == "critical"
        assert (first.get_attribute("data-app"), first.get_attribute("data-tenant")) == (
            "zendesk", "intdev2"
        )  # fmt: skip
        text = first.inner_text()
        assert "invalid_grant" in text and "zendesk/intdev2" in text
        assert "must pick a delegated user again" in text
        assert "invalid_grant" in page.locator("#failing").inner_text()
        assert ask(client, key).status_code == 200
        page.reload()
        assert page.locator("#attention li.critical").count() == 0
        assert page.locator("#all-well").is_visible()
        context.close()
