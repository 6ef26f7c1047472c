"""The OpenAPI 3.1 description of every route: the contract, in machine-readable form."""

from __future__ import annotations

from functools import cache
from typing import Any

JSON = "application/json"


def _error(*codes: str, **extra: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "error": {"type": "string", "enum": list(codes)},
        "message": {"type": "string"},
    }
    properties.update(extra)
    return {"type": "object", "required": ["error"], "properties": properties}


def _reply(
    description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    reply: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        reply["headers"] = headers
    return reply


RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "seconds"}
}
WWW_AUTH = {"WWW-Authenticate": {"schema": {"type": "string"}}}
STRING = {"type": "string"}
NULLABLE = {"type": ["string", "null"]}
CALLBACK_FIELDS = {
    "delegationUserId": STRING,
    "appId": STRING,
    "appName": STRING,
    "tenant": STRING,
    "tenantId": STRING,
    "userId": STRING,
    "userEmail": STRING,
    "requestId": STRING,
    "version": STRING,
    "language": STRING,
    "timestamp": {"type": "string", "format": "date-time"},
    "type": {"type": "string", "enum": ["install", "uninstall", "enable", "disable", "upgrade"]},
}


def _callback(kind: str) -> dict[str, Any]:
    required = ["appId", "tenant", "tenantId", "requestId", "timestamp"]
    required.append("delegationUserId" if kind == "config" else "type")
    return {
        "post": {
            "tags": ["vendor"],
            "summary": f"Seismic {'delegation-user-selected' if kind == 'config' else 'lifecycle'} callback",
            "description": "Authenticated by x-seismic-signature: hex HMAC-SHA256 of the raw body with the app's signing secret.",
            "security": [],
            "parameters": [
                {"name": "slug", "in": "path", "required": True, "schema": STRING},
                {"name": "x-seismic-signature", "in": "header", "required": True, "schema": STRING},
                {
                    "name": "x-seismic-signature-old",
                    "in": "header",
                    "required": False,
                    "schema": STRING,
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": required,
                            "properties": CALLBACK_FIELDS,
                        }
                    }
                },
            },
            "responses": {
                "202": _reply(
                    "Applied, unchanged, duplicate or stale; committed before the reply.",
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {
                                "type": "string",
                                "enum": ["applied", "unchanged", "duplicate", "stale"],
                            }
                        },
                    },
                ),
                "400": _reply("Body not JSON or not an object", _error("invalid_json")),
                "401": _reply(
                    "Bad signature, or timestamp outside the window",
                    _error("invalid_signature", "request_expired"),
                ),
                "403": _reply("appId of another app", _error("app_mismatch")),
                "404": _reply("Unknown slug", _error("unknown_app")),
                "413": _reply("Body over 64 KiB", _error("payload_too_large")),
                "422": _reply(
                    "Missing or ill-typed fields",
                    _error("invalid_payload", fields={"type": "array", "items": STRING}),
                ),
                "503": _reply(
                    "Database unavailable, or a stored value the keyring cannot open",
                    _error("unavailable"),
                    RETRY_AFTER,
                ),
            },
        }
    }


def _service_errors(*extra: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    responses = {
        "401": _reply("No, unknown or revoked key", _error("unauthorized"), WWW_AUTH),
        "403": _reply("Key not allowed for this app or tenant", _error("forbidden")),
        "503": _reply(
            "Database unavailable or a stored value the keyring cannot open (unavailable); token"
            " endpoint down, throttling this app and tenant, or its circuit open"
            " (upstream_unavailable)",
            _error("unavailable", "upstream_unavailable"),
            RETRY_AFTER,
        ),
    }
    responses.update({code: _reply(text, schema) for code, text, schema in extra})
    return responses


TRIMMED = r"^\S(.*\S)?$"  # no leading or trailing white space
TOKEN_REQUEST = {
    "type": "object",
    "required": ["app"],
    "properties": {
        "app": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": TRIMMED},
        "tenant": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": TRIMMED,
            "description": "tenant name or tenantId; required for delegation apps and {tenant} token URLs",
        },
        "scope": {"type": "string", "maxLength": 1024, "description": "space separated"},
        "min_ttl": {"type": "integer", "minimum": 0, "maximum": 3600, "default": 60},
        "stale_token": {"type": "string", "maxLength": 16384},
    },
}
TOKEN_REPLY = {
    "type": "object",
    "required": [
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "scope",
        "app",
        "tenant",
        "tenant_id",
        "source",
    ],
    "properties": {
        "access_token": STRING,
        "token_type": STRING,
        "expires_in": {"type": "integer"},
        "expires_at": {"type": "string", "format": "date-time"},
        "scope": STRING,
        "app": STRING,
        "tenant": NULLABLE,
        "tenant_id": NULLABLE,
        "source": {"type": "string", "enum": ["cache", "upstream"]},
    },
}
OPERATOR_401 = _reply("No operator key", _error("unauthorized"), WWW_AUTH)
OPERATOR: list[dict[str, list[str]]] = [
    {"operatorBasic": []}, {"operatorBearer": []}, {"workloadIdentity": []},
]  # fmt: skip
SERVICE: list[dict[str, list[str]]] = [{"serviceKey": []}, {"workloadIdentity": []}]


