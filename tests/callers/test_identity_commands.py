"""`issuers` and `identities`: add, list (table and JSON), remove, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import tls
from tests.support.cli import Run, add_zendesk

ISSUER = "https://kubernetes.default.svc.cluster.local"
SUBJECT = "system:serviceaccount:billing:worker"


def test_an_issuer_and_an_identity_are_added_listed_and_removed(run: Run) -> None:
    add_zendesk(run)
    added = run("issuers", "add", "cluster", "--url", ISSUER, "--audience", "vault")
    identity = run(
        "identities", "add", "billing", "--issuer", "cluster", "--subject", SUBJECT,
        "--app", "zendesk", "--tenant", "intdev2",
    )  # fmt: skip

    issuers = json.loads(run("issuers", "list", "--json").stdout)
    identities = json.loads(run("identities", "list", "--json").stdout)
    table = run("identities", "list").stdout

    assert (added.exit_code, identity.exit_code) == (0, 0)
    assert [(i["name"], i["url"], i["audience"], i["jwks"]) for i in issuers] == [
        ("cluster", ISSUER, "vault", "discovery")
    ]
    assert identities == [
        {"name": "billing", "issuer": "cluster", "subject": SUBJECT, "role": "service",
         "apps": ["zendesk"], "tenants": ["intdev2"], "last_used": None}
    ]  # fmt: skip
    assert SUBJECT in table and "billing" in table
    removed = run("issuers", "remove", "cluster")
    assert removed.exit_code == 0 and "1 identity" in removed.stderr
    assert json.loads(run("identities", "list", "--json").stdout) == []
    assert json.loads(run("issuers", "list", "--json").stdout) == []


def test_the_audience_defaults_to_delegation_vault_and_a_private_ca_is_kept(
    run: Run, tmp_path: Path
) -> None:
    ca = tls.make(tmp_path).ca_file

    added = run("issuers", "add", "cluster", "--url", ISSUER, "--ca-file", str(ca))

    (listed,) = json.loads(run("issuers", "list", "--json").stdout)
    assert added.exit_code == 0
    assert (listed["audience"], listed["private_ca"]) == ("delegation-vault", True)


def test_issuer_urls_must_be_https(run: Run) -> None:
    plain = run("issuers", "add", "cluster", "--url", "http://issuer.example")
    jwks = run("issuers", "add", "cluster", "--url", ISSUER, "--jwks-url", "http://127.0.0.1/k")

    assert (plain.exit_code, jwks.exit_code) == (2, 2)
    assert "--url" in plain.stderr and "https://" in plain.stderr
    assert "--jwks-url" in jwks.stderr


def test_a_ca_file_that_is_not_pem_is_refused(run: Run, tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")

    result = run("issuers", "add", "cluster", "--url", ISSUER, "--ca-file", str(junk))

    assert result.exit_code == 2 and "--ca-file" in result.stderr


def test_refusals_name_what_is_wrong(run: Run) -> None:
    assert run("issuers", "add", "cluster", "--url", ISSUER).exit_code == 0
    run("identities", "add", "billing", "--issuer", "cluster", "--subject", SUBJECT)

    cases = {
        "duplicate issuer": (run("issuers", "add", "cluster", "--url", ISSUER + "/x"), 1, "already exists"),
        "same URL": (run("issuers", "add", "other", "--url", ISSUER), 1, "already exists"),
        "unknown issuer": (run("identities", "add", "x", "--issuer", "nope", "--subject", "s"), 1, "no issuer named"),
        "same subject": (run("identities", "add", "x", "--issuer", "cluster", "--subject", SUBJECT), 1, "already has"),
        "unknown app": (run("identities", "add", "x", "--issuer", "cluster", "--subject", "s", "--app", "nope"), 1, "unknown app"),
        "empty tenant": (run("identities", "add", "x", "--issuer", "cluster", "--subject", "s", "--tenant", ""), 2, "empty"),
        "remove unknown identity": (run("identities", "remove", "nope"), 1, "no identity named"),
        "remove unknown issuer": (run("issuers", "remove", "nope"), 1, "no issuer named"),
    }  # fmt: skip

    for situation, (result, code, words) in cases.items():
        assert (result.exit_code, words in result.stderr) == (code, True), situation
