"""Removing an app ends every grant to it: a key limited to the app never opens an app added
later under the same slug, and a key limited to it and another keeps the other."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text
from werkzeug.test import TestResponse

from tests.support import oidc
from tests.support.builders import create_key, register_app
from tests.support.clock import FrozenClock
from tests.support.oauth_server import TokenServer
from tests.support.token_fixtures import TOKEN
from vault import migrate
from vault.apps import registry as apps
from vault.callers import identities, issuers
from vault.callers.keys import Caller
from vault.errors import Forbidden
from vault.models import ServiceKey
from vault.runtime import Runtime


def ask(client: FlaskClient, key: str, app: str = "zendesk") -> TestResponse:
    return client.post(
        TOKEN, json={"app": app, "tenant": "intdev2"}, headers={"Authorization": f"Bearer {key}"}
    )


def test_a_key_limited_to_a_removed_app_does_not_open_an_app_added_under_its_slug(
    runtime: Runtime, client: FlaskClient, oauth: TokenServer
) -> None:
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")
    limited = create_key(runtime, "svc", apps=["zendesk"])
    first = ask(client, limited)
    assert first.status_code == 200, first.json
    with runtime.session() as session:
        apps.remove_app(session, "zendesk")
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")

    reply = ask(client, limited)

    assert (reply.status_code, reply.json["error"]) == (403, "forbidden")


def test_a_key_limited_to_two_apps_keeps_the_one_not_removed(
    runtime: Runtime, client: FlaskClient, oauth: TokenServer
) -> None:
    for slug in ("zendesk", "jira"):
        register_app(runtime, slug, token_url=oauth.url, grant="client_credentials")
    both = create_key(runtime, "svc", apps=["zendesk", "jira"])
    with runtime.session() as session:
        apps.remove_app(session, "zendesk")
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")

    assert ask(client, both, app="zendesk").status_code == 403
    assert ask(client, both, app="jira").status_code == 200


def test_an_identity_limited_to_a_removed_app_is_not_allowed_an_app_added_under_its_slug(
    runtime: Runtime, oauth: TokenServer
) -> None:
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")
    oidc.trust(runtime, "https://issuer.example")
    oidc.identify(runtime, "billing", "billing", apps=("zendesk",))
    with runtime.session() as session:
        apps.remove_app(session, "zendesk")
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")

    with runtime.session() as session:
        (issuer,) = issuers.trusted_by_url(session).values()
        stored = identities.stored(session, issuer.id, "billing")

    assert stored is not None and stored.apps != ("zendesk",)
    with pytest.raises(Forbidden):
        Caller(stored.name, stored.role, stored.apps, stored.tenants).require_app("zendesk")


def test_the_upgrade_ends_grants_that_outlived_their_app_before_it(
    runtime: Runtime, client: FlaskClient, oauth: TokenServer, clock: FrozenClock
) -> None:
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")
    register_app(runtime, "jira", token_url=oauth.url, grant="client_credentials")
    outlived = create_key(runtime, "outlived", apps=["zendesk", "jira"])
    orphaned = create_key(runtime, "orphaned", apps=["gone"])
    with runtime.engine.begin() as connection:  # as a removal did before grants ended with it
        connection.execute(text("DELETE FROM apps WHERE slug = 'zendesk'"))
    clock.advance(60)
    register_app(runtime, "zendesk", token_url=oauth.url, grant="client_credentials")
    migrate.downgrade(
        runtime.engine, "callbacks_rejection_sources"
    )  # just before callers_identities

    migrate.upgrade(runtime.engine)

    assert ask(client, outlived).status_code == 403
    assert ask(client, outlived, app="jira").status_code == 200
    assert ask(client, orphaned).status_code == 403
    with runtime.session() as session:
        granted = {
            name: apps for name, apps in session.execute(select(ServiceKey.name, ServiceKey.apps))
        }
    assert granted == {"outlived": ["jira", "zendesk#removed"], "orphaned": ["gone#removed"]}
