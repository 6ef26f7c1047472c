"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:app``. Settings come from the environment.

Each worker imports this after gunicorn's fork: the workers of one gunicorn count in one folder
(see ``app.server.gunicorn_folder``), decided before the app, and so any metric, is made.
"""

from __future__ import annotations

from app import create_app
from app.server import gunicorn_folder
from vault import metrics, tracing

metrics.count_in(gunicorn_folder())
tracing.start()  # when an OTLP endpoint is set; gunicorn imports this in each worker
app = create_app()
