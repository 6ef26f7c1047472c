"""What VaultAuth adds to a request once its token is held: against a fixed Authorization header.

    python -m tests.perf.client [--calls 2000] [--rounds 5] [--threads 16]

Both clients send the same GET to the loopback vendor API (tests/support/vendor_api.py, which
accepts every token here) from ``--threads`` threads sharing one httpx.Client; rounds alternate
the order. One JSON line: medians of requests per second for each, and of the per-round ratio.
The token is put in the process's slot before timing, so the vault is never called: this is the
client's own cost on every request. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "src"))

from delegation_vault_client import Token, VaultAuth

from tests.support import vendor_api

TOKEN = "at-bench-" + "x" * 40


def held_auth() -> VaultAuth:
    auth = VaultAuth("http://127.0.0.1:9", "dvk_bench", "zendesk", "intdev2")
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    auth._slot.token = Token(TOKEN, "Bearer", expires, None, "cache", "zendesk", "intdev2", 3600)
    return auth


def rate(client: httpx.Client, url: str, calls: int, threads: int) -> float:
    def batch(count: int) -> None:
        for _ in range(count):
            client.get(url).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(batch, [calls // threads] * threads))
    return (calls // threads * threads) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    plain_rates, auth_rates = [], []
    with vendor_api.serving(reject="none") as api:
        url = f"{api.url}/v1/items"
        limits = httpx.Limits(max_connections=args.threads)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with (
            httpx.Client(headers=headers, limits=limits) as plain,
            httpx.Client(auth=held_auth(), limits=limits) as authed,
        ):
            rate(plain, url, 200, args.threads), rate(authed, url, 200, args.threads)  # warm
            for round_ in range(args.rounds):
                order = [(plain, plain_rates), (authed, auth_rates)]
                for client, rates in order if round_ % 2 == 0 else reversed(order):
                    rates.append(rate(client, url, args.calls, args.threads))
    ratios = [a / p for a, p in zip(auth_rates, plain_rates, strict=True)]
    print(json.dumps({
        "calls": args.calls, "threads": args.threads, "rounds": args.rounds,
        "fixed_header_rps": round(statistics.median(plain_rates)),
        "vault_auth_rps": round(statistics.median(auth_rates)),
        "ratio_median": round(statistics.median(ratios), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
