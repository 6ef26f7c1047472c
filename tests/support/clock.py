"""A clock the tests set by hand."""

from __future__ import annotations

import datetime as dt


class FrozenClock:
    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, value: str | dt.datetime) -> None:
        self.now = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if self.now.tzinfo is None:
            self.now = self.now.replace(tzinfo=dt.UTC)

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
