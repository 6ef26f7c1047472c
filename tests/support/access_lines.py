"""The access lines a test's requests write, parsed: the product's handler is pointed at a buffer
and formats JSON for the duration (access lines are written to that handler directly, never as
log records, so a log capture does not see them)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.logs import JsonFormatter, ProductHandler


@contextmanager
def captured(everything: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Yields a list that holds, once the block ends, every access line written inside it (with
    ``everything``, every line the product's handler wrote)."""
    (handler,) = [
        h for h in logging.getLogger("delegation_vault").handlers if isinstance(h, ProductHandler)
    ]
    buffer, formatter = io.StringIO(), handler.formatter
    stream = handler.setStream(buffer)
    handler.setFormatter(JsonFormatter())
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        handler.setStream(stream)  # type: ignore[arg-type]
        handler.setFormatter(formatter)
        parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
        lines.extend(
            line for line in parsed if everything or line["logger"] == "delegation_vault.access"
        )
