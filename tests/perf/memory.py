"""Where a worker's memory goes under sustained load: tracemalloc snapshots compared over minutes.

    python -m tests.perf.memory [--minutes 5] [--warmup 1] [--tenants 200] [--threads 4]
                                [--token-lifetime 6] [--sqlite]

One process serves token requests through the Flask app (the whole stack but gunicorn) against
PostgreSQL (or SQLite) and a loopback token server issuing short-lived tokens, so misses, refreshes
ahead of expiry and cache writes never stop; 8% of requests are delegation changes. After the
warm-up, a snapshot a minute: printed are the traced total, the process's RSS, and the lines that
grew the most between the first snapshot and the last.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

from app import create_app
from tests.support import postgres
from tests.support.builders import create_key, delegation_body, register_app, signed
from tests.support.oauth_server import Reply, serving
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

CONFIG = "/api/v1/applications/zendesk/config"
FRAMES = 32  # frames kept per traced allocation


HARNESS = (  # the token server's threads (http.server) serve no request of the service's
    "*/tests/support/oauth_server.py", "*/tests/perf/memory.py", "*/http/server.py",
    "*/socketserver.py", tracemalloc.__file__,
)  # fmt: skip


def _vault(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    """Without what the harness keeps: the token server in this process records every request
    and token it issued (to be checked), which no worker of the service holds."""
    return snapshot.filter_traces(
        [tracemalloc.Filter(False, pattern, all_frames=True) for pattern in HARNESS]
    )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def _database(sqlite: bool, folder: Path) -> Iterator[str]:
    if sqlite:
        yield f"sqlite:///{folder / 'vault.db'}"
        return
    with postgres.running() as server:
        yield server.url_for("postgres").replace("postgresql://", "postgresql+psycopg://")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.memory")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--token-lifetime", type=int, default=6)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind: the server is stopped
    with tempfile.TemporaryDirectory(prefix="dv-memory-") as folder:
        _run(args, Path(folder))


def _run(args: argparse.Namespace, folder: Path) -> None:
    print(f"memory {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {vars(args)}", flush=True)
    with _database(args.sqlite, folder) as url, serving() as oauth:
        oauth.default = Reply(expires_in=args.token_lifetime)
        engine = make_engine(url)
        migrate.upgrade(engine)
        settings = Settings(
            database_url=url, instance_path=folder / "instance", allow_http_token_urls=True
        )
        runtime = Runtime.build(
            settings, keyring=parse_keyring([new_key_entry("m1")]), engine=engine
        )
        ensure_key_check(runtime)
        register_app(runtime, token_url=oauth.url)
        key = create_key(runtime, "svc")
        app = create_app(runtime=runtime)
        tenants = [(f"t{n:04d}", str(uuid.uuid4())) for n in range(args.tenants)]
        stamps: dict[str, dt.datetime] = {}
        locks = {name: threading.Lock() for name, _ in tenants}

        def change(client: object, name: str, tenant_id: str) -> None:
            with locks[name]:
                now = dt.datetime.now(dt.UTC).replace(microsecond=0)
                stamp = stamps[name] = max(now, stamps.get(name, now) + dt.timedelta(seconds=1))
                body = delegation_body(stamp, tenant=name, tenantId=tenant_id,
                                       delegationUserId=str(uuid.uuid4()))  # fmt: skip
                raw, headers = signed(body)
                client.post(CONFIG, data=raw, headers=headers)  # type: ignore[attr-defined]

        seed_client = app.test_client()
        for name, tenant_id in tenants:
            change(seed_client, name, tenant_id)
        stop = threading.Event()
        served = [0]

        def loop(n: int) -> None:
            pick = random.Random(n)
            client = app.test_client()
            while not stop.is_set():
                name, tenant_id = pick.choice(tenants)
                if pick.random() < 0.92:
                    client.post("/internal/v1/token", json={"app": "zendesk", "tenant": name},
                                headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                else:
                    change(client, name, tenant_id)
                served[0] += 1

        threads = [
            threading.Thread(target=loop, args=(n,), daemon=True) for n in range(args.threads)
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.warmup * 60)
        # Deep enough that every allocation of the token server's threads has one of its frames
        # (with 8, headers parsed in http.client under http.server were counted as the service's).
        tracemalloc.start(FRAMES)
        first = tracemalloc.take_snapshot()
        began, rss0 = time.monotonic(), _rss_mb()
        print(f"warm: rss {rss0:.1f} MB, {served[0]} requests so far", flush=True)
        last = first
        for minute in range(1, int(args.minutes) + 1):
            time.sleep(60)
            oauth.forget()  # its record of requests and tokens is the harness's, and unused here
            last = tracemalloc.take_snapshot()
            traced = sum(stat.size for stat in _vault(last).statistics("filename"))
            print(f"[{minute:>2}] {served[0]} requests, traced (service) {traced / 1e6:.2f} MB, "
                  f"rss {_rss_mb():.1f} MB", flush=True)  # fmt: skip
        stop.set()
        for thread in threads:
            thread.join(30)
        minutes = (time.monotonic() - began) / 60
        growth = _vault(last).compare_to(_vault(first), "lineno")
        print(f"rss {rss0:.1f} -> {_rss_mb():.1f} MB over {minutes:.1f} min "
              f"({(_rss_mb() - rss0) / minutes:+.2f} MB/min); largest growth by line:")  # fmt: skip
        for stat in growth[:12]:
            print(
                f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {stat.traceback[0]}"
            )
        runtime.close()


if __name__ == "__main__":
    main()
