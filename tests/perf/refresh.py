"""What a hot key's callers wait while its token is refreshed: the WSGI app called directly.

    python -m tests.perf.refresh [--seconds 20] [--threads 32] [--interval 0.08] [--delay 0.25]

Two keys of one service, in the same run: one whose token lives an hour (plain cache hits), and
one whose token lives ``--lifetime`` seconds, so its refresh margin (capped at half the lifetime)
is crossed every few seconds while ``--threads`` threads ask for it at a steady pace. The token
endpoint answers after ``--delay`` seconds (Seismic's take hundreds of milliseconds). Prints the
latency percentiles of each and their ratio; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.perf.hotpath import App, call, seeded, token_request
from tests.support import oauth_server

ASK = {"app": "zendesk", "min_ttl": 0}


def hammer(app: App, environ: dict[str, Any], body: bytes, args: argparse.Namespace) -> list[float]:
    """Latencies (ms) of every request made by ``args.threads`` threads, each asking every
    ``args.interval`` seconds (a steady load below saturation, so queueing does not hide waits)."""
    latencies: list[float] = []
    failures: list[str] = []
    stop = time.monotonic() + args.seconds

    def one() -> None:
        mine = []
        due = time.monotonic()
        while due < stop:
            started = time.perf_counter()
            status = call(app, environ, body)
            mine.append((time.perf_counter() - started) * 1000)
            if not status.startswith("200"):
                failures.append(status)
            due += args.interval
            time.sleep(max(0.0, due - time.monotonic()))
        latencies.extend(mine)

    workers = [threading.Thread(target=one) for _ in range(args.threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return latencies


def percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=1000)
    return {
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(cuts[989], 3),
        "p999_ms": round(cuts[998], 3),
        "max_ms": round(max(latencies), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per key")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument(
        "--interval", type=float, default=0.08, help="seconds between a thread's requests"
    )
    parser.add_argument("--delay", type=float, default=0.25, help="token endpoint's answer time")
    parser.add_argument("--lifetime", type=int, default=8, help="the hot key's token lifetime")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dv-refresh-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        return run(args, workdir)


def run(args: argparse.Namespace, workdir: Path) -> int:
    with oauth_server.serving() as oauth, seeded(workdir, 2, oauth) as key:
        from app import create_app

        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            app = create_app()
            plain, plain_body = token_request(key, {**ASK, "tenant": "tenant0"})
            oauth.default = oauth_server.Reply(delay=args.delay)  # an hour
            call(app, plain, plain_body)
            hits = hammer(app, plain, plain_body, args)
            calls = oauth.calls
            oauth.default = oauth_server.Reply(expires_in=args.lifetime, delay=args.delay)
            hot, hot_body = token_request(key, {**ASK, "tenant": "tenant1"})
            call(app, hot, hot_body)
            crossing = hammer(app, hot, hot_body, args)
            refreshes = oauth.calls - calls - 1
    result = {"plain_hits": percentiles(hits), "across_refreshes": percentiles(crossing)}
    result["refreshes"] = refreshes
    result["p99_ratio"] = round(
        result["across_refreshes"]["p99_ms"] / result["plain_hits"]["p99_ms"],
        2,  # type: ignore[index]
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
