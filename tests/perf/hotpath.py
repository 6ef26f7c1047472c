"""Where a cached token request's time goes, without HTTP: the WSGI apps called directly.

    python -m tests.perf.hotpath [--calls 4000] [--threads 1] [--cpu] [--profile] [--tracing]

Times the floor and the service on the cached-token path (SQLite, one tenant): the hit as the
service answers it (beneath Flask, app/hits.py) and the same hit through the Flask view; then
switches parts of the service off one after another and prints what each saved (measurement only:
the switches are monkeypatches in this process, never in the product). ``--profile`` prints cProfile's
top functions by cumulative time instead. ``--threads 8`` calls from 8 threads at once and
reports CPU time per call: the cost of contention for the interpreter lock, which one thread never
meets. The same hit with a workload identity's JWT is compared with the key's, in CPU time.
``--cpu`` reports CPU time per call with one thread too: steadier than wall time on a loaded
machine. ``--tracing`` turns OpenTelemetry tracing on (exporting to a loopback OTLP receiver)
before the app is built: every figure then includes a server span per call. Medians of 7
batches; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from joserfc import jwt

from tests.perf import bench
from tests.support import builders, oauth_server, oidc
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime

App = Callable[[dict[str, Any], Callable[..., Any]], Any]


@contextmanager
def cached_service() -> Iterator[tuple[App, dict[str, Any], bytes, dict[str, Any]]]:
    """The service app with one tenant's token cached, the request to replay, and the same
    request made with a workload identity's JWT instead of the key."""
    workdir = Path(tempfile.mkdtemp(prefix="dv-hotpath-"))
    with workload_jwt() as (trust_issuer, jwt), seeded(workdir, 1, setup=trust_issuer) as key:
        from app import create_app

        environ, body = token_request(key, {"app": "zendesk", "tenant": "tenant0"})
        jwt_environ = {**environ, "HTTP_AUTHORIZATION": f"Bearer {jwt}"}
        # Log lines are formatted and written as in production, to /dev/null rather than a terminal
        # (the handler keeps the stream it was built with, so the sink stays open for the run).
        sink = open(os.devnull, "w")  # noqa: SIM115
        with contextlib.redirect_stderr(sink):
            app = create_app()
        if not call(app, environ, body).startswith("200"):  # fills both cache levels
            raise RuntimeError("the service did not issue a token")
        if not call(app, jwt_environ, body).startswith("200"):  # verifies the JWT once
            raise RuntimeError("the service refused the workload's JWT")
        yield app, environ, body, jwt_environ


@contextmanager
def workload_jwt() -> Iterator[tuple[Callable[[Runtime], None], str]]:
    """An issuer's key set on loopback, what trusts it (with an identity for subject "hot"),
    and a JWT it signed. The hit's cost is the subject here, not the issuer: a key set served
    by a plain loopback server stands in for an identity provider."""
    key = oidc.signing_key("bench-1")
    document = json.dumps({"keys": [key.as_dict(private=False)]}).encode()
    with oidc.serving_key_set(document) as jwks_url:
        issuer_url = jwks_url.removesuffix("/jwks")

        def trust(rt: Runtime) -> None:
            oidc.trust(rt, issuer_url, name="bench", jwks_url=jwks_url)
            oidc.identify(rt, "hot-jwt", "hot", issuer="bench")

        now = int(time.time())
        claims = {"iss": issuer_url, "sub": "hot", "aud": "delegation-vault",
                  "iat": now, "exp": now + 3600}  # fmt: skip
        yield trust, jwt.encode({"alg": "RS256", "kid": "bench-1"}, claims, key)


@contextmanager
def traced() -> Iterator[None]:
    """Tracing on in this process, its spans exported to a loopback OTLP receiver running in a
    process of its own (decoding them is a collector's work, not the service's)."""
    from vault import tracing

    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests.support.otlp"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.stdout.readline().strip()
        if not tracing.start():
            raise RuntimeError("tracing did not start")
        try:
            yield
        finally:
            tracing.stop()
    finally:
        receiver.terminate()
        receiver.wait(10)


@contextmanager
def seeded(
    workdir: Path,
    tenants: int,
    oauth: oauth_server.TokenServer | None = None,
    setup: Callable[[Runtime], None] | None = None,
) -> Iterator[str]:
    """A SQLite database with an app, ``tenants`` delegations and a service key (yielded), and
    the environment that serves it; the app's token endpoint is ``oauth`` or one of its own;
    ``setup`` adds what else a benchmark needs."""
    with contextlib.ExitStack() as stack:
        dbs = stack.enter_context(bench.databases({"sqlite"}, workdir))
        oauth = oauth or stack.enter_context(oauth_server.serving())
        db, keys = dbs["sqlite"](), new_key_entry("hot1")
        rt = bench.runtime_for(db, keys, workdir)
        builders.register_app(rt, token_url=oauth.url)
        key = builders.create_key(rt, "hot")
        bench.seed_delegations(rt, tenants)
        if setup is not None:
            setup(rt)
        rt.close()
        os.environ.update(bench.service_env(db, keys, workdir))
        yield key


