"""What each encrypted column is bound to: the associated data of its row."""

from __future__ import annotations

from vault.keyring.crypto import context
from vault.models import App, Base, CachedToken, Delegation, DelegationHistory


def row_aad(row: Base, column: str) -> bytes:
    """Associated data for ``row.column``: table, column and the identity of the row's owner."""
    if isinstance(row, App):
        return context(f"apps.{column}", row.id)
    if isinstance(row, Delegation):
        return context(f"delegations.{column}", row.app_id, row.tenant_id)
    if isinstance(row, DelegationHistory):
        return context(f"delegation_history.{column}", row.app_id, row.tenant_id, row.request_id)
    if isinstance(row, CachedToken):
        return context(f"token_cache.{column}", row.app_id, row.cache_key)
    raise TypeError(f"{type(row).__name__} holds no ciphertext")
