"""Debian's nginx running deploy/nginx/delegation-vault.conf on loopback, inside a temporary folder.

The shipped file is used as it is, but for what a machine's install decides: the ports it
listens on and forwards to, and the certificate paths. Each of those is replaced exactly once,
so a change to the file that a test would not see fails here instead. nginx's pid, logs and
temporary files stay in the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.tls import Certificates

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "delegation-vault.conf"


def binary() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None
    )


@dataclass(frozen=True)
class Proxy:
    https: int
    http: int
    folder: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https}"

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")


def render(upstream: int, https: int, http: int, certs: Certificates) -> str:
    text = SHIPPED.read_text()
    for old, new in {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
        "listen [::]:443 ssl;": "",  # loopback IPv4 only: the test machine may have no IPv6
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen [::]:80;": "",
        "/etc/ssl/delegation-vault/fullchain.pem": str(certs.cert_file),
        "/etc/ssl/delegation-vault/privkey.pem": str(certs.key_file),
    }.items():
        if text.count(old) != 1:
            raise AssertionError(f"{SHIPPED.name}: expected {old!r} exactly once")
        text = text.replace(old, new)
    return text


def main_config(folder: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf would be, with every path inside ``folder``."""
    # As root, nginx's workers would run as nobody, who cannot enter pytest's private folders.
    user = "user root;" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
  access_log {folder / "access.log"};
{temp}
  include {site};
}}
"""


def configure(folder: Path, upstream: int, https: int, http: int, certs: Certificates) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    site = folder / "delegation-vault.conf"
    site.write_text(render(upstream, https, http, certs))
    conf = folder / "nginx.conf"
    conf.write_text(main_config(folder, site))
    return conf


def command(conf: Path, *args: str) -> list[str]:
    found = binary()
    assert found is not None
    folder = conf.parent
    return [found, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf), *args]


@contextlib.contextmanager
def running(conf: Path, https: int, http: int) -> Iterator[Proxy]:
    process = subprocess.Popen(command(conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(https, process)
        yield Proxy(https, http, conf.parent)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight, then exit
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"nginx exited with {process.returncode}: {err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nginx did not listen on {port} within {timeout} s")
