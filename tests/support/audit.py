"""Read pip-audit's JSON report and say plainly what was audited.

    python tests/support/audit.py REPORT

Exit 1 when any dependency has a known vulnerability. Otherwise exit 0 and say how many
dependencies the advisory service knew; when it knew none (unreachable, or a mirror without
advisory data), say that the audit was skipped rather than letting an empty audit pass as clean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def verdict(report: dict[str, list[dict[str, object]]]) -> tuple[int, str]:
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    if vulnerable:
        lines = [
            f"{d['name']} {d.get('version')}: " + ", ".join(str(v.get("id")) for v in d["vulns"])  # type: ignore[attr-defined]
            for d in vulnerable
        ]
        return 1, "known vulnerabilities:\n" + "\n".join(lines)
    if not audited:
        return 0, (
            f"pip-audit skipped: the advisory service knew none of the {len(dependencies)} "
            "dependencies (unreachable, or a package mirror without advisory data)"
        )
    return 0, (
        f"pip-audit: {len(audited)} dependencies audited, no known vulnerability; "
        f"{len(dependencies) - len(audited)} unknown to the advisory service"
    )


def main(path: str) -> int:
    report_file = Path(path)
    if not report_file.exists() or not report_file.stat().st_size:
        print("pip-audit skipped: it produced no report (the advisory service is unreachable)")
        return 0
    code, message = verdict(json.loads(report_file.read_text()))
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
