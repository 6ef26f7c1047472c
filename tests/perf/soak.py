"""Soak and faults: instances of the service on one PostgreSQL under a steady mix, and what each
fault is answered with.

    python -m tests.perf.soak [--instances 2] [--workers 2] [--tenants 200] [--threads 8]
                              [--minutes 10] [--token-lifetime 20] [--db-timeout 5] [--faults]
                              [--fault-seconds 20] [--fault-kinds restart,stop,freeze,outage]
                              [--partition-grace 30]   (--fault-kinds also takes partition)

Each instance is a gunicorn service (``delegation-vault serve``) on a PostgreSQL server of its own
started here; a loopback token server issues short-lived tokens, so misses and refreshes never stop.
The mix: 90% token requests, 8% delegation changes (a new delegated user), 2% disable or enable;
each request goes to a random instance. Printed once a minute: requests, status counts, p50/p99 of
token requests, RSS per process, database size and row counts.

Checked at the token server: every token served was issued for the user that the tenant had
delegated when the request was sent or while it was answered (a change under way may give either).
With ``--faults``, after the load: a PostgreSQL restart, a 20-second stop, a 20-second freeze
(SIGSTOP of every server process) and a 20-second token server outage, each under load, printing
what the requests during it were answered with and how long the service took to recover once it
was over. ``--fault-kinds partition`` (not among the defaults) puts the last instance behind a
relay and cuts it for ``--fault-seconds``: the cut-off instance may answer from memory for
``DV_PARTITION_GRACE`` (``--partition-grace``), so a token for a user changed meanwhile at another
instance is counted apart ("stale within the grace", the documented trade-off); one served after
the grace, or after the mend, is a wrong user. Exit status 1 on a 500, any other 5xx than the
contract's 503s, a token for a wrong user, or a request that hung.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.support import postgres, service
from tests.support.builders import create_key, delegation_body, lifecycle_body, register_app, signed
from tests.support.oauth_server import Reply, TokenServer, serving
from tests.support.relay import Relay, relaying
from vault import migrate
from vault.db import make_engine
from vault.freshness.reads import PROBE_AGAIN
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings

TOKEN, CONFIG, LIFECYCLE = (
    "/internal/v1/token",
    "/api/v1/applications/zendesk/config",
    "/api/v1/applications/zendesk/lifecycle",
)
HANG = 30.0  # seconds: a request not answered by then hung
ALLOWED_5XX = {
    (503, "unavailable"),
    (503, "upstream_unavailable"),
}  # the contract's, with Retry-After
# After the mend a process that just failed a freshness check answers as cut off until it asks
# again (PROBE_AGAIN); a margin for the request under way.
AFTER_MEND = PROBE_AGAIN + 0.5
TABLES = ("token_cache", "processed_requests", "delegation_history", "delegations", "token_health")


@dataclasses.dataclass(frozen=True)
class Options:
    instances: int = 2
    workers: int = 2
    tenants: int = 200
    threads: int = 8
    minutes: float = 10.0
    token_lifetime: int = 20
    db_timeout: float = 5.0
    faults: bool = False
    fault_seconds: float = 20.0
    fault_threads: int = 4
    fault_kinds: str = "restart,stop,freeze,outage"  # which faults, in this order (or partition)
    partition_grace: float = 30.0  # DV_PARTITION_GRACE of every instance
    seed: int = 1


@dataclasses.dataclass
class Change:
    user: str
    sent: float
    acked: float | None  # None: not acknowledged (it may or may not have been applied)


@dataclasses.dataclass
class Tenant:
    name: str
    tenant_id: str
    changes: list[Change] = dataclasses.field(default_factory=list)
    disabled: bool = False
    last_timestamp: dt.datetime = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    )
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def next_timestamp(self) -> dt.datetime:
        """Strictly later than the last callback's, in whole seconds (as the vendor sends them)."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.last_timestamp = max(now, self.last_timestamp + dt.timedelta(seconds=1))
        return self.last_timestamp

    def users_between(self, sent: float, answered: float) -> set[str]:
        """Users a token asked for at ``sent`` and answered at ``answered`` may be for."""
        changes = list(self.changes)
        valid = set()
        for i, change in enumerate(changes):
            superseded = any(
                later.acked is not None and later.acked < sent for later in changes[i + 1 :]
            )
            if change.sent <= answered and not superseded:
                valid.add(change.user)
        return valid


