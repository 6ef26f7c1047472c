"""Where a cached token request's time goes, without HTTP: the WSGI apps called directly.

    python -m tests.perf.hotpath [--calls 4000] [--threads 1] [--cpu] [--profile]

Times the floor and the service on the cached-token path (SQLite, one tenant): the hit as the
service answers it (beneath Flask, app/hits.py) and the same hit through the Flask view; then
switches parts of the service off one after another and prints what each saved (measurement only:
the switches are monkeypatches in this process, never in the product). ``--profile`` prints cProfile's
top functions by cumulative time instead. ``--threads 8`` calls from 8 threads at once and
reports CPU time per call: the cost of contention for the interpreter lock, which one thread never
meets. ``--cpu`` reports CPU time per call with one thread too: steadier than wall time on a
loaded machine. Medians of 7 batches; nothing here is asserted.
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
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.perf import bench
from tests.support import builders, oauth_server
from vault.keyring.entries import new_key_entry

App = Callable[[dict[str, Any], Callable[..., Any]], Any]


@contextmanager
def cached_service() -> Iterator[tuple[App, dict[str, Any], bytes]]:
    """The service app with one tenant's token cached, and the request to replay."""
    workdir = Path(tempfile.mkdtemp(prefix="dv-hotpath-"))
    with seeded(workdir, tenants=1) as key:
        from app import create_app

        environ, body = token_request(key, {"app": "zendesk", "tenant": "tenant0"})
        # Log lines are formatted and written as in production, to /dev/null rather than a terminal
        # (the handler keeps the stream it was built with, so the sink stays open for the run).
        sink = open(os.devnull, "w")  # noqa: SIM115
        with contextlib.redirect_stderr(sink):
            app = create_app()
        if not call(app, environ, body).startswith("200"):  # fills both cache levels
            raise RuntimeError("the service did not issue a token")
        yield app, environ, body


@contextmanager
def seeded(
    workdir: Path, tenants: int, oauth: oauth_server.TokenServer | None = None
) -> Iterator[str]:
    """A SQLite database with an app, ``tenants`` delegations and a service key (yielded), and
    the environment that serves it; the app's token endpoint is ``oauth`` or one of its own."""
    with contextlib.ExitStack() as stack:
        dbs = stack.enter_context(bench.databases({"sqlite"}, workdir))
        oauth = oauth or stack.enter_context(oauth_server.serving())
        db, keys = dbs["sqlite"](), new_key_entry("hot1")
        rt = bench.runtime_for(db, keys, workdir)
        builders.register_app(rt, token_url=oauth.url)
        key = builders.create_key(rt, "hot")
        bench.seed_delegations(rt, tenants)
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
    time per call while that many threads call at once (what gunicorn's gthread workers do)."""
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
    args = parser.parse_args(argv)
    n = args.threads
    from tests.perf.floor import app as floor

    with cached_service() as (app, environ, body):
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(lambda: [call(app, environ, body) for _ in range(args.calls)])
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
            return 0
        print(
            json.dumps(
                {
                    "threads": n,
                    "floor_us": per_call_us(floor, environ, body, args.calls, n, args.cpu),
                }
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
        for name, switch_off in switches(app):
            switch_off()
            after = per_call_us(app, environ, body, args.calls, n, args.cpu)
            print(
                json.dumps(
                    {"without": name, "service_us": after, "saved_us": round(before - after, 1)}
                )
            )
            before = after
    return 0


if __name__ == "__main__":
    sys.exit(main())
