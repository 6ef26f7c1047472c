"""Benchmark the service under gunicorn against a bare Flask floor, with wrk as the load.

    python -m tests.perf.bench [--duration 10] [--rounds 3] [--connections 32] [--only NAME,...]

``tokens-neighbour-postgresql`` runs the cached-token rounds while another database on the same
PostgreSQL server commits ``--neighbour-rate`` small transactions a second; ``tokens-outsider-*``
while an outsider sends ``--outsider-rate`` unsigned callbacks a second (each answered 401, each
recorded as a rejection).

Every configuration starts its own gunicorn (2 gthread workers); a bare Flask floor runs under the
same settings for the whole run. Debian's ``wrk`` drives the floor and the service in alternating
rounds (floor first, then service first, ...), with the same prepared requests, so both see the
same machine: this one is shared, and a floor measured minutes apart was seen to move by a factor
of three. Each configuration prints one JSON line: the medians of requests per second, p50 and p99
for the service and for the floor beside it, and the median of the per-round ratios. Nothing here
asserts a time; the figures go into docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, create_engine, func, insert, select, text

from tests.support import builders, oauth_server, postgres
from tests.support.ports import free_port
from vault import migrate
from vault.apps import registry as apps
from vault.callbacks.signatures import sign
from vault.clock import iso
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.keyring.sealing import row_aad
from vault.models import Delegation, ProcessedRequest
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKERS = 2
THREADS = 8


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]

    def worker_rss_mb(self) -> list[float]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        sizes = []
        for pid in children.read_text().split():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(round(int(line.split()[1]) / 1024, 1))
        return sizes


@contextlib.contextmanager
def gunicorn(target: str, env: dict[str, str]) -> Iterator[Server]:
    """Run ``target`` under gunicorn with the settings every configuration shares."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", target,
        "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
        "--worker-class", "gthread", "--threads", str(THREADS),
        "--log-level", "warning", "--chdir", str(ROOT),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield Server(f"http://127.0.0.1:{port}", process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        with contextlib.suppress(OSError):
            # The floor has no /healthz; any HTTP answer means the workers are up.
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"{url}/healthz", timeout=1)  # noqa: S310
            return
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer within 30 s")


def wrk(url: str, lines: Path, mode: str, duration: int, connections: int) -> dict[str, float]:
    """Drive ``url`` with the prepared requests in ``lines``; return wrk's summary."""
    threads = 2
    command = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
        "-s", str(HERE / "replay.lua"), url, "--", str(lines), mode, str(threads),
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    seconds = summary["duration_us"] / 1e6
    return {
        "rps": round(summary["requests"] / seconds, 1),
        "p50_ms": round(summary["p50_us"] / 1000, 2),
        "p99_ms": round(summary["p99_us"] / 1000, 2),
        "requests": summary["requests"],
        "non_2xx": summary["non_2xx"],
        "socket_errors": summary["socket_errors"],
    }


@dataclass
class Database:
    url: str
    engine_name: str


@contextlib.contextmanager
def databases(which: set[str], workdir: Path) -> Iterator[dict[str, Callable[[], Database]]]:
    """Factories for fresh, migrated databases of each engine wanted."""
    factories: dict[str, Callable[[], Database]] = {}
    counter = iter(range(1_000_000))

    def sqlite() -> Database:
        url = f"sqlite:///{workdir / f'bench-{next(counter)}.db'}"
        _upgrade(url)
        return Database(url, "sqlite")

    factories["sqlite"] = sqlite
    with contextlib.ExitStack() as stack:
        if "postgresql" in which:
            server = stack.enter_context(postgres.running())

            def pg() -> Database:
                name = f"bench_{next(counter)}"
                server.psql_execute(f"CREATE DATABASE {name}")
                url = server.url_for(name).replace("postgresql://", "postgresql+psycopg://")
                _upgrade(url)
                return Database(url, "postgresql")

            factories["postgresql"] = pg
            factories["neighbour"] = lambda: Database(server.url_for("postgres"), "postgresql")
        yield factories