@dataclasses.dataclass
class Sample:
    kind: str  # token | change | toggle | probe
    status: int
    error: str | None
    sent: float
    took: float
    instance: int
    source: str | None = None


class Record:
    """Every request's outcome, and what broke a promise."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.violations: list[str] = []
        self.wrong_user = 0
        self.stale_in_grace = 0  # by a cut-off instance, within DV_PARTITION_GRACE of the cut
        self.cuts: list[list[float]] = []  # [cut at, mended at (inf while cut)], per partition
        self.checked = 0
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)
            bad = sample.status == 500 or (
                sample.status >= 500 and (sample.status, sample.error) not in ALLOWED_5XX
            )
            if bad or sample.status <= 0:
                what = {0: "hung", -1: "no answer (connection failed)"}.get(
                    sample.status, f"{sample.status} {sample.error}"
                )
                self.violations.append(f"{sample.kind} at instance {sample.instance}: {what}")

    def since(self, start: float, end: float | None = None) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.sent >= start and (end is None or s.sent < end)]


class Soak:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.o = options
        self.workdir = workdir
        self.random = random.Random(options.seed)
        self.record = Record()
        self.tenants: list[Tenant] = []
        self.services: list[service.Service] = []
        self.key = ""
        self.db: postgres.PostgresServer | None = None
        self.oauth: TokenServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.probe = Tenant("probe", str(uuid.UUID(int=0, version=4)))  # recovery checks only
        self.relay: Relay | None = None  # between the last instance and the database

    # -- set-up -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[Soak]:
        with postgres.running() as db, serving() as oauth, contextlib.ExitStack() as stack:
            self.db, self.oauth = db, oauth
            oauth.default = Reply(expires_in=self.o.token_lifetime)
            env = self._prepare(db, oauth)
            if self.o.faults and "partition" in self.o.fault_kinds:
                self.relay = stack.enter_context(relaying(db.port))
            for n in range(self.o.instances):
                folder = self.workdir / f"instance-{n}"
                folder.mkdir()
                own = env
                if self.relay is not None and n == self.o.instances - 1:
                    url = env["DATABASE_URL"].replace(f":{db.port}/", f":{self.relay.port}/")
                    own = {**env, "DATABASE_URL": url}
                self.services.append(
                    stack.enter_context(service.running(own, folder, workers=self.o.workers))
                )
            self._delegate_all()
            try:
                yield self
            finally:
                self.load(0)

    def _prepare(self, db: postgres.PostgresServer, oauth: TokenServer) -> dict[str, str]:
        db.psql_execute("CREATE DATABASE dv_soak")
        url = db.url_for("dv_soak").replace("postgresql://", "postgresql+psycopg://")
        engine = make_engine(url)
        migrate.upgrade(engine)
        entry = new_key_entry("soak1")
        settings = Settings(
            database_url=url, instance_path=self.workdir / "instance", allow_http_token_urls=True
        )
        runtime = Runtime.build(settings, keyring=parse_keyring([entry]), engine=engine)
        try:
            ensure_key_check(runtime)
            register_app(runtime, token_url=oauth.url)
            self.key = create_key(runtime, "soak")
        finally:
            runtime.close()
        self.dsn = db.url_for("dv_soak")
        return {
            "DATABASE_URL": url,
            "DV_KEYS": entry,
            "DV_KEYS_FILE": "",
            "DV_ENV": "development",
            "DV_ALLOW_HTTP_TOKEN_URLS": "1",
            "DV_INSTANCE_PATH": str(self.workdir / "instance"),
            "DV_DB_TIMEOUT": str(self.o.db_timeout),
            "DV_PARTITION_GRACE": str(self.o.partition_grace),
            "DV_LOG_FORMAT": "json",
        }

    def _delegate_all(self) -> None:
        with httpx.Client(timeout=HANG) as client:
            for n in range(self.o.tenants):
                tenant = Tenant(
                    f"t{n:04d}", str(uuid.UUID(int=self.random.getrandbits(128), version=4))
                )
                self.tenants.append(tenant)
                self._change(client, tenant, 0)
                if not tenant.changes or tenant.changes[-1].acked is None:
                    raise RuntimeError("the first delegation was not accepted")

    # -- the mix ----------------------------------------------------------------------------------

    def load(self, threads: int, pinned: bool = False) -> None:
        """Run ``threads`` load threads from now on (0: stop them all); ``pinned``: thread n sends
        only to instance n modulo the instances, so that one instance's slow answers do not hold
        back the others' load."""
        self._stop.set()
        for thread in self._threads:
            thread.join(HANG + 5)
        self._threads, self._stop = [], threading.Event()
        for n in range(threads):
            args = (n, self._stop, pinned)
            thread = threading.Thread(target=self._loop, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self, n: int, stop: threading.Event, pinned: bool) -> None:
        pick = random.Random(self.o.seed * 1000 + n)
        with httpx.Client(timeout=HANG) as client:
            while not stop.is_set():
                tenant = pick.choice(self.tenants)
                instance = pick.randrange(len(self.services))
                instance = n % len(self.services) if pinned else instance
                roll = pick.random()
                if roll < 0.90:
                    self._token(client, tenant, instance)
                elif roll < 0.98:
                    self._change(client, tenant, instance)
                else:
                    self._toggle(client, tenant, instance)

    def _post(
        self, client: httpx.Client, instance: int, path: str, **kw: Any
    ) -> tuple[int, Any, float, float]:
        sent = time.monotonic()
        try:
            reply = client.post(self.services[instance].url + path, **kw)
        except httpx.TimeoutException:
            return 0, None, sent, time.monotonic() - sent
        except httpx.TransportError:
            return -1, None, sent, time.monotonic() - sent
        try:
            body = reply.json()
        except ValueError:
            body = None
        return reply.status_code, body, sent, time.monotonic() - sent

    def _token(self, client: httpx.Client, tenant: Tenant, instance: int) -> None:
        status, body, sent, took = self._post(
            client, instance, TOKEN, json={"app": "zendesk", "tenant": tenant.name},
            headers={"Authorization": f"Bearer {self.key}"},
        )  # fmt: skip
        body = body if isinstance(body, dict) else {}
        self.record.add(
            Sample("token", status, body.get("error"), sent, took, instance, body.get("source"))
        )
        if status == 200:
            assert self.oauth is not None
            issued = self.oauth.introspect(body.get("access_token", ""))
            valid = tenant.users_between(sent, sent + took)
            with self.record._lock:
                self.record.checked += 1
                if issued is None or issued.user_id not in valid or issued.tenant != tenant.name:
                    if issued is not None and self._within_grace(instance, sent):
                        self.record.stale_in_grace += 1
                    else:
                        self.record.wrong_user += 1
                        self.record.violations.append(
                            f"token for a wrong user (tenant {tenant.name})"
                        )

    def _within_grace(self, instance: int, sent: float) -> bool:
        """Whether a request sent at ``sent`` met the cut-off instance within its grace, when it
        may answer from memory what another instance has changed since."""
        grace = self.o.partition_grace
        return instance == len(self.services) - 1 and any(
            cut <= sent <= min(cut + grace, mended + AFTER_MEND)
            for cut, mended in list(self.record.cuts)
        )

    def _callback(
        self, client: httpx.Client, instance: int, body: dict[str, Any], path: str
    ) -> tuple[int, Any, float, float]:
        raw, headers = signed(body)
        return self._post(client, instance, path, content=raw, headers=headers)

    def _change(self, client: httpx.Client, tenant: Tenant, instance: int) -> None:
        with tenant.lock:
            user = str(uuid.uuid4())
            body = delegation_body(
                tenant.next_timestamp(), tenant=tenant.name, tenantId=tenant.tenant_id,
                delegationUserId=user,
            )  # fmt: skip
            change = Change(user, time.monotonic(), None)
            tenant.changes.append(change)
            status, reply, sent, took = self._callback(client, instance, body, CONFIG)
            if status == 202:
                change.acked = sent + took
                tenant.disabled = False  # a delegation makes the tenant active again
            reply = reply if isinstance(reply, dict) else {}
            self.record.add(Sample("change", status, reply.get("error"), sent, took, instance))

    def _toggle(self, client: httpx.Client, tenant: Tenant, instance: int) -> None:
        with tenant.lock:
            kind = "enable" if tenant.disabled else "disable"
            body = lifecycle_body(
                tenant.next_timestamp(), kind, tenant=tenant.name, tenantId=tenant.tenant_id
            )
            status, reply, sent, took = self._callback(client, instance, body, LIFECYCLE)
            if status == 202:
                tenant.disabled = kind == "disable"
            reply = reply if isinstance(reply, dict) else {}
            self.record.add(Sample("toggle", status, reply.get("error"), sent, took, instance))

    # -- what is printed --------------------------------------------------------------------------

    def rss(self) -> list[str]:
        shown = []
        for n, svc in enumerate(self.services):
            sizes = [_rss_mb(svc.process.pid)] + [_rss_mb(pid) for pid in _safe(svc.workers, [])]
            shown.append(f"i{n} " + "/".join(f"{s:.1f}" for s in sizes))
        return shown

    def database(self) -> str:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                size = _one(conn, "SELECT pg_database_size(current_database())")
                counts = [f"{t}={_one(conn, f'SELECT count(*) FROM {t}')}" for t in TABLES]  # noqa: S608
        except psycopg.Error:
            return "db: (did not answer)"
        return f"db {size / 1e6:.1f} MB " + " ".join(counts)

    def minute(self, number: int, start: float, end: float) -> None:
        samples = self.record.since(start, end)
        tokens = [s.took for s in samples if s.kind == "token" and s.status > 0]
        line = f"[{number:>3}] {len(samples)} req, {_percentiles(tokens)}; {_counts(samples)}"
        print(line, flush=True)
        print(
            f"      rss MB (master/workers) {'; '.join(self.rss())}; {self.database()}", flush=True
        )

    # -- faults -----------------------------------------------------------------------------------

    def fault(
        self, name: str, start: Callable[[], None], end: Callable[[], None], upstream: bool = False
    ) -> None:
        """Run one fault under load: what requests during it got, and how long recovery took."""
        begun = time.monotonic()
        start()
        time.sleep(self.o.fault_seconds if name != "restart" else 0)
        end()
        returned = time.monotonic()
        recovered = self._recovery(returned, upstream)
        time.sleep(2)
        during = self.record.since(begun, returned)
        slow = sorted(during, key=lambda s: s.took, reverse=True)[:3]
        slowest = (
            "; ".join(
                f"{s.took:.2f} s ({s.kind} {s.status}/{s.error or s.source}, i{s.instance}, sent at "
                f"+{s.sent - begun:.1f} s)"
                for s in slow
            )
            or "-"
        )
        shown = []
        for n in range(len(self.services)):
            mine = [s for s in during if s.instance == n]
            top = max((s.took for s in mine), default=0.0)
            if name == "partition" and n == len(self.services) - 1:
                late = self.record.cuts[-1][0] + self.o.partition_grace  # from the cut on
                shown.append(
                    f"i{n} (cut off) within the grace {_counts(s for s in mine if s.sent <= late)}"
                )
                shown.append(f"after it {_counts(s for s in mine if s.sent > late)}")
            else:
                shown.append(f"i{n} {_counts(mine)}")
            shown[-1] += f" (slowest {top:.2f} s)"
        print(
            f"fault {name}: {returned - begun:.1f} s; answered {'; '.join(shown)}; slowest "
            f"answers {slowest}; recovered {recovered}",
            flush=True,
        )

    def _recovery(self, returned: float, upstream: bool) -> str:
        """Per instance: seconds from the end of the fault to the first request that needed the
        database (a callback) or, after a token server outage, the token endpoint, answered."""
        found = []
        with httpx.Client(timeout=HANG) as client:
            for n in range(len(self.services)):
                deadline = returned + 60
                while time.monotonic() < deadline:
                    if upstream:
                        late = [s for s in self.record.since(returned) if s.instance == n
                                and s.kind == "token" and s.status == 200 and s.source == "upstream"]  # fmt: skip
                        if late:
                            found.append(f"i{n} {late[0].sent + late[0].took - returned:.2f} s")
                            break
                    else:
                        probe = self.probe
                        body = lifecycle_body(
                            probe.next_timestamp(), "upgrade", tenant=probe.name,
                            tenantId=probe.tenant_id,
                        )  # fmt: skip
                        status, _body, sent, took = self._callback(client, n, body, LIFECYCLE)
                        if status == 202:
                            found.append(f"i{n} {sent + took - returned:.2f} s")
                            break
                    time.sleep(0.05)
                else:
                    found.append(f"i{n} not within 60 s")
        return ", ".join(found)

    def run_faults(self) -> None:
        assert self.db is not None and self.oauth is not None
        db, oauth = self.db, self.oauth
        self.load(self.o.fault_threads)
        frozen: list[contextlib.AbstractContextManager[None]] = []

        def freeze() -> None:
            frozen.append(db.frozen())
            frozen[-1].__enter__()

        def thaw() -> None:
            frozen.pop().__exit__(None, None, None)

        def outage() -> None:
            oauth.answer = lambda _recorded: Reply(503, {"error": "temporarily_unavailable"})

        def over() -> None:
            oauth.answer = None

        def cut() -> None:
            assert self.relay is not None
            self.record.cuts.append([time.monotonic(), float("inf")])
            self.relay.cut()

        def mend() -> None:
            assert self.relay is not None
            self.relay.mend()
            self.record.cuts[-1][1] = time.monotonic()

        faults = {
            "restart": (lambda: db.stop("fast"), db.start, False),
            "stop": (lambda: db.stop("immediate"), db.start, False),
            "freeze": (freeze, thaw, False),
            "outage": (outage, over, True),
            "partition": (cut, mend, False),
        }
        for name in self.o.fault_kinds.split(","):
            time.sleep(5)
            start, end, upstream = faults[name.strip()]
            # A partition cuts one instance off: the other's load must not wait behind it.
            self.load(self.o.fault_threads, pinned=name.strip() == "partition")
            self.fault(name.strip(), start, end, upstream)
        self.load(0)


