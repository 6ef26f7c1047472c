"""Delegation Vault domain: crypto, storage, callbacks and the token client. Never imports Flask."""
