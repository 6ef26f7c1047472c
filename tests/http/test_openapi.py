"""The OpenAPI document covers every route, is valid OpenAPI 3.1, and the app keeps to it.

Schemathesis generates requests from the document (any shapes, any values) and checks every
reply: never a 5xx, and every status code and body as documented.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import create_app
from app.openapi import document
from tests.support.builders import create_key, register_app
from vault.keyring.crypto import Keyring
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(document())
    assert document()["openapi"] == "3.1.0"


def test_every_route_of_the_app_is_documented_with_its_methods(app: Flask) -> None:
    paths = document()["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        assert path in paths, f"{path} is not documented"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {path} is not documented"


def test_the_app_serves_the_document(app: Flask) -> None:
    assert app.test_client().get("/openapi.json").json == document()


@pytest.fixture
def api_schema(sqlite_url: str, tmp_path: Path, keyring: Keyring) -> Iterator[Any]:
    settings_ = Settings(database_url=sqlite_url, instance_path=tmp_path / "instance")
    runtime = Runtime.build(settings_, keyring=keyring)
    ensure_key_check(runtime)
    register_app(runtime)
    key = create_key(runtime, "svc")
    schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(runtime=runtime))
    schema.config.headers = {"Authorization": f"Bearer {key}"}
    yield schema
    runtime.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_generated_request_gets_a_5xx_or_an_undocumented_reply(
    api_schema: Any, data: st.DataObject
) -> None:
    # Every operation's strategy in one: hypothesis spreads the examples over all of them.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    case = data.draw(st.one_of([op.as_strategy() for op in operations]))
    # A schema-valid request may still be refused for what the schema cannot say (a delegation
    # app without a tenant, a scope outside that app's allowed scopes): documented 400s, so the
    # check that every schema-valid request is accepted does not apply here.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