TIME = {"type": "string", "format": "date-time"}
MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
MAYBE_STRING = {"type": ["string", "null"]}
ATTENTION_ITEM = {
    "type": "object",
    "required": ["level", "text"],
    "properties": {
        "level": {"enum": ["critical", "warning", "info"]},
        "text": STRING,
        "app": STRING,
        "tenant": STRING,
        "reason": {"type": "string", "description": "the OAuth error or our own reason"},
    },
}
TOKEN_HEALTH = {
    "type": ["object", "null"],
    "description": "null until a token is requested for the tenant",
    "required": ["last_success_at", "last_failure_reason", "failing_since"],
    "properties": {
        "last_success_at": MAYBE_TIME,
        "last_failure_at": MAYBE_TIME,
        "last_failure_reason": MAYBE_STRING,
        "last_failure_status": {"type": ["integer", "null"]},
        "failing_since": MAYBE_TIME,
        "consecutive_failures": {"type": "integer"},
    },
}
FAILING_TENANT = {
    "type": "object",
    "required": ["app", "tenant", "reason", "since", "failures", "host"],
    "properties": {
        "app": STRING, "tenant": MAYBE_STRING, "tenant_id": MAYBE_STRING, "reason": STRING,
        "detail": MAYBE_STRING, "status": {"type": ["integer", "null"]}, "since": TIME,
        "last_failure_at": MAYBE_TIME, "failures": {"type": "integer"}, "host": STRING,
    },
}  # fmt: skip
REJECTIONS = {
    "type": "object",
    "required": ["total", "by_reason", "recent"],
    "properties": {
        "total": {"type": "integer", "description": "in the last 24 hours"},
        "by_reason": {
            "type": "array",
            "items": {"type": "object", "required": ["app", "reason", "count"]},
        },
        "recent": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "slug", "reason", "remote"],
                "properties": {
                    "at": TIME,
                    "slug": STRING,
                    "reason": STRING,
                    "remote": MAYBE_STRING,
                },
            },
        },
    },
}
STATUS = {
    "type": "object",
    "required": [
        "attention", "generated_at", "apps", "failing", "tenants", "rejections", "tokens",
        "upstreams", "keyring", "keys", "needs_attention",
    ],
    "properties": {
        "attention": {"type": "array", "items": ATTENTION_ITEM, "description": "most severe first"},
        "certificates": {
            "type": "array",
            "description": "apps whose client certificate expires within 30 days, or has expired",
            "items": {
                "type": "object",
                "required": ["app", "auth_method", "expires_at", "expired"],
                "properties": {"app": STRING, "auth_method": STRING, "expires_at": TIME,
                               "expired": {"type": "boolean"}},
            },
        },
        "failing": {
            "type": "object",
            "required": ["total", "items"],
            "properties": {"total": {"type": "integer"}, "items": {"type": "array", "items": FAILING_TENANT}},
        },
        "tenants": {
            "type": "object",
            "required": ["total", "page", "pages", "page_size", "items"],
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "object", "required": ["app", "tenant", "state", "token"],
                              "properties": {"token": TOKEN_HEALTH}},
                },
            },
        },
        "rejections": REJECTIONS,
        "upstreams": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["host", "circuit", "tenants_affected", "affected"],
                "properties": {
                    "circuit": {"enum": ["closed", "half-open", "open"]},
                    "tenants_affected": {"type": "integer"},
                    "affected": {"type": "array", "items": STRING},
                },
            },
        },
    },
}  # fmt: skip


