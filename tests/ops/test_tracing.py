"""OpenTelemetry traces: the real service under gunicorn exporting to a loopback OTLP receiver.

One callback, one token request that reaches the token endpoint (a 503 then a token: two
attempts), one cached hit answered beneath Flask and one refused request, each carrying its own
W3C traceparent; the spans are decoded from the export and checked for parentage, names,
attributes and the absence of every secret the flow handled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import oauth_server, otlp, service
from tests.support.builders import (
    CLIENT_SECRET,
    SIGNING_SECRET,
    USER,
    create_key,
    delegation_body,
    register_app,
    signed,
)
from tests.support.oauth_server import Reply
from vault import migrate, tracing
from vault.db import make_engine
from vault.errors import ConfigError
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

pytestmark = pytest.mark.slow
CONFIG = "/api/v1/applications/zendesk/config"
TOKEN = "/internal/v1/token"


def traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent header, with its trace id and span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@dataclass
class Flow:
    spans: list[otlp.Span]
    callers: dict[str, tuple[str, str]]  # what each request was: (trace id, caller's span id)
    secrets: list[str]


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    folder = tmp_path_factory.mktemp("tracing")
    url, entry = f"sqlite:///{folder / 'vault.db'}", new_key_entry("trace1")
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    settings = Settings(database_url=url, instance_path=folder, allow_http_token_urls=True)
    with otlp.receiving() as receiver, oauth_server.serving() as oauth:
        runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
        ensure_key_check(runtime)
        register_app(runtime, token_url=oauth.url)
        key = create_key(runtime, "billing-sync")
        runtime.close()
        env = {
            "DATABASE_URL": url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "development",
            "DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "",
        }  # fmt: skip
        callers: dict[str, tuple[str, str]] = {}
        raw, headers = signed(delegation_body(dt.datetime.now(dt.UTC)))
        oauth.then(Reply(status=503))  # the first attempt fails; the second gets the token
        ask = {"app": "zendesk", "tenant": "intdev2"}
        with service.running(env, folder, workers=1) as svc, httpx.Client(base_url=svc.url) as http:
            sent = []
            for name, method, path, extra in [
                ("callback", "POST", CONFIG, {"content": raw, "headers": headers}),
                ("miss", "POST", TOKEN, {"json": ask, "headers": {"Authorization": f"Bearer {key}"}}),
                ("hit", "POST", TOKEN, {"json": ask, "headers": {"Authorization": f"Bearer {key}"}}),
                ("refused", "POST", TOKEN, {"json": ask, "headers": {"Authorization": "Bearer nope"}}),
            ]:  # fmt: skip
                header, trace_id, span_id = traceparent()
                callers[name] = (trace_id, span_id)
                extra["headers"] = {**extra["headers"], "traceparent": header}  # type: ignore[dict-item]
                sent.append(http.request(method, path, **extra))  # type: ignore[arg-type]
        # The service stopped: its worker exported what its batch still held.
        assert [r.status_code for r in sent] == [202, 200, 200, 401], [r.text for r in sent]
        tokens = [r.json()["access_token"] for r in sent[1:3]]
        spans = receiver.wait_for(lambda s: sum(x.kind == "SERVER" for x in s) >= 4)
        yield Flow(
            spans, callers,
            secrets=[CLIENT_SECRET, SIGNING_SECRET, USER, key, key.split("_", 1)[-1], entry,
                     entry.split(":", 1)[1], headers["x-seismic-signature"], *tokens],
        )  # fmt: skip


def _server_span(flow: Flow, request: str) -> otlp.Span:
    trace_id, _ = flow.callers[request]
    found = [s for s in flow.spans if s.kind == "SERVER" and s.trace_id == trace_id]
    assert len(found) == 1, [s.name for s in flow.spans]
    return found[0]


def _children(flow: Flow, parent: otlp.Span) -> list[otlp.Span]:
    return [s for s in flow.spans if s.parent_span_id == parent.span_id]


@pytest.mark.parametrize("request_name", ["callback", "miss", "hit", "refused"])
def test_each_request_span_is_the_child_of_the_callers_traceparent(
    flow: Flow, request_name: str
) -> None:
    span = _server_span(flow, request_name)
    assert span.parent_span_id == flow.callers[request_name][1]
    assert span.resource["service.name"] == "delegation-vault"


def test_the_server_span_names_the_route_template_method_and_status(flow: Flow) -> None:
    callback, miss = _server_span(flow, "callback"), _server_span(flow, "miss")
    hit, refused = _server_span(flow, "hit"), _server_span(flow, "refused")
    assert callback.name == "POST /api/v1/applications/<slug>/config"
    assert callback.attributes == {
        "http.request.method": "POST", "http.route": "/api/v1/applications/<slug>/config",
        "http.response.status_code": 202,
    }  # fmt: skip
    for span, status in [(miss, 200), (hit, 200), (refused, 401)]:
        assert span.name == f"POST {TOKEN}"
        assert span.attributes["http.route"] == TOKEN
        assert span.attributes["http.response.status_code"] == status


def test_the_cached_hit_answered_beneath_flask_has_its_server_span_and_no_token_endpoint_call(
    flow: Flow,
) -> None:
    assert _children(flow, _server_span(flow, "hit")) == []


def test_each_token_endpoint_attempt_is_a_child_span_with_its_status(flow: Flow) -> None:
    attempts = _children(flow, _server_span(flow, "miss"))
    assert [(s.name, s.kind) for s in attempts] == [("POST token endpoint", "CLIENT")] * 2
    first, second = sorted(attempts, key=lambda s: s.attributes["dv.upstream.attempt"])
    assert first.attributes["dv.upstream.attempt"] == 1
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["dv.upstream.error"] == "http_503"
    assert first.status == 2  # error
    assert second.attributes["dv.upstream.attempt"] == 2
    assert second.attributes["http.response.status_code"] == 200
    assert "dv.upstream.error" not in second.attributes
    assert second.attributes["server.address"] == "127.0.0.1"
    assert second.attributes["dv.upstream.host"].startswith("127.0.0.1:")


def test_the_callback_applied_is_a_child_span_with_app_and_outcome(flow: Flow) -> None:
    (applied,) = _children(flow, _server_span(flow, "callback"))
    assert applied.name == "callback apply"
    assert applied.attributes == {
        "dv.app": "zendesk", "dv.callback.kind": "config", "dv.callback.outcome": "applied",
    }  # fmt: skip


def test_no_span_attribute_or_event_holds_a_secret_token_signature_key_or_user_id(
    flow: Flow,
) -> None:
    assert len(flow.spans) >= 7
    for span in flow.spans:
        text = span.everything()
        for secret in flow.secrets:
            assert secret not in text, (span.name, secret[:4])


def test_tracing_is_off_without_an_otlp_endpoint_and_honours_the_sdk_switch() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_HEADERS": "a=b"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


OFF_PATH = """
import io, json, os, sys
from pathlib import Path
from app import create_app
from vault.keyring.entries import new_key_entry
from vault.settings import Settings
from tests.support.builders import create_key, register_app

