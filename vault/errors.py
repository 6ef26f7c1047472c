"""Every error the contract names, each carrying its wire form.

``error`` and ``status`` are what the client sees; ``reason`` is a finer machine word for logs
and metrics (two rejections may share ``invalid_signature`` but differ in reason).
"""

from __future__ import annotations

from typing import Any, ClassVar


class VaultError(Exception):
    error: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    message: ClassVar[str] = "The request failed."

    def __init__(self, reason: str | None = None, detail: str | None = None) -> None:
        super().__init__(reason or self.error)
        self.reason = reason or self.error
        self.detail = detail

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.detail or self.message}
        return body

    def headers(self) -> dict[str, str]:
        return {}


KEYRING_RETRY_AFTER = 60  # seconds: a missing key comes back with an operator, not by itself


class _RetryLater(VaultError):
    def __init__(self, reason: str | None = None, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# Vendor callbacks
class UnknownApp(VaultError):
    error, status, message = "unknown_app", 404, "No app is registered under this name."

    def __init__(self, slug: str | None = None) -> None:
        super().__init__()
        self.slug = slug  # for the operator's command line; never echoed in a reply


class InvalidSignature(VaultError):
    error, status, message = "invalid_signature", 401, "The request signature is missing or wrong."


class InvalidJson(VaultError):
    error, status, message = "invalid_json", 400, "The body must be a JSON object."


class InvalidPayload(VaultError):
    error, status, message = "invalid_payload", 422, "Required fields are missing or ill-typed."

    def __init__(self, fields: list[str]) -> None:
        super().__init__("invalid_payload")
        self.fields = sorted(set(fields))

    def body(self) -> dict[str, Any]:
        return {**super().body(), "fields": self.fields}


class AppMismatch(VaultError):
    error, status, message = "app_mismatch", 403, "appId does not belong to this app."


class RequestExpired(VaultError):
    error, status, message = "request_expired", 401, "The request timestamp is outside the window."


class PayloadTooLarge(VaultError):
    error, status, message = "payload_too_large", 413, "The body is larger than 64 KiB."


class Unavailable(_RetryLater):
    error, status, message = "unavailable", 503, "The database is unavailable; try again."


class KeyringUnavailable(Unavailable):
    """A stored value the keyring cannot open: the service fails closed until an operator acts."""

    message = "A stored value cannot be opened with this keyring; try again later."

    def __init__(self) -> None:
        super().__init__("keyring_cannot_open", retry_after=KEYRING_RETRY_AFTER)


# Internal API
class Unauthorized(VaultError):
    error, status, message = "unauthorized", 401, "A valid key is required."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="delegation-vault"'}


class IdentityRefused(Unauthorized):
    """A JWT caller refused: the reply is an unknown key's; the issuer is for the operator's log."""

    def __init__(self, reason: str, issuer: str | None = None) -> None:
        super().__init__(reason)
        self.issuer = issuer


class OperatorUnauthorized(Unauthorized):
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="delegation-vault", charset="UTF-8"'}


class Forbidden(VaultError):
    error, status, message = "forbidden", 403, "This key is not allowed here."


class InvalidRequest(VaultError):
    error, status, message = "invalid_request", 400, "The request body is not valid."


class InvalidScope(VaultError):
    error, status, message = "invalid_scope", 400, "The scope is outside the app's allowed scopes."


class NoDelegation(VaultError):
    error, status, message = "no_delegation", 404, "No delegated user is stored for this tenant."


class DelegationDisabled(VaultError):
    error, status, message = "delegation_disabled", 409, "The app is disabled for this tenant."


class UpstreamRejected(VaultError):
    error, status, message = "upstream_rejected", 502, "The token endpoint refused the request."

    def __init__(self, upstream_error: str, upstream_status: int) -> None:
        super().__init__(f"upstream_{upstream_error}")
        self.upstream_error = upstream_error
        self.upstream_status = upstream_status

    def body(self) -> dict[str, Any]:
        return {
            **super().body(),
            "upstream_error": self.upstream_error,
            "upstream_status": self.upstream_status,
        }


class UpstreamUnavailable(_RetryLater):
    error, status, message = "upstream_unavailable", 503, "The token endpoint is unavailable."


class NotFound(VaultError):
    error, status, message = "not_found", 404, "No such resource."


# Operational errors (CLI and start-up): exit code 1, one line, no traceback.
class OperationalError(Exception):
    """A failure an operator can act on; its message is safe to print."""


class ConfigError(OperationalError):
    pass


class KeyringError(OperationalError):
    pass


class DecryptionError(KeyringError):
    """A stored value the keyring cannot open. The message names the column and the key id,
    never the value or its ciphertext."""

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


class BadValue(OperationalError):
    """A value an operator gave that can never work (a usage error: exit code 2 on the CLI)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
