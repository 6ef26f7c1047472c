"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:app``. Settings come from the environment."""

from __future__ import annotations

from app import create_app
from vault import tracing

tracing.start()  # when an OTLP endpoint is set; gunicorn imports this in each worker
app = create_app()
