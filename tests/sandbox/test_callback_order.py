"""Callbacks the stand-in sends one after the other carry increasing timestamps, so the service
applies them in the order sent (it orders by timestamp, whole seconds, and breaks ties by the
random requestId: 'disable' then 'enable' within one second could leave the tenant disabled)."""

from __future__ import annotations

from vault.sandbox.server import Sandbox
from vault.sandbox.vendor import Vendor


def test_each_callback_is_stamped_after_the_previous_one() -> None:
    sandbox = Sandbox(Vendor("c", "s"), "http://127.0.0.1:1", "sandbox", "app-id", "secret")
    stamps = [sandbox.next_timestamp() for _ in range(5)]  # well within one second
    assert stamps == sorted(set(stamps)), stamps
    assert all(s.microsecond == 0 for s in stamps)
