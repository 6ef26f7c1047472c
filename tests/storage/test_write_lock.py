"""SQLite writers queue on a file lock shared by every process using the database file."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from vault import migrate
from vault.db import make_engine, make_sessionmaker, write_lock, writing


def test_a_writer_waits_while_another_process_holds_the_database_write_lock(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vault.db'}")
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    done = threading.Event()

    def write() -> None:
        with sessions() as session, writing(session):
            session.execute(text("CREATE TABLE touched (x INTEGER)"))
        done.set()

    # Another open file description stands for another process: flock locks conflict between them.
    holder = os.open(tmp_path / "vault.db-writer.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not done.wait(0.5), "the writer did not wait for the lock holder"
    finally:
        os.close(holder)
    writer.join(10)
    assert done.is_set()
    engine.dispose()


def test_the_lock_is_reentrant_and_released_with_the_outermost_exit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vault.db'}")
    lock_file = tmp_path / "vault.db-writer.lock"
    with make_sessionmaker(engine)() as session, write_lock(session), write_lock(session):
        probe = os.open(lock_file, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(probe)
    engine.dispose()
