"""The keyring: loading, checking and reloading the data keys that seal stored values."""

from vault.keyring.reload import reload_keyring

__all__ = ["reload_keyring"]
