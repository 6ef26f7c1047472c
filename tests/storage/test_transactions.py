"""A use case owns its transactions: reads end before the request waits on a lock or the network."""

from __future__ import annotations

from sqlalchemy import select

from vault.db import reading, writing
from vault.models import App
from vault.runtime import Runtime


def test_a_read_transaction_ends_with_its_block_and_a_write_can_follow(runtime: Runtime) -> None:
    with runtime.session() as session:
        with reading(session):
            assert session.in_transaction()
            session.scalars(select(App)).all()
        assert not session.in_transaction()  # nothing idles in a transaction afterwards
        with writing(session):
            session.scalars(select(App)).all()
        assert not session.in_transaction()


def test_reads_inside_a_callers_transaction_are_part_of_it(runtime: Runtime) -> None:
    with runtime.session() as session, writing(session):
        with reading(session):
            session.scalars(select(App)).all()
        assert session.in_transaction()  # the caller's transaction goes on, and the caller ends it
