"""`sandbox`: a local stand-in for Seismic, so the whole flow runs on one machine (development)."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx

from app.cli.common import UsageFailure, fail, note, open_runtime
from vault.sandbox import setup
from vault.sandbox.callbacks import KINDS
from vault.sandbox.server import Sandbox, listening, secret_path, write_secret
from vault.sandbox.vendor import Vendor
from vault.settings import LOOPBACK_HOSTS, Settings

DEFAULT_BIND = "127.0.0.1:8100"
TENANT = "sandbox"


def loopback(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host not in LOOPBACK_HOSTS or not port.isdigit() or int(port) > 65535:
        raise UsageFailure(f"--bind: a loopback HOST:PORT such as {DEFAULT_BIND} (got {bind!r})")
    return host, int(port)


@click.group("sandbox", invoke_without_command=True)
@click.option("--bind", default=DEFAULT_BIND, show_default=True, help="where the stand-in listens")
@click.option("--service", help="the running service (default: http://127.0.0.1:$PORT)")
@click.option("--token-ttl", type=click.IntRange(60, 86400), default=3600, show_default=True)
@click.pass_context
def sandbox(ctx: click.Context, bind: str, service: str | None, token_ttl: int) -> None:
    """Run a stand-in for Seismic and register app 'sandbox' against it (development only).

    It serves a token endpoint shaped like Seismic's, replaces the app 'sandbox' with fresh
    secrets, tells the running service that tenant 'sandbox' delegated a user, and prints a
    service key with the command that asks for a token. Send further callbacks from another
    shell with 'delegation-vault sandbox send'.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings.from_env()
    if settings.production:
        fail("the sandbox is for development only (DV_ENV=production)")
    host, port = loopback(bind)
    _log_requests()
    service = (service or f"http://127.0.0.1:{settings.port}").rstrip("/")
    _require_service(service)
    vendor = Vendor(setup.CLIENT_ID, "", token_ttl)
    state = Sandbox(vendor, service, setup.SLUG, "", "")
    with listening(host, port, state) as server:
        url = f"http://{bind.rpartition(':')[0]}:{server.server_address[1]}"
        secret = write_secret(settings.instance_path, server.server_address[1], state.secret)
        try:
            key = _register(state, f"{url}/tenants/{{tenant}}/connect/token", settings)
            _first_delegation(state)
            _explain(url, service, key)
            _wait_for_a_signal()
        finally:
            secret.unlink(missing_ok=True)
    note("sandbox stopped")