def _counts(samples: Iterable[Sample]) -> str:
    """How many answers of each kind, status and error."""
    counts = collections.Counter(
        f"{s.kind}:{s.status}" + (f"/{s.error}" if s.error and s.status >= 400 else "")
        for s in samples
    )
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"


def _one(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _safe(call: Callable[[], Any], default: Any) -> Any:
    try:
        return call()
    except OSError:
        return default


def _percentiles(took: list[float]) -> str:
    if len(took) < 2:
        return "p50 - p99 -"
    cuts = statistics.quantiles(took, n=100)
    return f"token p50 {cuts[49] * 1000:.1f} ms p99 {cuts[98] * 1000:.1f} ms"


def run(options: Options, folder: Path) -> Record:
    """The soak (and the faults, if asked), its files in ``folder``; returns what was recorded."""
    print(
        f"soak {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {options}, cpus {os.cpu_count()}",
        flush=True,
    )
    soak = Soak(options, folder)
    with soak.running():
        began = time.monotonic()
        soak.load(options.threads)
        minute = 0
        while time.monotonic() - began < options.minutes * 60:
            start = began + minute * 60
            end = min(start + 60, began + options.minutes * 60)
            time.sleep(max(0.0, end - time.monotonic()))
            minute += 1
            soak.minute(minute, start, end)
        soak.load(0)
        if options.faults:
            soak.run_faults()
    record = soak.record
    statuses = collections.Counter(s.status for s in record.samples)
    print(
        f"total {len(record.samples)} requests {dict(sorted(statuses.items()))}; tokens checked "
        f"at the token server {record.checked}, wrong user {record.wrong_user}, stale within "
        f"the partition grace {record.stale_in_grace}; "
        f"violations {len(record.violations)}",
        flush=True,
    )
    for line in record.violations[:20]:
        print("  " + line, flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.soak", description=__doc__.split("\n\n")[0]
    )
    defaults = Options()
    for field in dataclasses.fields(Options):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true")
        else:
            kind = {"float": float, "str": str}.get(str(field.type), int)
            parser.add_argument(flag, type=kind, default=getattr(defaults, field.name))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind: servers and clusters stop
    with tempfile.TemporaryDirectory(prefix="dv-soak-") as folder:
        record = run(Options(**vars(args)), Path(folder))
    return 1 if record.violations else 0


if __name__ == "__main__":
    sys.exit(main())