settings = Settings(database_url=sys.argv[1], instance_path=Path(sys.argv[2]), keys=os.environ["DV_KEYS"])
app = create_app(settings)
runtime = app.extensions["vault"]
register_app(runtime)
key = create_key(runtime)
body = json.dumps({"app": "zendesk", "tenant": "intdev2"}).encode()
environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/internal/v1/token", "QUERY_STRING": "",
           "SERVER_NAME": "t", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
           "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
           "HTTP_AUTHORIZATION": "Bearer " + key, "HTTP_TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
           "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr}
statuses = []
b"".join(app(environ, lambda s, h, e=None: statuses.append(s)))
print(json.dumps({"status": statuses[0], "otel": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))
"""


def test_with_tracing_off_no_request_imports_opentelemetry(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["DV_KEYS"] = new_key_entry("off1")
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    ran = subprocess.run(
        [sys.executable, "-c", OFF_PATH, url, str(tmp_path)], capture_output=True, text=True,
        env=env, timeout=120, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["status"].startswith("404")  # no delegation: refused by the view
    assert answer["otel"] == []


def test_an_endpoint_without_the_exporter_installed_is_refused_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    tracing.check(endpoint)  # installed here: nothing to say
    monkeypatch.setattr(tracing, "_installed", lambda module: module != "opentelemetry.sdk")
    tracing.check({})  # off: the exporter is not needed
    with pytest.raises(ConfigError, match=r"pip install 'delegation-vault\[otel\]'"):
        tracing.check(endpoint)
