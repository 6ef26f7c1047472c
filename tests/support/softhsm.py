"""A SoftHSM2 token in a temporary directory, with AES key-encryption keys made on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
TOKEN, PIN, SO_PIN = "dv-test-token", "246810", "13579111"

# Run in a child process, so the test process never holds the library initialized.
_MAKE_KEK = """
import sys, pkcs11
from pkcs11 import KeyType, MechanismFlag
module, token, pin, label = sys.argv[1:5]
lib = pkcs11.lib(module)
with lib.get_token(token_label=token).open(user_pin=pin, rw=True) as session:
    session.generate_key(KeyType.AES, 256, label=label, store=True,
                         capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP)
lib.finalize()
"""


def module() -> str | None:
    return next((path for path in MODULES if Path(path).exists()), None)


def available() -> bool:
    return module() is not None and shutil.which("softhsm2-util") is not None


@dataclass
class SoftHSM:
    root: Path
    module: str

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    def env(self, kek: str = "kek-1", **changes: str) -> dict[str, str]:
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "DV_KEY_WRAPPING": "pkcs11",
            "DV_PKCS11_MODULE": self.module,
            "DV_PKCS11_TOKEN": TOKEN,
            "DV_PKCS11_KEY": kek,
            "DV_PKCS11_PIN": PIN,
            **changes,
        }

    def add_kek(self, label: str) -> None:
        subprocess.run(
            [sys.executable, "-c", _MAKE_KEK, self.module, TOKEN, PIN, label],
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)}, check=True, timeout=60,
        )  # fmt: skip


def make(root: Path) -> SoftHSM:
    """An initialised token labelled TOKEN, its files under ``root``."""
    found = module()
    assert found is not None
    (root / "tokens").mkdir(parents=True)
    hsm = SoftHSM(root, found)
    hsm.conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--so-pin", SO_PIN, "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)}, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return hsm
