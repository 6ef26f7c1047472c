"""The pip-audit step of CI: a finding fails it, and an audit that knew nothing says so."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.audit import main, verdict

KNOWN = {"name": "flask", "version": "3.1.2", "vulns": []}
UNKNOWN = {
    "name": "werkzeug",
    "skip_reason": "Dependency not found on PyPI and could not be audited",
}


def test_a_known_vulnerability_fails_the_step() -> None:
    bad = {"name": "jinja2", "version": "3.0.0", "vulns": [{"id": "GHSA-xxxx", "fix_versions": []}]}
    code, message = verdict({"dependencies": [KNOWN, bad, UNKNOWN]})
    assert code == 1 and "jinja2 3.0.0: GHSA-xxxx" in message


def test_an_audit_that_knew_no_dependency_is_reported_as_skipped_not_clean() -> None:
    code, message = verdict({"dependencies": [UNKNOWN, UNKNOWN]})
    assert code == 0 and message.startswith("pip-audit skipped") and "none of the 2" in message


def test_a_partial_audit_says_how_much_was_audited() -> None:
    code, message = verdict({"dependencies": [KNOWN, UNKNOWN]})
    assert code == 0 and "1 dependencies audited" in message and "1 unknown" in message


def test_no_report_at_all_is_a_skip(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(str(tmp_path / "missing.json")) == 0
    assert "skipped" in capsys.readouterr().out
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dependencies": [KNOWN]}))
    assert main(str(report)) == 0
