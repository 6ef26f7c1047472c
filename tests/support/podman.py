"""Podman for the deployment tests: the image built once, containers and compose projects that
are always taken down.

What these machines need, measured: podman as root with the ``runc`` runtime, explicit ulimits
(podman's defaults exceed the hard limits here), and no registry: the Debian base is made with
``mmdebstrap`` and imported. The settings live in a containers.conf of the test run's own
(``CONTAINERS_CONF``), so nothing on the machine is changed. Images left between runs: the base,
the product's test image and the PostgreSQL test image, each under a fixed name; a rebuild removes
the image it replaces.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "containers"
BASE = "localhost/delegation-vault-test-base:bookworm"
IMAGE = "localhost/delegation-vault:test"
POSTGRES = "localhost/delegation-vault-test-postgres:15"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""
TOOLS = ("podman", "runc", "mmdebstrap")


def missing() -> list[str]:
    """The tools these tests need that the machine lacks (.ci/run installs them)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def mirror() -> str:
    """The Debian mirror the machine's apt sources name (the base is made from it)."""
    texts = [p.read_text() for p in Path("/etc/apt").glob("sources.list.d/*.sources")]
    for text in texts:
        for block in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            if uris and re.search(r"^Suites:.*\bbookworm\b", block, re.M):
                return uris.group(1)
    listed = Path("/etc/apt/sources.list")
    found = (
        re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\b", listed.read_text(), re.M)
        if listed.exists()
        else None
    )
    return found.group(1) if found else "http://deb.debian.org/debian"


class Podman:
    def __init__(self, folder: Path) -> None:
        conf = folder / "containers.conf"
        conf.write_text(CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.folder = folder

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args], input=stdin, capture_output=True, text=True, env=self.env,
            timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"podman {args[0]} failed ({done.returncode}): {done.stderr}")
        return done

    def image_id(self, name: str) -> str | None:
        found = self.run("image", "inspect", "--format", "{{.Id}}", name, check=False)
        return found.stdout.strip() if found.returncode == 0 else None

    def ensure_base(self) -> None:
        """The Debian base with Python, made once per machine (about half a minute)."""
        if self.image_id(BASE):
            return
        tarball = self.folder / "base.tar"
        made = subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(tarball), mirror()],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        try:
            self.run("import", str(tarball), BASE)
        finally:
            tarball.unlink(missing_ok=True)

    def build(self, tag: str, containerfile: Path, context: Path, base: str) -> float:
        """A real build from nothing (no layer cache), in seconds; the image it replaces goes."""
        before = self.image_id(tag)
        started = time.monotonic()
        self.run(
            "build", "--layers=false", "--force-rm", "--format", "docker", "--network", "host",
            "--build-arg", f"BASE={base}", "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "-t", tag, "-f", str(containerfile), str(context),
        )  # fmt: skip
        took = time.monotonic() - started
        if before and before != self.image_id(tag):
            self.run("rmi", before, check=False)  # untagged by the build: nothing else uses it
        return took

    @contextlib.contextmanager
    def container(self, *args: str) -> Iterator[str]:
        """A detached container (``podman run -d ARGS``) removed on exit, whatever happened."""
        name = f"dv-test-{secrets.token_hex(4)}"
        try:
            self.run("run", "-d", "--name", name, *args)
            yield name
        finally:
            self.run("rm", "--force", "--time", "5", "--volumes", name, check=False)


def test_images(podman: Podman) -> float:
    """The base, and the product's image built from it; the build's seconds."""
    podman.ensure_base()
    return podman.build(IMAGE, ROOT / "deploy" / "container" / "Containerfile", ROOT, BASE)


def postgres_image(podman: Podman) -> None:
    """The PostgreSQL image of the compose tests, built from the base when missing."""
    if not podman.image_id(POSTGRES):
        podman.build(POSTGRES, HERE / "postgres.Containerfile", HERE, BASE)
