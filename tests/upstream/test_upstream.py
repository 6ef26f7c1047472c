"""The token endpoint client against a real loopback server: forms, retries, errors; the circuit."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import tls
from tests.support.builders import USER
from tests.support.clock import FrozenClock
from tests.support.oauth_server import Reply, TokenServer, serving
from tests.support.ports import free_port
from vault.errors import UpstreamRejected, UpstreamUnavailable
from vault.models import UpstreamHealth
from vault.runtime import Runtime
from vault.settings import Settings
from vault.upstream import circuit
from vault.upstream import client as upstream
from vault.upstream.client import TokenRequest, Upstream

SECRET = "s3cret:with/odd+chars é"


@pytest.fixture
def pauses() -> list[float]:
    return []


@pytest.fixture
def endpoint(pauses: list[float]) -> Iterator[Upstream]:
    settings = Settings(allow_http_token_urls=True, upstream_timeout=0.5)
    with Upstream(settings, sleep=pauses.append) as made:  # pauses are recorded, not slept
        yield made


def delegation(server: TokenServer, **changes: object) -> TokenRequest:
    fields: dict[str, object] = {
        "token_url": server.url, "client_id": "zendesk-client", "auth_method": "client_secret_post",
        "grant": "delegation", "tenant": "intdev2", "user_id": USER,
        "scope": "seismic.library.view seismic.reporting",
    }  # fmt: skip
    return TokenRequest(**{**fields, **changes})  # type: ignore[arg-type]


# -- what is sent ------------------------------------------------------------------------------


def test_a_delegation_request_is_one_form_post_with_client_secret_post(
    endpoint: Upstream, oauth: TokenServer
) -> None:
    token = endpoint.fetch(delegation(oauth), SECRET, 600)
    sent = oauth.requests[0]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.form == {
        "grant_type": "delegation", "user_id": USER, "client_id": "zendesk-client",
        "client_secret": SECRET, "scope": "seismic.library.view seismic.reporting",
    }  # fmt: skip
    assert "authorization" not in sent.headers
    assert (token.token_type, token.expires_in) == ("Bearer", 3600)
    assert oauth.introspect(token.access_token).user_id == USER  # type: ignore[union-attr]


def test_the_tenant_is_url_quoted_into_the_token_url(
    endpoint: Upstream, oauth: TokenServer
) -> None:
    # ('a/../c' is refused before any call: see tests/http/test_abuse.py)
    endpoint.fetch(delegation(oauth, tenant="a b/c?d#e"), SECRET, 600)
    assert oauth.requests[0].path == "/tenants/a%20b%2Fc%3Fd%23e/connect/token"


def test_client_secret_basic_sends_form_encoded_credentials_in_the_header(
    endpoint: Upstream, oauth: TokenServer
) -> None:
    request = delegation(
        oauth, token_url=oauth.base + "/token", grant="client_credentials", user_id=None,
        auth_method="client_secret_basic", scope="",
    )  # fmt: skip
    endpoint.fetch(request, SECRET, 600)
    sent = oauth.requests[0]
    assert sent.form == {"grant_type": "client_credentials"}
    user, _, secret = base64.b64decode(sent.headers["authorization"][6:]).decode().partition(":")
    assert (user, sent.client_secret) == ("zendesk-client", SECRET)
    assert secret != SECRET  # RFC 6749 §2.3.1: form-encoded before the Basic encoding


def test_plain_http_is_refused_unless_the_settings_allow_it(oauth: TokenServer) -> None:
    with (
        Upstream(Settings(allow_http_token_urls=False)) as strict,
        pytest.raises(UpstreamRejected) as refused,
    ):
        strict.fetch(delegation(oauth), SECRET, 600)
    assert refused.value.upstream_error == "insecure_token_url"
    assert oauth.calls == 0


# -- what comes back ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [(None, 600), (120, 120), ("900", 900), (-5, 600), (True, 600), ("soon", 600)],
)
def test_expires_in_missing_or_unusable_means_the_default_ttl(
    endpoint: Upstream, oauth: TokenServer, expires_in: object, expected: int
) -> None:
    body = {"access_token": "at-1", "token_type": "Bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in  # type: ignore[assignment]
    oauth.then(Reply(200, body))
    assert endpoint.fetch(delegation(oauth), SECRET, 600).expires_in == expected


@pytest.mark.parametrize(
    ("reply", "error", "status"),
    [
        (Reply(400, {"error": "invalid_grant"}), "invalid_grant", 400),
        (Reply(401, {"error": "invalid_client"}), "invalid_client", 401),
        (Reply(400, {"error": "<script>alert(1)</script>"}), "invalid_response", 400),
        (Reply(404, b"<html>not found</html>"), "invalid_response", 404),
        (Reply(200, {"token_type": "Bearer"}), "invalid_response", 200),
        (Reply(200, {"access_token": 42}), "invalid_response", 200),
        (Reply(200, b"[]"), "invalid_response", 200),
    ],
    ids=["oauth-400", "oauth-401", "unsafe-code", "html-404", "no-token", "token-not-text", "list"],
)
def test_a_final_answer_is_rejected_once_without_a_retry(
    endpoint: Upstream,
    oauth: TokenServer,
    pauses: list[float],
    reply: Reply,
    error: str,
    status: int,
) -> None:
    oauth.then(reply)
    with pytest.raises(UpstreamRejected) as rejected:
        endpoint.fetch(delegation(oauth), SECRET, 600)
    assert (rejected.value.upstream_error, rejected.value.upstream_status) == (error, status)
    assert (oauth.calls, pauses) == (1, [])


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_and_429_are_retried_until_an_answer(
    endpoint: Upstream, oauth: TokenServer, pauses: list[float], status: int
) -> None:
    oauth.then(Reply(status, {}), Reply(status, {}))
    assert endpoint.fetch(delegation(oauth), SECRET, 600).access_token
    assert (oauth.calls, len(pauses)) == (3, 2)


def test_attempts_stop_at_the_configured_maximum(oauth: TokenServer, pauses: list[float]) -> None:
    settings = Settings(allow_http_token_urls=True, upstream_max_attempts=5)
    oauth.default = Reply(503, {})
    with (
        Upstream(settings, sleep=pauses.append) as five,
        pytest.raises(UpstreamUnavailable) as unavailable,
    ):
        five.fetch(delegation(oauth), SECRET, 600)
    assert (unavailable.value.reason, oauth.calls, len(pauses)) == ("http_503", 5, 4)


def test_backoff_is_exponential_with_full_jitter(
    endpoint: Upstream, oauth: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        ranges.append((low, high))
        return high

    monkeypatch.setattr(upstream.random, "uniform", uniform)
    oauth.default = Reply(502, {})
    with pytest.raises(UpstreamUnavailable):
        endpoint.fetch(delegation(oauth), SECRET, 600)
    base = upstream.BACKOFF_BASE
    assert ranges == [(0, base), (0, base * 2)]


def test_retry_after_is_honoured(
    endpoint: Upstream, oauth: TokenServer, pauses: list[float]
) -> None:
    oauth.then(Reply(429, {"error": "slow_down"}, {"Retry-After": "2"}))
    endpoint.fetch(delegation(oauth), SECRET, 600)
    assert (pauses, oauth.calls) == ([2.0], 2)


def test_a_retry_after_past_the_deadline_gives_up_at_once_and_passes_it_on(
    endpoint: Upstream, oauth: TokenServer, pauses: list[float]
) -> None:
    oauth.then(Reply(503, {}, {"Retry-After": "3600"}))
    with pytest.raises(UpstreamUnavailable) as unavailable:
        endpoint.fetch(delegation(oauth), SECRET, 600)
    assert (oauth.calls, pauses) == (1, [])
    assert unavailable.value.retry_after == 60  # capped: a token endpoint's wish, not a lockout


def test_a_retry_after_date_falls_back_to_backoff(
    endpoint: Upstream, oauth: TokenServer, pauses: list[float]
) -> None:
    oauth.then(Reply(503, {}, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}))
    endpoint.fetch(delegation(oauth), SECRET, 600)
    assert len(pauses) == 1 and 0 <= pauses[0] <= upstream.BACKOFF_BASE


def test_each_try_times_out_and_then_the_endpoint_is_unavailable(
    endpoint: Upstream, oauth: TokenServer, pauses: list[float]
) -> None:
    oauth.default = Reply(delay=1.0)  # past the 0.5 s per-try timeout
    with pytest.raises(UpstreamUnavailable) as unavailable:
        endpoint.fetch(delegation(oauth), SECRET, 600)
    assert (unavailable.value.reason, oauth.calls, len(pauses)) == ("timeout", 3, 2)


def test_the_overall_deadline_cuts_tries_short(
    oauth: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "DEADLINE", 1.0)
    settings = Settings(allow_http_token_urls=True, upstream_timeout=0.4, upstream_max_attempts=10)
    oauth.default = Reply(delay=2.0)
    with Upstream(settings, sleep=lambda _s: None) as patient, pytest.raises(UpstreamUnavailable):
        patient.fetch(delegation(oauth), SECRET, 600)
    assert 1 <= oauth.calls < 10  # a 1 s deadline leaves room for at most a few 0.4 s tries


def test_network_errors_are_retried(endpoint: Upstream, pauses: list[float]) -> None:
    port = free_port()  # nobody listens there
    request = TokenRequest(
        f"http://127.0.0.1:{port}/token", "c", "client_secret_post", "client_credentials",
        None, None, "",
    )  # fmt: skip
    with pytest.raises(UpstreamUnavailable) as unavailable:
        endpoint.fetch(request, SECRET, 600)
    assert (unavailable.value.reason, len(pauses)) == ("network_error", 2)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tls.Certificates:
    return tls.make(tmp_path_factory.mktemp("tls"))


def test_an_untrusted_certificate_is_a_tls_error_and_nothing_is_sent(
    certificates: tls.Certificates, pauses: list[float]
) -> None:
    with (
        serving(certificates.server_context()) as server,
        Upstream(Settings(upstream_timeout=2.0), sleep=pauses.append) as made,  # certifi's CAs
        pytest.raises(UpstreamUnavailable) as unavailable,
    ):
        made.fetch(delegation(server), SECRET, 600)
    assert unavailable.value.reason == "tls_error"
    assert server.calls == 0  # no handshake, so no request: the secret never left


def test_a_token_endpoint_behind_a_private_ca_works_once_that_ca_is_trusted(
    certificates: tls.Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    with (
        serving(certificates.server_context()) as server,
        Upstream(Settings(upstream_timeout=2.0)) as made,
    ):
        token = made.fetch(delegation(server), SECRET, 600)
    assert server.url.startswith("https://")
    issued = server.introspect(token.access_token)
    assert issued is not None and (issued.tenant, issued.user_id) == ("intdev2", USER)


def test_failures_are_logged_without_secret_or_user(
    endpoint: Upstream, oauth: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth.then(Reply(503, {}))
    token = endpoint.fetch(delegation(oauth), SECRET, 600).access_token
    assert "token endpoint failed" in caplog.text  # the logs were captured at all
    for secret in (SECRET, USER, token):
        assert secret not in caplog.text
    assert repr(token) not in repr(endpoint.fetch(delegation(oauth), SECRET, 600))


# -- the circuit (state in the database, both engines) -----------------------------------------


def _fail(runtime: Runtime, clock: FrozenClock, times: int) -> None:
    with runtime.session() as session:
        for _ in range(times):
            circuit.failed(session, "auth:443", clock(), "http_503", counts=True)


def _health(runtime: Runtime) -> UpstreamHealth:
    with runtime.session() as session:
        found = session.get(UpstreamHealth, "auth:443")
        assert found is not None
        session.expunge(found)
        return found


def test_the_circuit_opens_on_the_fifth_unavailable_failure(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _fail(runtime, clock, circuit.THRESHOLD - 1)
    with runtime.session() as session:
        circuit.admit(session, "auth:443", clock())  # still closed
    _fail(runtime, clock, 1)
    with runtime.session() as session, pytest.raises(UpstreamUnavailable) as refused:
        circuit.admit(session, "auth:443", clock() + dt.timedelta(seconds=10))
    assert refused.value.retry_after == 20
    assert _health(runtime).last_error == "http_503"


def test_oauth_errors_do_not_move_the_circuit(runtime: Runtime, clock: FrozenClock) -> None:
    _fail(runtime, clock, circuit.THRESHOLD - 1)
    with runtime.session() as session:
        circuit.failed(session, "auth:443", clock(), "invalid_client", counts=False)
        circuit.admit(session, "auth:443", clock())
    assert _health(runtime).consecutive_failures == circuit.THRESHOLD - 1


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _fail(runtime, clock, circuit.THRESHOLD)
    later = clock() + circuit.OPEN_FOR + dt.timedelta(seconds=1)
    with runtime.session() as first, runtime.session() as second:
        circuit.admit(first, "auth:443", later)  # the probe
        with pytest.raises(UpstreamUnavailable):
            circuit.admit(second, "auth:443", later)
        circuit.succeeded(first, "auth:443", later, 12.5)
        circuit.admit(second, "auth:443", later)
    health = _health(runtime)
    assert (health.circuit_open_until, health.consecutive_failures) == (None, 0)
    assert health.last_success_at == later and health.latencies_ms == [12.5]


def test_a_failed_probe_opens_the_circuit_again(runtime: Runtime, clock: FrozenClock) -> None:
    _fail(runtime, clock, circuit.THRESHOLD)
    later = clock() + circuit.OPEN_FOR + dt.timedelta(seconds=1)
    with runtime.session() as session:
        circuit.admit(session, "auth:443", later)
        circuit.failed(session, "auth:443", later, "timeout", counts=True)
        with pytest.raises(UpstreamUnavailable) as refused:
            circuit.admit(session, "auth:443", later + dt.timedelta(seconds=1))
    assert refused.value.retry_after == 29


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("600", 60.0),
        ("Sun, 22 Nov 2026 12:00:30 GMT", 30.0),
        ("Sun, 22 Nov 2026 11:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str, expected: float | None) -> None:
    import datetime as dt

    import httpx

    from vault.upstream.client import _retry_after

    noon = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC).timestamp()
    response = httpx.Response(503, headers={"Retry-After": header} if header else {})
    assert _retry_after(response, now=lambda: noon) == expected


# -- no leaks ----------------------------------------------------------------------------------


def _open_sockets() -> int:
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if _is_socket(fd))


def _is_socket(fd: Path) -> bool:
    try:
        return os.readlink(fd).startswith("socket:")
    except OSError:  # closed while we looked
        return False


def _settled(baseline: tuple[int, int], slack: int) -> tuple[int, int]:
    """Threads and sockets once the servers' handler threads for closed connections have ended."""
    deadline = time.monotonic() + 5
    while True:
        now = (threading.active_count(), _open_sockets())
        settled = all(n <= b + slack for n, b in zip(now, baseline, strict=True))
        if settled or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def test_every_fault_ends_in_the_contracts_error_and_leaves_no_thread_or_socket_behind(
    oauth: TokenServer, certificates: tls.Certificates, pauses: list[float]
) -> None:
    closed_port = free_port()
    too_big = {"access_token": "x" * 200_000, "token_type": "Bearer"}
    faults: dict[str, tuple[Reply | None, str, type[Exception]]] = {
        "slow": (Reply(delay=0.5), "timeout", UpstreamUnavailable),
        "429": (Reply(429, {}, {"Retry-After": "1"}), "http_429", UpstreamUnavailable),
        "5xx": (Reply(503, {}), "http_503", UpstreamUnavailable),
        "malformed": (Reply(200, b"{not json"), "invalid_response", UpstreamRejected),
        "no-token": (Reply(200, {"token_type": "Bearer"}), "invalid_response", UpstreamRejected),
        "huge": (Reply(200, too_big), "invalid_response", UpstreamRejected),
        "redirect": (Reply(302, {}, {"Location": "https://elsewhere.test/"}), "unexpected_redirect", UpstreamRejected),
        "down": (None, "network_error", UpstreamUnavailable),
        "tls": (None, "tls_error", UpstreamUnavailable),
    }  # fmt: skip
    settings = Settings(allow_http_token_urls=True, upstream_timeout=0.2, upstream_max_attempts=2)
    with (
        serving(certificates.server_context()) as tls_server,
        Upstream(settings, sleep=pauses.append) as made,
    ):
        targets = {
            "down": delegation(oauth, token_url=f"http://127.0.0.1:{closed_port}/token"),
            "tls": delegation(tls_server),
        }

        def every_fault() -> None:
            for name, (reply, code, kind) in faults.items():
                if reply is not None:
                    oauth.default = reply
                with pytest.raises(kind) as failed:
                    made.fetch(targets.get(name) or delegation(oauth), SECRET, 600)
                got = failed.value
                assert (
                    got.reason if isinstance(got, UpstreamUnavailable) else got.upstream_error
                ) == code, name  # type: ignore[attr-defined]

        every_fault()  # the first round opens the pool's keep-alive connections
        baseline = _settled((threading.active_count(), _open_sockets()), slack=0)
        for _ in range(5):
            every_fault()
        after = _settled(baseline, slack=2)
    # 45 more failed requests (90 tries): a leak of one thread or socket per try would show.
    assert after[0] <= baseline[0] + 2, f"threads {baseline[0]} -> {after[0]}"
    assert after[1] <= baseline[1] + 2, f"sockets {baseline[1]} -> {after[1]}"
