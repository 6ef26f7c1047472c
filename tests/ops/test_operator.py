"""Health, readiness, metrics and operator authentication."""

from __future__ import annotations

import base64

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from tests.support.builders import create_key
from vault.db import make_sessionmaker
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime


def basic(key: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def test_healthz_needs_no_database(app: Flask, runtime: Runtime) -> None:
    dead = make_sessionmaker(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    app.extensions["vault"] = runtime.replace(sessions=dead)
    client = app.test_client()
    assert (client.get("/healthz").status_code, client.get("/healthz").json) == (
        200,
        {"status": "ok"},
    )


def test_readyz_is_200_when_database_schema_and_keyring_are_good(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert (response.status_code, response.json["status"]) == (200, "ok")
    assert all(check["ok"] for check in response.json["checks"].values())


def test_readyz_names_a_wrong_keyring(app: Flask, runtime: Runtime) -> None:
    wrong = parse_keyring([new_key_entry("test1")])  # same id, another key
    app.extensions["vault"] = runtime.replace(keyring=wrong)
    client = app.test_client()
    response = client.get("/readyz")
    assert (response.status_code, response.json["failing"]) == (503, ["keyring"])
    assert (
        "not the key this database was sealed with" in response.json["checks"]["keyring"]["detail"]
    )


def test_readyz_names_a_schema_below_head(client: FlaskClient, runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    response = client.get("/readyz")
    assert response.status_code == 503 and "migrations" in response.json["failing"]


def test_readyz_names_the_database_when_it_is_gone(app: Flask, runtime: Runtime) -> None:
    dead = create_engine(
        "postgresql+psycopg://vault:hunter2@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    app.extensions["vault"] = runtime.replace(sessions=make_sessionmaker(dead))
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["failing"][0] == "database"
    assert "hunter2" not in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/status", "/status.json", "/metrics"])
def test_operator_pages_need_an_operator_key(
    client: FlaskClient, runtime: Runtime, path: str
) -> None:
    service = create_key(runtime, "svc")
    operator = create_key(runtime, "ops", role="operator")
    assert client.get(path).status_code == 401
    assert client.get(path).headers["WWW-Authenticate"].startswith("Basic")
    assert client.get(path, headers=basic("dvk_wrong")).status_code == 401
    assert client.get(path, headers=basic(service)).status_code == 401
    assert client.get(path, headers=basic(operator, user="anyone")).status_code == 200
    assert client.get(path, headers={"Authorization": f"Bearer {operator}"}).status_code == 200


@pytest.mark.settings(metrics_public=True)
def test_metrics_can_be_public(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "dv_callbacks_total" in response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
