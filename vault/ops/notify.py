"""Notifications: events for changes of state, and the sender that POSTs them to DV_NOTIFY_URL.

Each event is signed per Standard Webhooks v1 (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``: HMAC-SHA256 of ``id.timestamp.body`` under the decoded ``whsec_`` secret).
The body carries a human ``text``, so a Slack incoming webhook URL works as is. The sender runs in
a background thread of every process; the outbox lease lets one of them send at a time. Nothing
here runs on a request's path: a slow or absent receiver delays notifications, never tokens.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import socket
import threading
import time
import weakref

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault import metrics, outbox
from vault.runtime import Runtime
from vault.upstream.events import circuit_closed as circuit_closed  # re-exported: the events
from vault.upstream.events import circuit_opened as circuit_opened  # are written by token
from vault.upstream.events import tenant_failing as tenant_failing  # health and the circuit
from vault.upstream.events import tenant_recovered as tenant_recovered

log = logging.getLogger("delegation_vault.notify")
POLL = 1.0  # seconds between looks at the outbox while holding the lease
STANDBY = 5.0  # seconds between tries for the lease while another process holds it
# Renewing the lease is a commit, and every commit makes each worker re-read what its cached
# token path had memoised (vault/freshness.py): so it is renewed every 20 s, not on every look.
HOLD_FOR = dt.timedelta(seconds=60)
RENEW_AFTER = 20.0
TIMEOUT = 5.0


# -- signing ---------------------------------------------------------------------------------------


def signed_headers(secret: str, event_id: str, body: str, timestamp: int) -> dict[str, str]:
    """Standard Webhooks v1 headers for ``body``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{event_id}.{timestamp}.{body}".encode()
    signature = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


# -- the sender ------------------------------------------------------------------------------------


class Notifier:
    """One per process (started by ``start``); sends while it holds the outbox lease."""

    def __init__(self, runtime: Runtime, transport: httpx.BaseTransport | None = None) -> None:
        assert runtime.settings.notify_url and runtime.settings.notify_secret
        self.rt = runtime
        self.url, self.secret = runtime.settings.notify_url, runtime.settings.notify_secret
        self.holder = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.client = httpx.Client(timeout=TIMEOUT, follow_redirects=False, transport=transport)
        self._renew_at = 0.0  # monotonic time after which the lease must be claimed again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dv-notify", daemon=True)

    def start(self) -> Notifier:
        outbox.enable(self.rt.engine)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(TIMEOUT + 2)
        try:
            with self.rt.session() as session:
                outbox.release(session, self.holder, self.rt.clock())
        except SQLAlchemyError:
            pass  # the lease expires by itself
        self.client.close()

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                wait = POLL if self.tick() else STANDBY
            except SQLAlchemyError as exc:  # the database is down: try again later
                log.warning("notifications paused: %s", type(exc).__name__)
                wait = STANDBY

    def tick(self) -> bool:
        """Send what is due, oldest first; False when another process holds the lease."""
        with self.rt.session() as session:
            if not self._holding(session):
                return False
            # Well inside the lease, so no other process starts sending before this one stops.
            until = self._renew_at + (HOLD_FOR.total_seconds() - RENEW_AFTER) / 2
            while not self._stop.is_set() and time.monotonic() < until:
                event, due = outbox.oldest(session)
                if event is None or due is None or due > self.rt.clock():
                    return True
                self._send(session, event)
        return True

    def _holding(self, session: Session) -> bool:
        if time.monotonic() < self._renew_at:
            return True
        if not outbox.claim(session, self.holder, self.rt.clock(), HOLD_FOR):
            return False
        self._renew_at = time.monotonic() + RENEW_AFTER
        return True

    def _send(self, session: Session, event: outbox.Pending) -> None:
        error = self._post(event)
        now = self.rt.clock()
        if error is None:
            outbox.delivered(session, event, now)
            metrics.NOTIFICATIONS.labels(event.type, "delivered").inc()
        elif outbox.failed(session, event, now, error):
            metrics.NOTIFICATIONS.labels(event.type, "retry").inc()
            log.warning("notification not delivered; will retry", extra={"reason": error})
        else:
            metrics.NOTIFICATIONS.labels(event.type, "dropped").inc()
            log.error("notification dropped after an hour of failures", extra={"reason": error})

    def _post(self, event: outbox.Pending) -> str | None:
        """None when the receiver took it (2xx); else a short reason (never the URL)."""
        headers = signed_headers(self.secret, event.event_id, event.body, int(time.time()))
        try:
            response = self.client.post(self.url, content=event.body.encode(), headers=headers)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError:
            return "network_error"
        return None if response.is_success else f"http_{response.status_code}"


_running: weakref.WeakSet[Notifier] = weakref.WeakSet()


def start(runtime: Runtime) -> None:
    """Start this process's sender when DV_NOTIFY_URL is set (once per runtime)."""
    if runtime.settings.notify_url and runtime.started.notifier is None:
        notifier = runtime.started.notifier = Notifier(runtime).start()
        _running.add(notifier)


@atexit.register
def _release_leases() -> None:
    """A process that stops hands the lease on at once (else it expires after HOLD_FOR)."""
    for notifier in list(_running):
        if not notifier._stop.is_set():
            notifier.close()