@cache
def document() -> dict[str, Any]:
    token_errors = _service_errors(
        (
            "400",
            "Bad JSON or fields, or scope outside the allowed scopes",
            _error("invalid_request", "invalid_scope"),
        ),
        (
            "404",
            "Unknown app, or no delegated user stored (or revoked)",
            _error("unknown_app", "no_delegation"),
        ),
        ("409", "Delegation suspended by a disable callback", _error("delegation_disabled")),
        ("413", "Body over 64 KiB, chunked or not", _error("payload_too_large")),
        (
            "502",
            "The token endpoint answered an OAuth error",
            _error("upstream_rejected", upstream_error=STRING, upstream_status={"type": "integer"}),
        ),
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Delegation Vault",
            "version": "1",
            "description": "Verifies Seismic delegation callbacks, keeps them encrypted and brokers OAuth access tokens for internal services.",
        },
        "components": {
            "securitySchemes": {
                "serviceKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a service key (dvk_...)",
                },
                "operatorBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an operator key",
                },
                "workloadIdentity": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a JWT from a trusted issuer whose subject has an identity "
                    "(a Kubernetes service-account token, a SPIFFE JWT-SVID, an OIDC access "
                    "token); refused exactly as an unknown key is",
                },
                "operatorBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "any user name, an operator key as password",
                },
            }
        },
        "paths": {
            "/api/v1/applications/{slug}/config": _callback("config"),
            "/api/v1/applications/{slug}/lifecycle": _callback("lifecycle"),
            "/internal/v1/token": {
                "post": {
                    "tags": ["internal"],
                    "summary": "An access token for a tenant (cached, refreshed before expiry)",
                    "security": SERVICE,
                    "requestBody": {"required": True, "content": {JSON: {"schema": TOKEN_REQUEST}}},
                    "responses": {
                        "200": _reply("A token valid for at least min_ttl seconds", TOKEN_REPLY),
                        **token_errors,
                    },
                }
            },
            "/internal/v1/delegations/{slug}/{tenant}": {
                "get": {
                    "tags": ["internal"],
                    "summary": "The stored delegation of a tenant",
                    "security": SERVICE,
                    "parameters": [
                        {"name": "slug", "in": "path", "required": True, "schema": STRING},
                        {"name": "tenant", "in": "path", "required": True, "schema": STRING},
                    ],
                    "responses": {
                        "200": _reply(
                            "The delegation",
                            {
                                "type": "object",
                                "required": [
                                    "app",
                                    "tenant",
                                    "tenant_id",
                                    "state",
                                    "delegation_user_id",
                                    "updated_at",
                                ],
                                "properties": {
                                    "app": STRING,
                                    "tenant": STRING,
                                    "tenant_id": STRING,
                                    "state": {
                                        "type": "string",
                                        "enum": ["active", "disabled", "revoked"],
                                    },
                                    "delegation_user_id": NULLABLE,
                                    "updated_at": {"type": "string", "format": "date-time"},
                                },
                            },
                        ),
                        **_service_errors(
                            (
                                "404",
                                "Unknown app or no delegation",
                                _error("unknown_app", "no_delegation"),
                            )
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "tags": ["operator"],
                    "summary": "Process alive (no database access)",
                    "security": [],
                    "responses": {
                        "200": _reply(
                            "Alive", {"type": "object", "properties": {"status": {"const": "ok"}}}
                        )
                    },
                }
            },
            "/readyz": {
                "get": {
                    "tags": ["operator"],
                    "summary": "Database, schema and keyring ready",
                    "security": [],
                    "responses": {
                        "200": _reply("Ready", {"type": "object"}),
                        "503": _reply(
                            "Not ready; the failing checks are named",
                            {"type": "object", "required": ["failing"]},
                        ),
                    },
                }
            },
            "/status": {
                "get": {
                    "tags": ["operator"],
                    "summary": "Status page (HTML)",
                    "security": OPERATOR,
                    "parameters": [
                        {"name": "app", "in": "query", "schema": STRING},
                        {
                            "name": "state",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["active", "disabled", "revoked", "failing"],
                            },
                            "description": "failing: the tenant's last token request failed",
                        },
                        {
                            "name": "q",
                            "in": "query",
                            "schema": STRING,
                            "description": "tenant name or id contains",
                        },
                        {
                            "name": "page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The page",
                            "content": {"text/html": {"schema": STRING}},
                        },
                        "400": _reply("Bad page or state", _error("invalid_request")),
                        "401": OPERATOR_401,
                        "503": _reply("Database unavailable", _error("unavailable"), RETRY_AFTER),
                    },
                }
            },
            "/status.json": {
                "get": {
                    "tags": ["operator"],
                    "summary": "The status page's data",
                    "security": OPERATOR,
                    "responses": {
                        "200": _reply(
                            "Status",
                            STATUS,
                        ),
                        "400": _reply("Bad page or state", _error("invalid_request")),
                        "401": OPERATOR_401,
                        "503": _reply("Database unavailable", _error("unavailable"), RETRY_AFTER),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "tags": ["operator"],
                    "summary": "Prometheus metrics (public when DV_METRICS_PUBLIC=1)",
                    "security": OPERATOR,
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": STRING}},
                        },
                        "401": OPERATOR_401,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "tags": ["operator"],
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _reply("OpenAPI 3.1", {"type": "object"})},
                }
            },
        },
    }
