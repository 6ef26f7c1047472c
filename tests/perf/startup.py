"""Start-up time with each key wrapper: none, pkcs11 (SoftHSM2) and aws-kms (moto on loopback).

    python -m tests.perf.startup [--runs 3]

For each wrapper: the time to open the keyring in this process (two entries, so two unwraps),
and the time from starting ``delegation-vault serve`` (2 workers) to its first ``/healthz``
answer. Medians of ``--runs``; one JSON line per wrapper. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from tests.support import kms, service, softhsm
from tests.support.ports import free_port
from vault.keyring.crypto import load_keyring
from vault.keyring.entries import new_key_entry
from vault.keyring.wrapping import new_entry
from vault.settings import Settings


def _measure(name: str, env: dict[str, str], folder: Path, runs: int) -> dict[str, object]:
    with mock.patch.dict(os.environ, env):
        settings = Settings.from_env()
        entries = [new_entry(settings, f"{name[:2]}{n}") for n in range(2)]
        env = {**env, "DV_KEYS": ",".join(entries)}
        os.environ["DV_KEYS"] = env["DV_KEYS"]
        opens = []
        for _ in range(runs * 3):
            start = time.perf_counter()
            load_keyring(Settings.from_env())
            opens.append(time.perf_counter() - start)
    serves = []
    for _ in range(runs):
        start = time.perf_counter()
        with service.running(env, folder, port=free_port()):
            serves.append(time.perf_counter() - start)
    return {
        "wrapper": name,
        "keyring_open_ms": round(statistics.median(opens) * 1000, 1),
        "serve_to_healthz_s": round(statistics.median(serves), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dv-startup-") as tmp, kms.serving() as local_kms:
        folder = Path(tmp)
        base = {
            "DATABASE_URL": f"sqlite:///{folder / 'vault.db'}",
            "DV_INSTANCE_PATH": str(folder / "instance"),
            "DV_KEYS_FILE": "",
        }
        hsm = softhsm.make(folder / "hsm")
        hsm.add_kek("kek-1")
        plain = {**base, "DV_KEY_WRAPPING": "none", "DV_KEYS": new_key_entry("none0")}
        arn = local_kms.create_key()
        for name, env in (
            ("none", plain),
            ("pkcs11", {**base, **hsm.env()}),
            ("aws-kms", {**base, **local_kms.env(arn)}),
        ):
            print(json.dumps(_measure(name, env, folder, args.runs)), flush=True)


if __name__ == "__main__":
    main()
