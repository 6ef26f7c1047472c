"""The operators' view: it may read every other package; the token and callback paths never import it.

- ``status``, ``status_parts``: what the status page shows (``gather``, ``Status``), in sections.
- ``attention``: what needs an operator, most severe first, a table of rules.
- ``health``: readiness (``readiness``, ``census``) for /readyz.
- ``gauges``: gauges of shared state, read from the database at scrape time.
- ``cert_expiry``: client certificates that expire soon.
- ``caller_sections``: workload identities and trusted issuers (key set health) for the page.
- ``series``: every known metric series at 0 in each worker (``start_series``), so
  Prometheus' increase() sees the first event.
- ``notify``: the sender (``start``, ``Notifier``) that delivers the outbox's events to
  DV_NOTIFY_URL, signed per Standard Webhooks (``signed_headers``).
"""

from vault.ops.series import start_series

__all__ = ["start_series"]
