"""The raw bytes a database keeps on disk, to prove a secret is not among them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import Engine, text

from vault.stalls import WAIT_LIMIT


def database_bytes(engine: Engine) -> bytes:
    """SQLite's file with its journal and WAL, or PostgreSQL's data files after a checkpoint."""
    if engine.dialect.name == "sqlite":
        database = Path(engine.url.database or "")
        files = database.parent.glob(database.name + "*")  # not the -locks directory
        return b"".join(p.read_bytes() for p in files if p.is_file())
    with engine.connect() as conn:
        # A checkpoint writes every dirty page of the shared server: on a busy machine that may
        # take longer than DV_DB_TIMEOUT, which bounds requests, not this look at the disk.
        conn.info[WAIT_LIMIT] = 300.0
        conn.execute(text("SET statement_timeout = 0"))
        conn.execute(text("CHECKPOINT"))
        conn.execute(text("RESET statement_timeout"))
        conn.info.pop(WAIT_LIMIT, None)
        data_dir = Path(conn.execute(text("SHOW data_directory")).scalar_one())
    files = subprocess.run(
        ["find", str(data_dir / "base"), str(data_dir / "pg_wal"), "-type", "f"],
        capture_output=True,
        text=True,
        check=True,
    )
    return b"".join(Path(p).read_bytes() for p in files.stdout.split())
