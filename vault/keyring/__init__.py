"""The keyring: encryption at rest and everything that moves keys.

- ``crypto``: ``Keyring`` (AES-256-GCM, ``dv1:<key id>:...``), ``load_keyring``, ``parse_keyring``.
- ``entries``: key ids and fresh ``kid:base64`` entries (``new_key_entry``).
- ``sealing``: what each encrypted column is bound to (``row_aad``).
- ``wrapping``, ``wrap_pkcs11``, ``wrap_kms``: keyring entries wrapped by an HSM or KMS key.
- ``rotation``: values counted per key id and moved to the primary key in batches.
- ``gaps``: stored values under key ids the keyring lacks (``Census``, for /readyz).
- ``reload``: the keyring read again on SIGHUP (``reload_keyring``), refused when it does not fit.
"""

from vault.keyring.reload import reload_keyring

__all__ = ["reload_keyring"]
