"""Seismic's signed callbacks, from raw bytes to a committed delegation change.

- ``service``: the use case. ``receive`` (checked in the contract's order, then applied in one
  transaction), ``accept``, ``apply``, ``Outcome`` (applied, unchanged, duplicate, stale).
- ``signatures``: the x-seismic-signature check (HMAC-SHA256 over the raw body).
- ``payloads``: bodies parsed and validated into a ``Callback``.
- ``window``: the freshness window for a callback's timestamp.
- ``rejections``: refused callbacks counted, and the recent ones kept, for the status page.
"""
