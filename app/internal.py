"""Service routes: access tokens and delegation look-ups for internal services."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("internal", __name__)
