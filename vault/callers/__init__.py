"""Who may call the internal API.

- ``keys``: service and operator keys, shown once, stored hashed (``create_key``,
  ``authenticate``, ``revoke_key``, ``Caller``).
"""
