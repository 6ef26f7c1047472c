"""Grants to an app end with the app: a key or identity limited to a removed app never opens an
app added later under the same slug."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.freshness import invalidate
from vault.models import App, Identity, ServiceKey

# A grant to a removed app is kept, renamed so that no slug can match it (slugs are lower-case
# letters, digits and '-'): dropping it instead would leave a key limited to that one app
# limited to nothing, which reads as every app.
REMOVED = "{slug}#removed-{id}"


def end_grants(session: Session, app: App) -> int:
    """Rename every key's and identity's grant to ``app``, in the caller's transaction (the
    app's removal); returns how many callers had one."""
    ended = REMOVED.format(slug=app.slug, id=app.id)
    rows: list[ServiceKey | Identity] = [
        *session.scalars(select(ServiceKey)),
        *session.scalars(select(Identity)),
    ]
    granted = [row for row in rows if app.slug in row.apps]
    for row in granted:
        row.apps = sorted(ended if a == app.slug else a for a in row.apps)
    if granted:  # every process's remembered keys and identities carry their grants
        invalidate(session, "service_key")
        invalidate(session, "identity")
    return len(granted)
