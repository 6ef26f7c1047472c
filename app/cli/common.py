"""What every command shares: the root group's error handling, opening the vault, reading
secrets, printing tables or JSON."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.exc import OperationalError as OperationalFailure
from sqlalchemy.orm import Session

from vault import migrate
from vault.clock import iso
from vault.db import make_engine, writing
from vault.errors import BadValue, OperationalError, UnknownApp, VaultError
from vault.keyring.crypto import key_check_problem, keyring_source, load_keyring
from vault.runtime import Runtime, ensure_key_check, migrations_problem
from vault.settings import Settings


class UsageFailure(click.ClickException):
    """A bad value of a flag or argument: one line, exit code 2."""

    exit_code = 2


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class Commands(click.Group):
    """Turns expected failures into one line and exit code 1 (2 for bad values), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UnknownApp as exc:
            fail(f"unknown app {exc.slug!r}" if exc.slug is not None else "unknown app")
        except VaultError as exc:
            fail(exc.reason.replace("_", " "))
        except BadValue as exc:
            raise UsageFailure(str(exc)) from None
        except OperationalError as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            fail(database_error(exc))


def database_error(exc: SQLAlchemyError) -> str:
    """One line: the server tried (host and port, never the password) and, for a connection that
    failed, the driver's first line of why. The statement and its bound values are never shown."""
    where = _server()
    # The driver's own exception, not SQLAlchemy's wrapper: that one appends the statement.
    cause = _first_line(str(exc.orig)) if isinstance(exc, OperationalFailure) and exc.orig else ""
    said = f": {cause}" if cause else ""
    return f"database error ({type(exc).__name__}) at {where}{said}; is DATABASE_URL right and reachable?"


def _url() -> URL | None:
    try:
        return make_url(Settings.from_env().database_url)
    except (OperationalError, ArgumentError, ValueError):  # named as DATABASE_URL, unread
        return None


def _server() -> str:
    url = _url()
    if url is None:
        return "DATABASE_URL"
    if url.get_backend_name() == "sqlite":
        return url.database or "sqlite"
    return f"{url.host or 'localhost'}:{url.port or DEFAULT_PORTS.get(url.get_backend_name(), '?')}"


def _first_line(text: str) -> str:
    """The driver's reason, past libpq's 'connection to server at "h", port p failed:' prefix,
    with anything that reads as a URL, and the password, removed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = re.sub(r"^.*?port \d+ failed: ", "", lines[0] if lines else "")
    reason = re.sub(r"\w+://\S+", "(a URL)", reason)
    url = _url()
    if url is not None and url.password:
        reason = reason.replace(str(url.password), "***")
    return reason[:200]


DEFAULT_PORTS = {"postgresql": "5432"}


# -- opening the vault -------------------------------------------------------------------------


def open_runtime(settings: Settings | None = None, *, write: bool = True) -> Runtime:
    """The runtime for a command.

    A command that writes creates, in development, a missing key and database (saying so); a
    read-only command never creates anything and fails with a line saying what is missing.
    """
    settings = settings or Settings.from_env()
    if not write:
        _require_database(settings)
    # An operator's command may read or re-seal every row (history verify, key rotation): its
    # statements are not bound by DV_DB_TIMEOUT, which bounds requests; connecting still is.
    keyring = load_keyring(settings, create=write and not settings.production)
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, bound_statements=False)
    runtime = Runtime.build(settings, keyring=keyring, engine=engine)
    try:
        _prepare(runtime, write)
    except BaseException:
        runtime.engine.dispose()
        raise
    return runtime


def _prepare(runtime: Runtime, write: bool) -> None:
    settings = runtime.settings
    problem = migrations_problem(runtime.engine)
    if problem and (settings.production or not write):
        raise OperationalError(problem)
    if problem:
        fresh = migrate.current_revision(runtime.engine) is None
        migrate.upgrade(runtime.engine, keyring=runtime.keyring)
        note(f"{'created' if fresh else 'upgraded'} the database ({_where(settings)})")
    if write:
        ensure_key_check(runtime)
        return
    with runtime.session() as session:
        wrong = key_check_problem(runtime.keyring, session)
    if wrong:
        raise OperationalError(f"{wrong} (keyring from {keyring_source(settings)})")


def _require_database(settings: Settings) -> None:
    """Refuse before connecting: connecting to a missing SQLite file would create it."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    if not Path(url.database).exists():
        raise OperationalError(
            f"no database at {url.database}; start the service once ('delegation-vault serve') "
            "or run 'delegation-vault db upgrade'"
        )


def _where(settings: Settings) -> str:
    url = settings.database_url
    return url.split("///", 1)[1] if url.startswith("sqlite:///") else "DATABASE_URL"


@contextmanager
def session_for(write: bool = False) -> Iterator[tuple[Runtime, Session]]:
    runtime = open_runtime(write=write)
    try:
        with runtime.session() as session:
            yield runtime, session
    finally:
        runtime.engine.dispose()


@contextmanager
def writing_session() -> Iterator[tuple[Runtime, Session]]:
    """A session inside one write transaction, for commands whose vault call does not own one."""
    with session_for(write=True) as (runtime, session), writing(session):
        yield runtime, session


# -- input -------------------------------------------------------------------------------------


def note(message: str) -> None:
    click.echo(message, err=True)


def read_secrets(*names: str) -> list[str]:
    """One secret per line from standard input, or hidden prompts on a terminal."""
    if sys.stdin.isatty():
        return [getpass.getpass(f"{name}: ") for name in names]
    values: list[str] = []
    for name in names:
        line = sys.stdin.readline()
        if not line.strip():
            fail(f"expected the {name} on line {len(values) + 1} of standard input")
        values.append(line.rstrip("\r\n"))
    return values


class NonEmpty(click.ParamType):  # type: ignore[type-arg]
    """Text that must not be empty: ``--tenant ""`` would otherwise read as "every tenant"."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not str(value).strip():
            self.fail("must not be empty", param, ctx)
        return str(value)


NON_EMPTY = NonEmpty()


# -- output ------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    for row in [list(headers), *text]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def listing(headers: Sequence[str], rows: Iterable[Sequence[object]], as_json: bool) -> None:
    """Rows as a table, or as a JSON array of objects keyed by the headers in snake_case."""
    if not as_json:
        table(headers, rows)
        return
    keys = [_key(h) for h in headers]
    click.echo(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))


def fields(pairs: Sequence[tuple[str, object]], as_json: bool) -> None:
    """One object's fields as a two-column table, or as one JSON object."""
    if as_json:
        click.echo(json.dumps({_key(name): value for name, value in pairs}, indent=2))
    else:
        table(["field", "value"], pairs)


def _key(header: str) -> str:
    return header.replace(" ", "_")


def when(value: dt.datetime | None) -> str | None:
    return iso(value.replace(microsecond=0)) if value else None