def _log_requests() -> None:
    """One line on standard error per request the stand-in answers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("sandbox: %(message)s"))
    logger = logging.getLogger("vault.sandbox")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _require_service(service: str) -> None:
    try:
        httpx.get(f"{service}/healthz", timeout=3).raise_for_status()
    except httpx.HTTPError:
        fail(
            f"no service answers at {service}/healthz; start it first, in another shell: "
            "DV_ALLOW_HTTP_TOKEN_URLS=1 delegation-vault serve"
        )


def _register(state: Sandbox, token_url: str, settings: Settings) -> str:
    """Replace the app and hand its secrets to the stand-in; the new service key."""
    runtime = open_runtime(settings)
    try:
        with runtime.session() as session:
            made = setup.register(session, runtime.keyring, token_url, runtime.clock())
            known = setup.delegated_users(session, runtime.keyring)
    finally:
        runtime.engine.dispose()
    state.vendor = Vendor(setup.CLIENT_ID, made.client_secret, state.vendor.token_ttl)
    for tenant, user_id in known.items():  # an earlier run's tenants get tokens from this one too
        state.vendor.delegate(tenant, user_id)
    state.vendor_app_id, state.signing_secret = made.vendor_app_id, made.signing_secret
    return made.service_key


def _first_delegation(state: Sandbox) -> None:
    status, reply = state.deliver("delegation", TENANT)
    if status != 202:
        fail(
            f"the service answered the delegation callback with {status} {reply.get('error')}; "
            "does it use the same DATABASE_URL and DV_INSTANCE_PATH as this command?"
        )


def _explain(url: str, service: str, key: str) -> None:
    ask = json.dumps({"app": setup.SLUG, "tenant": TENANT})
    click.echo(
        f"Seismic stand-in on {url} (token endpoint /tenants/{{tenant}}/connect/token).\n"
        f"App '{setup.SLUG}' is registered against it with fresh secrets; tenant '{TENANT}' "
        f"delegated a user.\n\n"
        f"Service key for app '{setup.SLUG}' (shown once): {key}\n\n"
        f"Ask the service for a token:\n"
        f"  curl -sS -X POST {service}/internal/v1/token -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' -d '{ask}'\n\n"
        f"Send Seismic's other callbacks from another shell:\n"
        f"  {_command()} sandbox send disable|enable|uninstall|delegation "
        f"[--tenant {TENANT}] [--sandbox {url}]\n"
        f"Ctrl-C stops the stand-in.",
    )


def _command() -> str:
    """How this command was called (.venv/bin/delegation-vault, say), to print lines that paste."""
    called = sys.argv[0] if sys.argv else ""
    return shlex.quote(called) if called.endswith("delegation-vault") else "delegation-vault"


def _wait_for_a_signal() -> None:
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
    stop.wait()


@sandbox.command("send")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--tenant", default=TENANT, show_default=True)
@click.option("--user", "user_id", help="the delegated user (delegation only; default: a new one)")
@click.option("--sandbox", "url", default=f"http://{DEFAULT_BIND}", show_default=True)
def sandbox_send(kind: str, tenant: str, user_id: str | None, url: str) -> None:
    """Have the running stand-in send one signed callback to the service, as Seismic would.

    It proves itself to the stand-in with the secret the stand-in wrote to
    $DV_INSTANCE_PATH/sandbox-PORT.secret: run it with the sandbox's DV_INSTANCE_PATH.
    """
    if not tenant.strip():
        raise UsageFailure("--tenant: must not be empty")
    asked = {"kind": kind, "tenant": tenant, "user_id": user_id}
    secret = _secret_of(url)
    try:
        reply = httpx.post(
            f"{url.rstrip('/')}/sandbox/send", json=asked, timeout=10,
            headers={"Authorization": f"Bearer {secret.read_text() if secret.exists() else ''}"},
        )  # fmt: skip
        answer = reply.json()
    except (httpx.HTTPError, ValueError):
        fail(f"no sandbox answers at {url}; start one with 'delegation-vault sandbox'")
    _unless_refused(reply.status_code, answer, url, secret)
    status = answer.get("service_status")
    click.echo(f"{kind} for tenant {tenant!r}: {status} {json.dumps(answer.get('service_reply'))}")
    if not isinstance(status, int) or status >= 300:
        raise click.exceptions.Exit(1)


def _secret_of(url: str) -> Path:
    try:
        port = httpx.URL(url).port or 80
    except httpx.InvalidURL:
        raise UsageFailure(
            f"--sandbox: a URL such as http://{DEFAULT_BIND} (got {url!r})"
        ) from None
    return secret_path(Settings.from_env().instance_path, port)


def _unless_refused(status: int, answer: dict[str, Any], url: str, secret: Path) -> None:
    """Fail, naming what is wrong, when the stand-in refused or could not reach the service."""
    if answer.get("error") == "service_unreachable":
        fail(
            f"the sandbox at {url} answers, but no service answers at {answer.get('service')}; "
            "start it, in another shell: DV_ALLOW_HTTP_TOKEN_URLS=1 delegation-vault serve"
        )
    if status == 401:
        fail(
            f"the sandbox at {url} refused this command: its secret is not in {secret} "
            "(run 'sandbox send' with the sandbox's DV_INSTANCE_PATH)"
        )
    if status >= 400:
        fail(f"the sandbox at {url} refused the request: {status} {answer.get('error')}")
