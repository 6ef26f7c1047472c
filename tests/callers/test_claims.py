"""The claims a verified JWT must carry, one row per rule (pure logic: no issuer needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from vault.callers.issuers import TrustedIssuer
from vault.callers.workload import _check_claims
from vault.errors import IdentityRefused

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
AT = int(NOW.timestamp())
ISSUER = TrustedIssuer(1, "corp", "https://issuer.example", "delegation-vault", None, None, NOW)
GOOD = {"iss": ISSUER.url, "aud": "delegation-vault", "sub": "billing", "exp": AT + 600, "iat": AT}

REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "another iss": ({"iss": "https://issuer.example/"}, "jwt_issuer_mismatch"),
    "another aud": ({"aud": "other"}, "jwt_audience_mismatch"),
    "aud list without ours": ({"aud": ["a", "b"]}, "jwt_audience_mismatch"),
    "aud not a string or list": ({"aud": {"delegation-vault": 1}}, "jwt_audience_mismatch"),
    "no sub": ({"sub": None}, "jwt_subject_missing"),
    "empty sub": ({"sub": ""}, "jwt_subject_missing"),
    "no exp": ({"exp": None}, "jwt_expiry_missing"),
    "exp 61 s ago": ({"exp": AT - 61}, "jwt_expired"),
    "nbf 61 s ahead": ({"nbf": AT + 61}, "jwt_not_yet_valid"),
    "iat 61 s ahead": ({"iat": AT + 61}, "jwt_not_yet_valid"),
    "exp a string": ({"exp": str(AT + 600)}, "jwt_malformed"),
    "exp true": ({"exp": True}, "jwt_malformed"),
    "exp NaN": ({"exp": float("nan")}, "jwt_malformed"),
    "exp Infinity": ({"exp": float("inf")}, "jwt_malformed"),
}


@pytest.mark.parametrize("situation", REFUSED)
def test_a_claim_that_breaks_a_rule_is_refused_with_its_reason(situation: str) -> None:
    changes, reason = REFUSED[situation]
    claims = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}

    with pytest.raises(IdentityRefused) as refused:
        _check_claims(claims, ISSUER, NOW)

    assert (refused.value.reason, refused.value.status) == (reason, 401)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"aud": ["other", "delegation-vault"]},
        {"exp": AT - 59},
        {"nbf": AT + 59},
        {"iat": AT + 59},
    ],
    ids=[
        "as issued",
        "aud list with ours",
        "exp within leeway",
        "nbf within leeway",
        "iat within leeway",
    ],
)
def test_claims_within_the_rules_name_the_subject(changes: dict[str, Any]) -> None:
    subject, _until = _check_claims({**GOOD, **changes}, ISSUER, NOW)

    assert subject == "billing"


def test_a_verified_token_is_remembered_until_exp_but_never_beyond_a_day() -> None:
    _, soon = _check_claims(GOOD, ISSUER, NOW)
    _, far = _check_claims({**GOOD, "exp": 253402300799}, ISSUER, NOW)

    assert soon == NOW + dt.timedelta(seconds=600)
    assert far == NOW + dt.timedelta(days=1)
