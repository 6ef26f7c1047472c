"""Scale simulation: N instances of the service on one PostgreSQL, what each costs the database.

    python -m tests.perf.scale [--instances 1,2,4,8] [--hits 400] [--writes 20] [--idle 3]

For each N it starts N instances (gunicorn, ``--workers`` each; instance 0 reaches the database
through a relay that can be cut) and reports, from ``pg_stat_statements``:
- statements per cached hit (hits spread over the instances, the idle rate subtracted);
- statements per second per idle instance (lease renewals);
- the latency of a binding write (revoking a key, in-process, so the figure is the write and
  its wait for acknowledgements, not a command's start-up) p50/p99 with every instance live,
  then with instance 0 cut off (the first write waits for its lease to lapse; later ones do not).
One JSON line per N. Nothing here asserts a time; the figures go into docs/freshness.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.orm import Session

from app import create_app
from tests.support import builders, oauth_server, service
from tests.support.postgres import PostgresServer
from tests.support.relay import Relay, relaying
from vault import migrate
from vault.callers import keys
from vault.db import make_engine, writing
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

DB = "scale"
TOKEN = "/internal/v1/token"


def statements(server: PostgresServer) -> int:
    with psycopg.connect(server.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
            (DB,),
        ).fetchone()
    return int(row[0]) if row else 0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed(
    server: PostgresServer, workdir: Path, oauth_url: str
) -> tuple[Runtime, dict[str, str], str]:
    server.psql_execute(f"CREATE DATABASE {DB}")
    server.psql_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    url = server.url_for(DB).replace("postgresql://", "postgresql+psycopg://")
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    entry = new_key_entry("scale1")
    settings = Settings(
        database_url=url, instance_path=workdir / "instance", allow_http_token_urls=True
    )
    runtime = Runtime.build(settings, keyring=parse_keyring([entry]))
    ensure_key_check(runtime)
    builders.register_app(runtime, token_url=oauth_url)
    key = builders.create_key(runtime, "svc")
    raw, headers = builders.signed(builders.delegation_body(dt.datetime.now(dt.UTC)))
    assert (
        create_app(runtime=runtime)
        .test_client()
        .post("/api/v1/applications/zendesk/config", data=raw, headers=headers)
        .status_code
        == 202
    )
    env = {
        "DATABASE_URL": url, "DV_KEYS": entry, "DV_KEYS_FILE": "", "DV_ENV": "development",
        "DV_ALLOW_HTTP_TOKEN_URLS": "1", "DV_INSTANCE_PATH": str(workdir / "instance"),
        "DV_LOG_FORMAT": "json", "DV_DB_TIMEOUT": "1",
    }  # fmt: skip
    return runtime, env, key


@contextlib.contextmanager
def instances(
    n: int, env: dict[str, str], workdir: Path, relay: Relay, workers: int
) -> Iterator[list[service.Service]]:
    cut_env = {**env, "DATABASE_URL": env["DATABASE_URL"].replace(
        env["DATABASE_URL"].rsplit(":", 1)[1].split("/", 1)[0], str(relay.port), 1
    )}  # fmt: skip
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                service.running(cut_env if i == 0 else env, workdir, workers=workers)
            )
            for i in range(n)
        ]


def commit_timed(runtime: Runtime, count: int, tag: str) -> list[float]:
    """A write that binds nothing (a new key): what one commit costs here, for comparison."""
    took = []
    for i in range(count):
        start = time.monotonic()
        builders.create_key(runtime, f"b{tag}{i}")
        took.append((time.monotonic() - start) * 1000)
    return took


def revoke_timed(runtime: Runtime, count: int, tag: str) -> list[float]:
    names = [f"w{tag}{i}" for i in range(count)]
    for name in names:
        builders.create_key(runtime, name)
    took = []
    for name in names:
        start = time.monotonic()
        with Session(runtime.engine) as session, writing(session):
            keys.revoke_key(session, name, dt.datetime.now(dt.UTC))
        took.append((time.monotonic() - start) * 1000)
    return took


def measure(
    n: int, args: argparse.Namespace, server: PostgresServer, runtime: Runtime,
    env: dict[str, str], key: str, workdir: Path,
) -> dict[str, object]:  # fmt: skip
    with relaying(server.port) as relay, instances(n, env, workdir, relay, args.workers) as live:
        auth = {"Authorization": f"Bearer {key}"}
        body = {"app": "zendesk", "tenant": "intdev2"}
        with httpx.Client(timeout=20) as client:
            for svc in live:
                for _ in range(4 * args.workers):
                    client.post(svc.url + TOKEN, json=body, headers=auth).raise_for_status()
            time.sleep(2.5)  # every lease held, every memo filled
            before, start = statements(server), time.monotonic()
            time.sleep(args.idle)
            idle = (statements(server) - before) / (time.monotonic() - start)
            before, start = statements(server), time.monotonic()
            for i in range(args.hits):
                reply = client.post(live[i % n].url + TOKEN, json=body, headers=auth)
                assert reply.status_code == 200 and reply.json()["source"] == "cache", reply.text
            spent = time.monotonic() - start
            during = statements(server) - before
        plain = commit_timed(runtime, args.writes, f"{n}p")
        live_writes = revoke_timed(runtime, args.writes, f"{n}l")
        relay.cut()
        cut_writes = revoke_timed(runtime, args.writes, f"{n}c")
        relay.mend()
    return {
        "instances": n,
        "workers_each": args.workers,
        "hits": args.hits,
        "statements_during_hits": during,
        "statements_per_hit": round(max(0.0, during - idle * spent) / args.hits, 4),
        "idle_statements_per_s_per_instance": round(idle / n, 2),
        "plain_commit_ms_p50": round(statistics.median(plain), 1),
        "write_ms_all_live": {
            "p50": round(statistics.median(live_writes), 1),
            "p99": round(quantile(live_writes, 0.99), 1),
        },
        "write_ms_one_cut_off": {
            "first": round(cut_writes[0], 1),
            "p50_after": round(statistics.median(cut_writes[1:]), 1),
            "p99_after": round(quantile(cut_writes[1:], 0.99), 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="1,2,4,8")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per instance")
    parser.add_argument("--hits", type=int, default=400)
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle measured")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dv-scale-") as tmp, oauth_server.serving() as oauth:
        server = PostgresServer()
        server.options = "-c shared_preload_libraries=pg_stat_statements"
        server.init()
        server.start()
        try:
            runtime, env, key = seed(server, Path(tmp), oauth.url)
            try:
                for n in (int(v) for v in args.instances.split(",")):
                    result = measure(n, args, server, runtime, env, key, Path(tmp))
                    print(json.dumps(result), flush=True)
            finally:
                runtime.close()
        finally:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
