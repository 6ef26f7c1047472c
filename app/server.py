"""gunicorn, run from ``delegation-vault serve``: gthread workers, metrics gathered across them."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from vault.keyring.crypto import Keyring
from vault.settings import Settings


def _metrics_dir() -> None:
    """Give every worker one directory for Prometheus samples, unless the operator chose one."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="dv-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _post_fork(_server: Any, _worker: Any) -> None:
    """Traces, when an OTLP endpoint is set: one tracer provider and export thread per worker."""
    from vault import tracing

    tracing.start()


def _worker_exit(_server: Any, _worker: Any) -> None:
    """The worker's waiting spans exported before it goes."""
    from vault import tracing

    tracing.stop()


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(
        self, settings: Settings, options: dict[str, Any], keyring: Keyring | None = None
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.options = options
        self.started = False
        super().__init__()

    def load_config(self) -> None:
        """gunicorn calls this at start and again on SIGHUP (``systemctl reload``), before it
        forks the new workers: on SIGHUP the keyring is read again, so a key added to
        DV_KEYS_FILE (or a new primary) is used with no restart and no request refused."""
        for name, value in self.options.items():
            self.cfg.set(name, value)
        # gunicorn 25 and later open a control socket under $HOME by default: nothing here uses
        # it, and it would be one more writable place (the image's root filesystem is read-only).
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)
        if self.started and self.keyring is not None:
            self.keyring = _reloaded(self.settings, self.keyring)
        self.started = True

    def load(self) -> Any:
        # Each worker builds its own app after the fork: no database connection is shared.
        from app import create_app
        from vault.runtime import Runtime

        # The keyring comes unwrapped from before the fork: no worker asks the HSM or KMS.
        runtime = Runtime.build(self.settings, keyring=self.keyring)
        return create_app(runtime=runtime)  # ForwardedFor included, as for every entry point


def _reloaded(settings: Settings, current: Keyring) -> Keyring:
    from vault.clock import utcnow
    from vault.keyring import reload_keyring

    reloaded = reload_keyring(settings, current, utcnow())
    print(f"delegation-vault: {reloaded.message}", file=sys.stderr, flush=True)
    return reloaded.keyring


def _when_ready(arbiter: Any) -> None:
    """Say where the service listens, once the sockets are bound (a port of 0 is resolved)."""
    for listener in arbiter.LISTENERS:
        print(f"delegation-vault: listening on {listener}", file=sys.stderr, flush=True)


def run(
    settings: Settings, *, bind: str, workers: int, threads: int, keyring: Keyring | None = None
) -> None:
    _metrics_dir()
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,  # the app logs one line per request itself, without query strings
        "errorlog": "-",
        "loglevel": "warning",
        "child_exit": _child_exit,
        "post_fork": _post_fork,
        "worker_exit": _worker_exit,
        "when_ready": _when_ready,
        "proc_name": "delegation-vault",
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
    Server(settings, options, keyring).run()
