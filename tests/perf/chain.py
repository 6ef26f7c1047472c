"""What the history's MAC chain costs a callback, measured against the same callbacks without it.

    python -m tests.perf.chain [--callbacks 300] [--rounds 5]

Applies callbacks (a new delegated user each, so every one is a change, a history entry and a
durable commit) to a SQLite database in a temporary directory, in alternating rounds with the
MAC computed and not (the chain's columns are then filled with a constant, by a monkeypatch in
this process, never in the product), and prints one JSON line: the median time per callback
either way, their ratio, and the time of sealing alone. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from unittest import mock

from tests.support import builders
from vault import migrate
from vault.apps import registry as apps
from vault.callbacks import service as callbacks
from vault.callbacks.payloads import Kind, parse_callback
from vault.clock import utcnow
from vault.db import make_engine
from vault.history import chain
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.models import Delegation, DelegationHistory
from vault.runtime import Runtime
from vault.settings import Settings


def _round(rt: Runtime, app_id: int, count: int) -> float:
    """Seconds per callback over ``count`` applied callbacks."""
    start = time.perf_counter()
    for _ in range(count):
        body = builders.delegation_body(
            utcnow(), delegationUserId=str(uuid.uuid4()), requestId=str(uuid.uuid4())
        )
        cb = parse_callback(json.dumps(body).encode(), Kind.CONFIG)
        with rt.session() as session:
            callbacks.apply(session, rt.keyring, app_id, cb, utcnow())
    return (time.perf_counter() - start) / count


def _numbered_only(
    _keyring: object, head: Delegation, entry: DelegationHistory, _plain: object
) -> None:
    """The chain's columns filled without computing a MAC: what remains is the MAC's own cost."""
    entry.seq, entry.mac, entry.mac_key_id = head.history_seq + 1, "0" * 64, "perf1"
    head.history_seq, head.history_mac = entry.seq, entry.mac


def _seal_alone(rt: Runtime, count: int) -> float:
    head = Delegation(history_seq=0, history_mac=None)
    entry = DelegationHistory(
        app_id=1, tenant="t", tenant_id="t-id", request_id="r", event="delegation",
        outcome="applied", old_state=None, new_state="active", vendor_timestamp=utcnow(),
        recorded_at=utcnow(),
    )  # fmt: skip
    plain = {"old_user": "user-a", "new_user": "user-b", "actor": "1 <admin@example.com>"}
    start = time.perf_counter()
    for _ in range(count):
        chain.seal(rt.keyring, head, entry, plain)
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--callbacks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dv-chain-") as folder:
        url = f"sqlite:///{Path(folder) / 'vault.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        settings = Settings(database_url=url, instance_path=Path(folder) / "instance")
        rt = Runtime.build(settings, keyring=parse_keyring([new_key_entry("perf1")]), engine=engine)
        builders.register_app(rt)
        with rt.session() as session:
            app_id = apps.get_app(session, "zendesk").id
        _round(rt, app_id, 20)  # warm up
        with_chain, without = [], []
        for number in range(args.rounds):
            order = (True, False) if number % 2 == 0 else (False, True)
            for sealed in order:
                if sealed:
                    with_chain.append(_round(rt, app_id, args.callbacks))
                    continue
                with mock.patch.object(chain, "seal", _numbered_only):
                    without.append(_round(rt, app_id, args.callbacks))
        seal = statistics.median(_seal_alone(rt, 2000) for _ in range(5))
        rt.close()
    on, off = statistics.median(with_chain), statistics.median(without)
    print(json.dumps({
        "callbacks_per_round": args.callbacks, "rounds": args.rounds,
        "ms_per_callback_with_chain": round(on * 1000, 3),
        "ms_per_callback_without_chain": round(off * 1000, 3),
        "ratio": round(on / off, 3), "seal_alone_us": round(seal * 1e6, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
