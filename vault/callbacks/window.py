"""The freshness window for vendor callbacks."""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class Window:
    max_age: dt.timedelta
    max_skew: dt.timedelta