def _upgrade(url: str) -> None:
    from vault.db import make_engine

    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()


def service_env(db: Database, keys: str, workdir: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": db.url,
        "DV_KEYS": keys,
        "DV_ENV": "development",
        "DV_INSTANCE_PATH": str(workdir / "instance"),
        "DV_LOG_FORMAT": "json",
        "DV_ALLOW_HTTP_TOKEN_URLS": "1",
    }


def runtime_for(db: Database, keys: str, workdir: Path) -> Runtime:
    settings = Settings(
        database_url=db.url, instance_path=workdir / "instance", allow_http_token_urls=True
    )
    rt = Runtime.build(settings, keyring=parse_keyring(keys.split(",")))
    ensure_key_check(rt)
    return rt


def callback_lines(path: Path, count: int, tenants: int) -> Path:
    """Signed delegation callbacks, each applied (a new user per tenant, timestamps rising)."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with path.open("w") as out:
        for i in range(count):
            tenant = i % tenants
            body = builders.delegation_body(
                start,
                tenant=f"tenant{tenant}",
                tenantId=str(uuid.UUID(int=tenant + 1)),
                delegationUserId=str(uuid.uuid4()),
                timestamp=iso(start + dt.timedelta(microseconds=i)),
            )
            raw = json.dumps(body, separators=(",", ":"))
            signature = sign(builders.SIGNING_SECRET, raw.encode())
            out.write(f"/api/v1/applications/zendesk/config {signature} {raw}\n")
    return path


def compare(
    service: Server, floor: Server, lines: Callable[[], Path], mode: str, args: argparse.Namespace
) -> dict[str, object]:
    """Alternate floor and service rounds on the same requests; medians and per-round ratios."""
    pairs = []
    for n in range(args.rounds):
        path = lines()
        order = (floor, service) if n % 2 == 0 else (service, floor)
        measured = {
            server.url: wrk(server.url, path, mode, args.duration, args.connections)
            for server in order
        }
        pairs.append((measured[service.url], measured[floor.url]))

    def median(which: int, metric: str) -> float:
        return round(statistics.median(pair[which][metric] for pair in pairs), 2)

    def ratio(metric: str) -> float:
        return round(statistics.median(mine[metric] / base[metric] for mine, base in pairs), 3)

    return {
        "rps": median(0, "rps"), "p50_ms": median(0, "p50_ms"), "p99_ms": median(0, "p99_ms"),
        "floor_rps": median(1, "rps"), "floor_p50_ms": median(1, "p50_ms"),
        "floor_p99_ms": median(1, "p99_ms"),
        "rps_vs_floor": ratio("rps"), "p50_vs_floor": ratio("p50_ms"),
        "p99_vs_floor": ratio("p99_ms"),
        "rounds": len(pairs), "requests": sum(int(mine["requests"]) for mine, _ in pairs),
        "non_2xx": sum(int(mine["non_2xx"]) for mine, _ in pairs),
        "socket_errors": sum(int(mine["socket_errors"]) for mine, _ in pairs),
    }  # fmt: skip


def bench_callbacks(
    db: Database, args: argparse.Namespace, workdir: Path, floor: Server
) -> dict[str, object]:
    keys = new_key_entry("bench1")
    rt = runtime_for(db, keys, workdir)
    builders.register_app(rt)
    # Fresh callbacks each round, more than a round can send: every one is new and is committed.
    rounds = iter(range(1_000_000))

    def lines() -> Path:
        return callback_lines(workdir / f"callbacks-{next(rounds)}.txt", args.callbacks, 1000)

    with gunicorn("app.wsgi:app", service_env(db, keys, workdir)) as server:
        result = compare(server, floor, lines, "callback", args)
        rss = server.worker_rss_mb()
    with rt.session() as session:
        stored = session.scalar(select(func.count()).select_from(ProcessedRequest))
    rt.engine.dispose()
    return {**result, "committed": stored, "worker_rss_mb": rss}


def seed_delegations(rt: Runtime, count: int) -> None:
    """``count`` active delegations, user ids encrypted as the receiver stores them."""
    now = rt.clock()

    def row_for(app_id: int, i: int) -> dict[str, object]:
        row = Delegation(app_id=app_id, tenant=f"tenant{i}", tenant_id=str(uuid.UUID(int=i + 1)))
        user = rt.keyring.encrypt(str(uuid.uuid4()), row_aad(row, "delegation_user_id"))
        return {
            "app_id": app_id, "tenant": row.tenant, "tenant_id": row.tenant_id,
            "state": "active", "delegation_user_id": user, "version": 1,
            "vendor_timestamp": now, "request_id": f"seed-{i}", "updated_at": now,
            "last_callback_at": now, "last_callback_result": "delegation:applied",
        }  # fmt: skip

    _insert_in_batches(rt, Delegation, count, row_for)


def seed_token_health(rt: Runtime, count: int, failing_every: int) -> None:
    """A token health row for each seeded tenant; every ``failing_every``-th one failing."""
    from vault.models import TokenHealth

    now = rt.clock()

    def row_for(app_id: int, i: int) -> dict[str, object]:
        failing = i % failing_every == 0
        return {
            "app_id": app_id, "tenant_key": str(uuid.UUID(int=i + 1)), "tenant": f"tenant{i}",
            "tenant_id": str(uuid.UUID(int=i + 1)), "host": "auth.seismic.com",
            "last_success_at": now, "consecutive_failures": 3 if failing else 0,
            "last_failure_at": now if failing else None,
            "last_failure_reason": "invalid_grant" if failing else None,
            "failing_since": now if failing else None,
        }  # fmt: skip

    _insert_in_batches(rt, TokenHealth, count, row_for)


def _insert_in_batches(
    rt: Runtime, model: type, count: int, row_for: Callable[[int, int], dict[str, object]]
) -> None:
    """``count`` rows of ``model`` for the zendesk app, 5,000 to a commit."""
    with rt.session() as session:
        app_id = apps.get_app(session, "zendesk").id
        for start in range(0, count, 5000):
            rows = [row_for(app_id, i) for i in range(start, min(count, start + 5000))]
            session.execute(insert(model), rows)
            session.commit()


def settle(db: Database) -> None:
    """Refresh the planner's statistics, as a database long in service has them.

    Without this, PostgreSQL's autovacuum analyzes the freshly loaded tables minutes later, in the
    middle of a round, and the plans of the first reads would change under it.
    """
    engine = create_engine(db.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE" if db.engine_name == "postgresql" else "ANALYZE"))
    engine.dispose()


@contextlib.contextmanager
def changes(db: Database) -> Iterator[list[int]]:
    """Count the binding writes (what ends the reuse of reads), asking every 50 ms, while inside."""
    seen = [0]
    done = threading.Event()
    engine = create_engine(db.url, isolation_level="AUTOCOMMIT")

    def watch() -> None:
        with engine.connect() as conn:
            last = _binding_writes(conn, db)
            while not done.wait(0.05):
                marker = _binding_writes(conn, db)
                seen[0] += marker != last
                last = marker

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()
        engine.dispose()


def _binding_writes(conn: Connection, db: Database) -> int:
    if db.engine_name == "postgresql":
        return int(
            conn.exec_driver_sql(
                "SELECT coalesce(max(seq), 0) FROM freshness_invalidations"
            ).scalar()
            or 0
        )
    from vault.freshness.generation import Generation, beside

    shared = Generation(beside(str(conn.engine.url.database)))
    try:
        return shared.current()
    finally:
        shared.close()


def token_lines(path: Path, key: str, tenants: int, count: int = 20_000) -> Path:
    with path.open("w") as out:
        for i in range(count):
            body = json.dumps(
                {"app": "zendesk", "tenant": f"tenant{i % tenants}"}, separators=(",", ":")
            )
            out.write(f"/internal/v1/token {key} {body}\n")
    return path


@contextlib.contextmanager
def paced(
    rate: float, make: Callable[[], Callable[[], object]], threads: int = 8
) -> Iterator[list[float]]:
    """Run work ``rate`` times a second in all, from ``threads`` threads (each with its own
    ``make()``, so a slow answer does not hold the rate down); yields [done, rate reached]."""
    done, counts, started = threading.Event(), [0] * threads, time.monotonic()

    def run(me: int) -> None:
        work = make()
        while not done.is_set():
            work()
            counts[me] += 1
            done.wait(max(0.0, started + counts[me] * threads / rate - time.monotonic()))

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    result = [0.0, 0.0]
    try:
        yield result
    finally:
        done.set()
        for thread in pool:
            thread.join()
        result[:] = [sum(counts), round(sum(counts) / (time.monotonic() - started), 1)]


@contextlib.contextmanager
def neighbour(db: Database, rate: float, _url: str) -> Iterator[list[float]]:
    """Another database on the same server committing ``rate`` small transactions a second."""
    import psycopg

    url = db.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS neighbour (n bigint)")
    connections: list[psycopg.Connection[Any]] = []

    def make() -> Callable[[], object]:
        conn = psycopg.connect(url, autocommit=True)
        connections.append(conn)
        return lambda: conn.execute("INSERT INTO neighbour VALUES (1)")

    try:
        with paced(rate, make) as count:
            yield count
    finally:
        for conn in connections:
            conn.close()


@contextlib.contextmanager
def outsider(url: str, rate: float) -> Iterator[list[float]]:
    """Unsigned callbacks, ``rate`` a second: each is refused 401 and recorded as a rejection."""
    clients: list[httpx.Client] = []

    def make() -> Callable[[], object]:
        client = httpx.Client(base_url=url, timeout=10)
        clients.append(client)

        def one() -> None:
            reply = client.post("/api/v1/applications/zendesk/config", json={"tenant": "x"})
            assert reply.status_code == 401, reply.status_code

        return one

    try:
        # Eight callers: each rejection updates the hour's counter row, so on a machine whose
        # commits are slow they queue on its lock, and more callers would only occupy more of
        # the service's threads (the rate reached is reported beside the figures).
        with paced(rate, make) as count:
            yield count
    finally:
        for client in clients:
            client.close()


def bench_tokens(
    db: Database,
    args: argparse.Namespace,
    workdir: Path,
    floor: Server,
    stored: int,
    spread: int,
    meanwhile: Callable[[str], contextlib.AbstractContextManager[list[float]]] | None = None,
) -> dict[str, object]:
    """The cached-token path: ``stored`` delegations, requests spread over ``spread`` tenants;
    ``meanwhile`` runs alongside the rounds (a neighbour, an outsider)."""
    keys = new_key_entry("bench1")
    rt = runtime_for(db, keys, workdir)
    with oauth_server.serving() as oauth:
        builders.register_app(rt, token_url=oauth.url)
        key = builders.create_key(rt, "bench")
        seed_delegations(rt, stored)
        rt.close()
        lines = token_lines(workdir / "tokens.txt", key, spread)
        with gunicorn("app.wsgi:app", service_env(db, keys, workdir)) as server:
            warm(server.url, key, spread)
            settle(db)
            warmed = oauth.calls
            with changes(db) as seen, (meanwhile or _nothing)(server.url) as beside:
                result = compare(server, floor, lambda: lines, "token", args)
            rss = server.worker_rss_mb()
        return {
            **result,
            "delegations": stored,
            "tenants": spread,
            "upstream_calls_during_run": oauth.calls - warmed,
            "binding_writes_seen_during_run": seen[0],
            "alongside": beside,  # [done, per second reached]
            "worker_rss_mb": rss,
        }


@contextlib.contextmanager
def _nothing(_url: str) -> Iterator[list[float]]:
    yield [0.0, 0.0]


def warm(url: str, key: str, tenants: int) -> None:
    """Fill both cache levels of both workers: every tenant once per worker, more or less."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        for _round in range(3):
            for i in range(tenants):
                reply = client.post(
                    "/internal/v1/token", json={"app": "zendesk", "tenant": f"tenant{i}"}
                )
                reply.raise_for_status()


