"""Who may call the internal API and the operator routes.

- ``keys``: service and operator keys, shown once, stored hashed (``create_key``,
  ``authenticate``, ``revoke_key``, ``Caller``).
- ``bearer``: one ``authenticate`` for any Bearer value: a ``dvk_`` key or a workload's JWT.
- ``workload``, ``issuers``, ``identities``, ``jwks``, ``grants``: workload identities (a JWT from a
  trusted issuer, checked against its key set) and the grants keys and identities share.
"""

from vault.callers.bearer import authenticate
from vault.callers.workload import Workloads

__all__ = ["Workloads", "authenticate"]