def token_request(key: str, fields: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The WSGI environ and body of a token request with ``fields``."""
    body = json.dumps(fields).encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/internal/v1/token", "QUERY_STRING": "",
        "SERVER_NAME": "bench", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {key}", "REMOTE_ADDR": "127.0.0.1",
        "wsgi.errors": sys.stderr,
    }  # fmt: skip
    return environ, body


def call(app: App, environ: dict[str, Any], body: bytes) -> str:
    statuses: list[str] = []
    result = app(
        {**environ, "wsgi.input": io.BytesIO(body)}, lambda s, h, e=None: statuses.append(s)
    )
    b"".join(result)
    getattr(result, "close", lambda: None)()
    return statuses[0]


def per_call_us(
    app: App, environ: dict[str, Any], body: bytes, calls: int, threads: int = 1, cpu: bool = False
) -> float:
    """Median of 7 batches: wall time per call in one thread; with ``threads``, the process's CPU
    time per call while that many threads call at once (what gunicorn's gthread workers do);
    with ``cpu``, CPU time in one thread too (steadier than wall time on a busy machine)."""
    batches = []
    for _ in range(7):
        workers = [
            threading.Thread(
                target=lambda: [call(app, environ, body) for _ in range(calls // threads)]
            )
            for _ in range(threads)
        ]
        clock = time.perf_counter if threads == 1 and not cpu else time.process_time
        started = clock()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        batches.append((clock() - started) / (calls // threads * threads) * 1e6)
    return round(statistics.median(batches), 1)


def switches(app: Any) -> list[tuple[str, Callable[[], None]]]:
    """Parts of a hit answered beneath Flask, each turned off in this process only (in order,
    so each figure is what that part costs with the ones before it already off)."""
    from app import observe

    reads = app.extensions["vault"].reads
    return [
        ("access line", lambda: logging.getLogger("delegation_vault.access").setLevel(logging.WARNING)),
        ("request duration histogram", lambda: setattr(observe, "duration", lambda *_: None)),
        ("token request counter", lambda: setattr(observe, "count_token_request", lambda *_: None)),
        ("change probe", lambda: setattr(reads, "_ask", lambda: 1)),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls per batch")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument(
        "--threads", type=int, default=1, help="callers at once (above 1: CPU time per call)"
    )
    parser.add_argument("--cpu", action="store_true", help="CPU time per call with one thread too")
    parser.add_argument("--tracing", action="store_true", help="OpenTelemetry tracing on")
    args = parser.parse_args(argv)
    from tests.perf.floor import app as floor

    with contextlib.ExitStack() as stack:
        if args.tracing:
            stack.enter_context(traced())
        return measure(args, floor, stack.enter_context(cached_service()))


def measure(
    args: argparse.Namespace,
    floor: App,
    service: tuple[App, dict[str, Any], bytes, dict[str, Any]],
) -> int:
    """Print the figures of the module's docstring for ``service``."""
    n = args.threads
    app, environ, body, jwt_environ = service
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [call(app, environ, body) for _ in range(args.calls)])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        return 0
    print(
        json.dumps(
            {"threads": n, "floor_us": per_call_us(floor, environ, body, args.calls, n, args.cpu)}
        )
    )
    # A query string is never answered beneath Flask: the same hit, through the view.
    via_view = {**environ, "QUERY_STRING": "via=view"}
    print(
        json.dumps(
            {"service_via_view_us": per_call_us(app, via_view, body, args.calls, n, args.cpu)}
        )
    )
    before = per_call_us(app, environ, body, args.calls, n, args.cpu)
    print(json.dumps({"service_us": before}))
    # The same hit with a workload identity's JWT: verified once, then remembered by the
    # token's SHA-256 until it expires. CPU time per call; key and JWT alternate, three
    # rounds each, so a busy machine's drift falls on both; the ratio is of the medians.
    key_us, jwt_us = [], []
    for _ in range(3):
        key_us.append(per_call_us(app, environ, body, args.calls, n, cpu=True))
        jwt_us.append(per_call_us(app, jwt_environ, body, args.calls, n, cpu=True))
    key_hit, jwt_hit = statistics.median(key_us), statistics.median(jwt_us)
    print(json.dumps({"key_hit_cpu_us": key_hit, "jwt_hit_cpu_us": jwt_hit,
                      "jwt_over_key": round(jwt_hit / key_hit, 3)}))  # fmt: skip
    # As a measurement only, in this process: the JWT verified on every call (no memory).
    workloads = app.extensions["vault"].workloads
    workloads.recall = lambda *_: None
    each = per_call_us(app, jwt_environ, body, max(args.calls // 4, 1), n, cpu=True)
    print(json.dumps({"jwt_verified_each_call_cpu_us": each,
                      "over_key": round(each / key_hit, 3)}))  # fmt: skip
    del workloads.recall
    for name, switch_off in switches(app):
        switch_off()
        after = per_call_us(app, environ, body, args.calls, n, args.cpu)
        print(
            json.dumps({"without": name, "service_us": after, "saved_us": round(before - after, 1)})
        )
        before = after
    return 0


if __name__ == "__main__":
    sys.exit(main())
