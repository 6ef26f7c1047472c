"""gunicorn, run from ``delegation-vault serve``: gthread workers, metrics gathered across them."""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from vault import metrics
from vault.keyring.crypto import Keyring
from vault.settings import Settings


def metrics_folder() -> Path:
    """The folder where the workers about to be forked count: ``PROMETHEUS_MULTIPROC_DIR`` when the
    operator chose one (emptied of an earlier run's samples), else a fresh private folder in the
    temporary directory (``$TMPDIR``, else /tmp), removed when the service stops."""
    chosen = os.environ.get(metrics.FOLDER)
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):  # prometheus_client's advice: empty it at every start
            old.unlink()
        return folder
    folder = Path(tempfile.mkdtemp(prefix="delegation-vault-metrics-"))
    arbiter = os.getpid()

    def remove() -> None:
        if os.getpid() == arbiter:  # a worker leaving runs atexit too: only the arbiter removes
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return folder


def gunicorn_folder() -> Path | None:
    """For ``gunicorn app.wsgi:app`` (no code of ours runs before the fork): the operator's
    ``PROMETHEUS_MULTIPROC_DIR``, else one folder per gunicorn arbiter, named by its pid and start
    time so it is new at every start; None outside gunicorn (one process counts in memory)."""
    if os.environ.get(metrics.FOLDER):
        return Path(os.environ[metrics.FOLDER])
    if "gunicorn.arbiter" not in sys.modules:
        return None
    arbiter = os.getppid()
    started = Path(f"/proc/{arbiter}/stat").read_text().rpartition(")")[2].split()[19]
    folder = Path(tempfile.gettempdir()) / f"delegation-vault-metrics-{arbiter}-{started}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:  # a sibling worker made it; never a folder or link someone else made
        made = folder.lstat()
        if not stat.S_ISDIR(made.st_mode) or made.st_uid != os.getuid() or made.st_mode & 0o077:
            raise RuntimeError(f"{folder} is not this service's folder") from None
    return folder


def _post_fork(_server: Any, _worker: Any) -> None:
    """Traces, when an OTLP endpoint is set: one tracer provider and export thread per worker."""
    from vault import tracing

    tracing.start()


def _worker_exit(_server: Any, worker: Any) -> None:
    """The worker's waiting spans exported, and its rejections not yet counted written, before
    it goes."""
    from vault import tracing

    tracing.stop()
    runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("vault")
    if runtime is not None:
        runtime.rejections.close()


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
    metrics.count_in(metrics_folder())  # before the fork, whatever counted in this process
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
