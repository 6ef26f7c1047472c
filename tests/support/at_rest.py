"""The raw bytes a database keeps on disk, to prove a secret is not among them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import Engine, text


def database_bytes(engine: Engine) -> bytes:
    """SQLite's file with its journal and WAL, or PostgreSQL's data files after a checkpoint."""
    if engine.dialect.name == "sqlite":
        database = Path(engine.url.database or "")
        files = database.parent.glob(database.name + "*")  # not the -locks directory
        return b"".join(p.read_bytes() for p in files if p.is_file())
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        data_dir = Path(conn.execute(text("SHOW data_directory")).scalar_one())
    files = subprocess.run(
        ["find", str(data_dir / "base"), str(data_dir / "pg_wal"), "-type", "f"],
        capture_output=True,
        text=True,
        check=True,
    )
    return b"".join(Path(p).read_bytes() for p in files.stdout.split())
