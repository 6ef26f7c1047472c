"""The status page, /status.json and /metrics with 100,000 tenants (1,000 of them failing), each
view's median beside /healthz measured in the same run. Needs no wrk.

python -m tests.perf.status_page [--delegations N] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.perf import bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delegations", type=int, default=100_000)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="dv-bench-") as tmp,
        bench.databases({args.engine}, Path(tmp)) as dbs,
    ):
        result = bench.bench_status(dbs[args.engine](), args, Path(tmp))
    base = float(result["healthz_ms"])  # type: ignore[arg-type]
    ratios = {
        f"{name.removesuffix('_ms')}_over_healthz": round(float(value) / base, 1)  # type: ignore[arg-type]
        for name, value in result.items()
        if name.endswith("_ms") and name != "healthz_ms"
    }
    print(json.dumps({"config": f"status-{args.engine}", **result, **ratios}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
