"""Render the status page of a demo vault in Debian's Chromium and save it as docs/status.png.

python -m tests.support.screenshot [OUT]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from app import create_app
from tests.support import demo, live_server
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from vault import migrate
from vault.db import make_engine
from vault.keyring.crypto import parse_keyring
from vault.keyring.entries import new_key_entry
from vault.runtime import Runtime, ensure_key_check
from vault.settings import Settings


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        runtime = Runtime.build(
            Settings(database_url=url, instance_path=Path(tmp)),
            keyring=parse_keyring([new_key_entry("k2026a")]),
            engine=engine,
        )
        ensure_key_check(runtime)
        key = demo.seed(runtime, bulk=46)
        with live_server.serving(create_app(runtime=runtime)) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(
                http_credentials={"username": "ops", "password": key},
                viewport={"width": 1280, "height": 900},
            )
            page.goto(f"{base}/status")
            page.screenshot(path=str(out), full_page=False)
            browser.close()
        runtime.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status.png"))
