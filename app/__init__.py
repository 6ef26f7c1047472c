"""Flask adapters for Delegation Vault: HTTP in, vault calls, HTTP out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vault.settings import (
    MAX_BODY as MAX_BODY,  # the one limit: every route, both callbacks' checks
)

if TYPE_CHECKING:
    from flask import Flask

    from vault.runtime import Runtime
    from vault.settings import Settings


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the WSGI app from ``settings`` (default: the environment) or a ready ``runtime``."""
    # Imported here, not at the top: the CLI lives in this package and needs none of this.
    from flask import Flask

    from app import (
        bodies,
        callbacks,
        db,
        errors,
        hits,
        internal,
        logs,
        operator,
        proxy,
        token_route,
        traces,
    )
    from vault import tracing
    from vault.ops import notify, start_series
    from vault.runtime import Runtime
    from vault.settings import Settings

    if runtime is None:
        runtime = Runtime.build(settings or Settings.from_env())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.url_map.merge_slashes = False  # '//' is a 404 in JSON, not an HTML redirect
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["vault"] = runtime
    db.init_app(app)
    errors.init_app(app)
    app.register_blueprint(callbacks.bp, url_prefix="/api/v1/applications")
    app.register_blueprint(internal.bp, url_prefix=token_route.PREFIX)
    app.register_blueprint(operator.bp)
    # The one middleware stack, whichever entry point serves the app (delegation-vault serve,
    # gunicorn app.wsgi:app, tests). Inside out: cached-token hits, the server span (tracing on
    # only), then the request id and access line, then body framing, then the client's address
    # from a trusted proxy.
    app.wsgi_app = hits.CachedTokenHits(app.wsgi_app, runtime, MAX_BODY)  # type: ignore[method-assign]
    if tracing.active():
        app.wsgi_app = traces.ServerSpans(app.wsgi_app)  # type: ignore[method-assign]
    logs.init_app(app, runtime.settings, runtime.labelled)
    app.wsgi_app = bodies.BodyLimit(app.wsgi_app, MAX_BODY)  # type: ignore[method-assign]
    app.wsgi_app = proxy.ForwardedFor(app.wsgi_app, runtime.settings.forwarded_allow_ips)  # type: ignore[method-assign]
    start_series(runtime)  # every known series at 0, so Prometheus sees the first event
    notify.start(runtime)  # sends DV_NOTIFY_URL's events from a background thread, if set
    return app
