"""Registered apps and their delegations.

- ``registry``: apps and their sealed secrets (``add_app``, ``update_app``, ``get_app``,
  ``AppSpec``, ``signing_secrets``, ``client_secrets``).
- ``delegations``: delegation queries (``lookup``, ``find``, ``view``, ``history``), tokens
  evicted with a tenant's change, ``mask``.
"""