async def _burst(url: str, request: bytes, callers: int) -> list[float]:
    """Open ``callers`` connections, then send ``request`` on all at once; each one's wait.

    Plain asyncio streams and a prepared request, so the client adds microseconds, not the
    milliseconds of 200 Python threads each building an HTTP client.
    """
    host, port = url.removeprefix("http://").split(":")
    streams = [await asyncio.open_connection(host, int(port)) for _ in range(callers)]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        started = time.monotonic()
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"burst request answered {status.decode().strip()}")
        return time.monotonic() - started

    try:
        return sorted(await asyncio.gather(*(one(r, w) for r, w in streams)))
    finally:
        for _, writer in streams:
            writer.close()


def bench_cold_burst(
    db: Database, workdir: Path, floor: Server, callers: int = 200
) -> dict[str, object]:
    """``callers`` concurrent requests for one uncached key: upstream calls and the slowest wait.

    The workers are warmed first on another tenant (a cold key, not a cold process: start-up costs
    such as the HTTP client's TLS context are not what single flight is about). Two bursts say what
    the rest is: the same burst against the floor (the client and gunicorn by themselves), and
    against the warmed tenant, already cached (what serving 200 queued hits takes).
    """
    keys = new_key_entry("bench1")
    rt = runtime_for(db, keys, workdir)
    with oauth_server.serving() as oauth:
        builders.register_app(rt, token_url=oauth.url)
        key = builders.create_key(rt, "bench")
        seed_delegations(rt, 2)
        rt.close()
        round_trip = 0.2

        def token_request(tenant: str) -> bytes:
            body = json.dumps({"app": "zendesk", "tenant": tenant}).encode()
            return (
                b"POST /internal/v1/token HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() +
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )  # fmt: skip

        floor_waits = asyncio.run(_burst(floor.url, token_request("tenant0"), callers))
        with gunicorn("app.wsgi:app", service_env(db, keys, workdir)) as server:
            for _ in range(3):
                asyncio.run(_burst(server.url, token_request("tenant1"), 4 * WORKERS * THREADS))
            warm_calls = oauth.calls
            oauth.default = oauth_server.Reply(delay=round_trip)
            waits = asyncio.run(_burst(server.url, token_request("tenant0"), callers))
            cached = asyncio.run(_burst(server.url, token_request("tenant1"), callers))
        return {
            "callers": callers, "upstream_calls": oauth.calls - warm_calls,
            "upstream_round_trip_ms": round_trip * 1000,
            "slowest_ms": round(waits[-1] * 1000, 1), "median_ms": round(waits[len(waits) // 2] * 1000, 1),
            "slowest_over_round_trip_ms": round((waits[-1] - round_trip) * 1000, 1),
            "cached_key_slowest_ms": round(cached[-1] * 1000, 1),
            "floor_slowest_ms": round(floor_waits[-1] * 1000, 1),
            "floor_median_ms": round(floor_waits[len(floor_waits) // 2] * 1000, 1),
        }  # fmt: skip


def bench_status(db: Database, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """The status page with ``--delegations`` tenants: median time per view, against /healthz."""
    keys = new_key_entry("bench1")
    rt = runtime_for(db, keys, workdir)
    builders.register_app(rt)
    key = builders.create_key(rt, "ops", role="operator")
    seed_delegations(rt, args.delegations)
    seed_token_health(rt, args.delegations, failing_every=100)
    rt.close()
    last = -(-args.delegations // 50)
    views = {
        "healthz": "/healthz", "status": "/status", "status_last_page": f"/status?page={last}",
        "status_search": "/status?q=tenant99999", "status_json": "/status.json",
        "status_failing": "/status?state=failing", "metrics": "/metrics",
    }  # fmt: skip
    timings: dict[str, object] = {"delegations": args.delegations}
    with (
        gunicorn("app.wsgi:app", service_env(db, keys, workdir)) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        for name, path in views.items():
            samples = []
            for _ in range(21):
                started = time.perf_counter()
                client.get(path).raise_for_status()
                samples.append(time.perf_counter() - started)
            timings[f"{name}_ms"] = round(sorted(samples)[10] * 1000, 1)
        timings["worker_rss_mb"] = server.worker_rss_mb()
    return timings


def emit(name: str, result: dict[str, object]) -> None:
    print(json.dumps({"config": name, **result}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="floor/service rounds per config")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--callbacks", type=int, default=60_000, help="prepared callbacks")
    parser.add_argument("--delegations", type=int, default=100_000, help="stored for tokens-100k")
    parser.add_argument("--neighbour-rate", type=float, default=200, help="commits/s next door")
    parser.add_argument("--outsider-rate", type=float, default=100, help="unsigned callbacks/s")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    wanted = set(filter(None, args.only.split(","))) or set(CONFIGS)
    unknown = wanted - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations: {', '.join(sorted(unknown))}")
    engines = {name.rsplit("-", 1)[1] for name in wanted}
    with (
        tempfile.TemporaryDirectory(prefix="dv-bench-") as tmp,
        databases(engines, Path(tmp)) as dbs,
        gunicorn("tests.perf.floor:app", {}) as floor,
    ):
        workdir = Path(tmp)
        for engine in ("sqlite", "postgresql"):
            if f"tokens-{engine}" in wanted:
                result = bench_tokens(dbs[engine](), args, workdir, floor, 1, 1)
                emit(f"tokens-{engine}", result)
            if f"tokens-neighbour-{engine}" in wanted:
                next_door = functools.partial(neighbour, dbs["neighbour"](), args.neighbour_rate)
                result = bench_tokens(dbs[engine](), args, workdir, floor, 1, 1, next_door)
                emit(f"tokens-neighbour-{engine}", result)
            if f"tokens-outsider-{engine}" in wanted:
                unsigned = functools.partial(outsider, rate=args.outsider_rate)
                result = bench_tokens(dbs[engine](), args, workdir, floor, 1, 1, unsigned)
                emit(f"tokens-outsider-{engine}", result)
            if f"tokens-100k-{engine}" in wanted:
                result = bench_tokens(dbs[engine](), args, workdir, floor, args.delegations, 1000)
                emit(f"tokens-100k-{engine}", result)
            if f"callbacks-{engine}" in wanted:
                emit(f"callbacks-{engine}", bench_callbacks(dbs[engine](), args, workdir, floor))
            if f"status-100k-{engine}" in wanted:
                emit(f"status-100k-{engine}", bench_status(dbs[engine](), args, workdir))
            if f"cold-burst-{engine}" in wanted:
                emit(f"cold-burst-{engine}", bench_cold_burst(dbs[engine](), workdir, floor))
        print(json.dumps({"config": "floor", "worker_rss_mb": floor.worker_rss_mb()}), flush=True)
    return 0


CONFIGS = [
    f"{kind}-{engine}"
    for engine in ("sqlite", "postgresql")
    for kind in (
        "tokens", "tokens-neighbour", "tokens-outsider", "tokens-100k", "callbacks",
        "cold-burst", "status-100k",
    )
    if (kind, engine) != ("tokens-neighbour", "sqlite")  # a neighbour shares a server
]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
