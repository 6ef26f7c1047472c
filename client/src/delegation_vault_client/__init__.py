"""Access tokens from Delegation Vault for internal services.

``VaultClient`` asks the vault for tokens; ``VaultAuth`` presents them on an httpx or requests
client, keeps them in the process and replaces one the vendor API rejects.
"""

from delegation_vault_client._auth import VaultAuth
from delegation_vault_client._client import VaultClient, __version__
from delegation_vault_client._errors import VaultError
from delegation_vault_client._token import Token

__all__ = ["Token", "VaultAuth", "VaultClient", "VaultError", "__version__"]
