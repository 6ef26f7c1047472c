"""Delegation Vault's domain, in plain Python; it never imports Flask or ``app``.

Packages by concern, each importing only those listed after it (``.importlinter``): ``ops`` (the
operators' view) and ``sandbox``; ``callbacks`` and ``tokens`` (the two use cases); ``history``;
``apps``; ``upstream`` (the token endpoint) and ``callers`` (keys); ``keyring`` and
``freshness``. ``runtime`` holds a process's state; ``settings``, ``errors``, ``models``, ``db``,
``clock``, ``migrate``, ``metrics``, ``scopes``, ``rows`` and ``outbox`` are the shared leaves.
"""
