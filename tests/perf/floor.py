"""The framework floor: a bare Flask endpoint answering a token-sized JSON, nothing else.

Served under the same gunicorn settings as the service, it is the baseline the benchmark divides by.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)
TOKEN = "x" * 1100  # a vendor access token is a JWT of roughly this size


@app.post("/internal/v1/token")
@app.post("/api/v1/applications/<slug>/config")
def token(slug: str | None = None) -> tuple[dict[str, object], int, dict[str, str]]:
    body = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 3000,
        "expires_at": "2026-11-22T13:00:00Z",
        "scope": "library reporting",
        "app": "zendesk",
        "tenant": "intdev2",
        "tenant_id": "b061ad37-1f5a-4531-b7d3-89807dccca68",
        "source": "cache",
    }
    return body, 200, {"Cache-Control": "no-store"}
