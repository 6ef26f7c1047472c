"""The token endpoint, as the vault talks to it.

- ``client``: the HTTP client (``Upstream``), ``TokenRequest``, ``Token``, ``Cached`` (a token as
  served, dated), retries and the OAuth reply read.
- ``exchange``: one token for a resolved request (``fetch``), credentials read fresh.
- ``client_auth``: ``AUTH_METHODS``, the table of client authentication methods.
- ``circuit``, ``throttle``: the circuit breaker per host, the hold after a 429 per target.
- ``token_health``: token health per app and tenant; ``events``: the notifications it and the
  circuit write (the outbox), with the advice per reason (``ACTIONS``).
- ``guards``: a token URL or tenant that would change where a secret goes, refused.
- ``pem``: PEM keys and certificates an operator gives, checked and normalised.
"""
