"""What every command shares: the root group's error handling, opening the vault, reading
secrets, printing tables."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault import migrate
from vault.clock import iso
from vault.db import writing
from vault.errors import OperationalError, VaultError
from vault.runtime import Runtime, ensure_key_check, migrations_problem
from vault.settings import Settings


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class Commands(click.Group):
    """Turns expected failures into one line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VaultError as exc:
            fail(exc.reason.replace("_", " "))
        except OperationalError as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            # Never the exception text: it can hold the connection string or bound values.
            fail(f"database error ({type(exc).__name__}); is DATABASE_URL right and reachable?")


def open_runtime(settings: Settings | None = None) -> Runtime:
    """The runtime for a command. In development, a missing key and database are created."""
    settings = settings or Settings.from_env()
    runtime = Runtime.build(settings, create_key=not settings.production)
    problem = migrations_problem(runtime.engine)
    if problem and settings.production:
        raise OperationalError(problem)
    if problem:
        fresh = migrate.current_revision(runtime.engine) is None
        migrate.upgrade(runtime.engine)
        note(f"{'created' if fresh else 'upgraded'} the database ({_where(settings)})")
    ensure_key_check(runtime)
    return runtime


def _where(settings: Settings) -> str:
    url = settings.database_url
    return url.split("///", 1)[1] if url.startswith("sqlite:///") else "DATABASE_URL"


@contextmanager
def session_for(write: bool = False) -> Iterator[tuple[Runtime, Session]]:
    runtime = open_runtime()
    try:
        with runtime.session() as session:
            if write:
                with writing(session):
                    yield runtime, session
            else:
                yield runtime, session
    finally:
        runtime.engine.dispose()


def note(message: str) -> None:
    click.echo(message, err=True)


def read_secrets(*names: str) -> list[str]:
    """One secret per line from standard input, or hidden prompts on a terminal."""
    if sys.stdin.isatty():
        return [getpass.getpass(f"{name}: ") for name in names]
    values = []
    for name in names:
        line = sys.stdin.readline()
        if not line.strip():
            fail(f"expected the {name} on line {len(values) + 1} of standard input")
        values.append(line.rstrip("\r\n"))
    return values


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    for row in [list(headers), *text]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def when(value: dt.datetime | None) -> str | None:
    return iso(value.replace(microsecond=0)) if value else None
