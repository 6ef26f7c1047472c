"""The delegation history, which proves itself.

- ``chain``: each entry's MAC over a canonical, versioned encoding, chained per app and tenant.
- ``verification``: the chains checked (``delegations verify``), the last result kept per scope.
- ``resealing``: the chains moved to the primary key, so an old key can leave the keyring.
"""
