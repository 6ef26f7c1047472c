"""What needs an operator, most severe first: a table of small rules over the status sections.

A tenant that cannot get a token because of the token endpoint is critical, and its item says what
to do about the reason it failed with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vault.history import verification
from vault.upstream.events import ACTIONS as ACTIONS  # re-exported: the page's advice table
from vault.upstream.events import DEFAULT_ACTION as DEFAULT_ACTION

if TYPE_CHECKING:
    from vault.ops.status_parts import FailingTenant, Sections

LEVELS = ("critical", "warning", "info")
TENANTS_LISTED = 20  # tenant items listed one by one; the rest are summed up in one item
BLOCKED_LISTED = 5
KEYS_EXPIRING_WITHIN = dt.timedelta(days=14)


@dataclasses.dataclass(frozen=True)
class Item:
    level: str
    text: str
    app: str | None = None
    tenant: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        found = dataclasses.asdict(self)
        return {k: v for k, v in found.items() if v is not None or k in ("level", "text")}


Rule = Callable[["Sections", dt.datetime], list[Item]]


def items(sections: Sections, now: dt.datetime) -> tuple[Item, ...]:
    """Every rule's items, most severe first (stable within a level)."""
    found = [item for rule in RULES for item in rule(sections, now)]
    return tuple(sorted(found, key=lambda item: LEVELS.index(item.level)))


def _keyring_problem(s: Sections, _now: dt.datetime) -> list[Item]:
    return [Item("critical", f"Keyring: {s.keyring.problem}.")] if s.keyring.problem else []


def _unknown_key_ids(s: Sections, _now: dt.datetime) -> list[Item]:
    waits = "Requests that need those values answer 503 until it is added"
    return [
        Item(
            "critical",
            f"Key id {kid} is not in the keyring; waiting on it: {_columns(cols)}. {waits}.",
        )
        for kid, cols in s.keyring.waiting.items()
    ]


def _columns(columns: dict[str, int]) -> str:
    return ", ".join(f"{column} ({_count(n, 'value')})" for column, n in columns.items())


def _failing_tenants(s: Sections, _now: dt.datetime) -> list[Item]:
    listed = [_failing_item(t) for t in s.failing.items[:TENANTS_LISTED]]
    more = s.failing.total - len(listed)
    if more > 0:
        listed.append(Item("critical", f"{_count(more, 'more tenant')} cannot get a token "
                                       "(filter the tenants by state 'failing')."))  # fmt: skip
    return listed


def _failing_item(t: FailingTenant) -> Item:
    answered = f"{t.reason} ({t.detail})" if t.detail and t.detail != t.reason else t.reason
    where = f"{t.app}/{t.tenant}" if t.tenant else t.app
    text = (f"{where} cannot get a token since {t.since:%Y-%m-%d %H:%M} UTC "
            f"({_count(t.failures, 'failure')}, {answered}): {ACTIONS.get(t.reason, DEFAULT_ACTION)}.")  # fmt: skip
    return Item("critical", text, t.app, t.tenant, t.reason)


def _circuits(s: Sections, _now: dt.datetime) -> list[Item]:
    found = []
    for up in s.upstreams:
        if up.circuit != "closed":
            affected = (
                f"; {_count(up.tenants_affected, 'tenant')} affected" if up.tenants_affected else ""
            )
            text = f"Circuit to {up.host} is {up.circuit} after {up.consecutive_failures} failures (last: {up.last_error}){affected}."
            found.append(Item("critical", text))
        elif up.last_error_at and (not up.last_success_at or up.last_error_at > up.last_success_at):
            found.append(Item("warning", f"Last call to {up.host} failed: {up.last_error}."))
    return found


def _old_keys(s: Sections, _now: dt.datetime) -> list[Item]:
    ring = s.keyring
    old = {k: n for k, n in ring.rows_per_key.items() if k != ring.primary and k in ring.key_ids}
    if not old:
        return []
    text = f"{_count(sum(old.values()), 'value')} still under old keys ({', '.join(old)}): run 'delegation-vault crypto reencrypt'."
    return [Item("warning", text)]


def _rejections(s: Sections, _now: dt.datetime) -> list[Item]:
    if not s.rejections.total:
        return []
    found = s.rejections
    if not found.signed:
        return [
            Item("warning", f"{_count(found.total, 'callback')} rejected in the last 24 hours.")
        ]
    text = (
        f"{_count(found.signed, 'signed callback')} refused and {found.unsigned:,} without a valid "
        "signature in the last 24 hours. A signed callback comes from Seismic: see its reason "
        "under Rejected callbacks (a clock off, a changed field, another app's id)."
    )
    return [Item("warning", text)]


def _expiring_keys(s: Sections, now: dt.datetime) -> list[Item]:
    soon = [k.name for k in s.keys if k.state == "active" and k.expires_at
            and k.expires_at <= now + KEYS_EXPIRING_WITHIN]  # fmt: skip
    return [Item("warning", f"Keys expiring within 14 days: {', '.join(soon)}.")] if soon else []


def _blocked(s: Sections, _now: dt.datetime) -> list[Item]:
    listed = [
        Item("info", f"{t.app}/{t.tenant} cannot get a token: {t.why}.", t.app, t.tenant, t.reason)
        for t in s.needs_attention.items[:BLOCKED_LISTED]
    ]
    more = s.needs_attention.total - len(listed)
    if more > 0:
        listed.append(
            Item(
                "info",
                f"{_count(more, 'more tenant')} cannot get a token (disabled, uninstalled or no delegated user).",
            )
        )
    return listed


def _history(s: Sections, _now: dt.datetime) -> list[Item]:
    return [Item(found["level"], found["text"]) for found in verification.attention(s.history)]


def _certificates(s: Sections, now: dt.datetime) -> list[Item]:
    return [Item(c.level, c.text(now), c.app) for c in s.certificates]


def _issuers(s: Sections, _now: dt.datetime) -> list[Item]:
    # A failed fetch matters when it leaves callers without keys: new key ids are refused.
    return [
        Item("warning", f"Issuer {i.name}: its key set could not be fetched ({i.error}); "
                        "tokens signed with a key not already held are refused.")
        for i in s.issuers if i.failing
    ]  # fmt: skip


RULES: tuple[Rule, ...] = (
    _history, _keyring_problem, _unknown_key_ids, _failing_tenants, _circuits, _old_keys, _rejections,
    _expiring_keys, _certificates, _blocked, _issuers,
)  # fmt: skip


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n:,} {noun}s"
