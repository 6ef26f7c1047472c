"""Access tokens for internal services.

- ``service``: the use case. ``issue`` (a token meeting min_ttl), ``served_from_cache`` (its
  first half, for the lane beneath Flask), ``resolve``, ``TokenQuery``, ``Issued``.
- ``cache``: the token cache over both levels (``TokenCache``, ``Slot``).
- ``cache_bounds``: the bound on cached scope sets, and the sweep of expired rows.
- ``refresh``: a token fetched and stored, now or ahead of expiry.
- ``singleflight``: one upstream call per key across threads, workers and instances.
- ``background``: work no request waits on (refreshes, sweeps).
- ``probe``: ``apps test``, a token now through the same path, with advice on failure.
"""
