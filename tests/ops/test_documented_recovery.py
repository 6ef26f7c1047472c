"""The backup and restore procedures of docs/recovery.md, run exactly as written (each block marked
``procedure:``) against a real SQLite file and a real PostgreSQL cluster; the restored database
then serves a token, with the keyring it was sealed with."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import postgres, service
from tests.support.oauth_server import TokenServer
from tests.support.seeded import Seeded, seed
from vault import migrate
from vault.db import make_engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "recovery.md"
TOKEN = {"app": "zendesk", "tenant": "intdev2"}
_roles = itertools.count()


def procedure(name: str) -> str:
    """The shell block that follows ``<!-- procedure: name -->`` in the page."""
    found = re.search(
        rf"<!-- procedure: {re.escape(name)} -->\n```sh\n(.*?)```", DOC.read_text(), re.DOTALL
    )
    assert found, f"docs/recovery.md has no procedure {name!r}"
    return found.group(1)


def run(name: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the documented block with ``sh -e``, its variables set as the page says to set them."""
    done = subprocess.run(
        ["sh", "-e", "-c", procedure(name)], env={**os.environ, **variables},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (name, done.stdout, done.stderr)
    return done


def serves_a_token(seeded: Seeded, database_url: str, workdir: Path) -> None:
    env = {**seeded.env, "DATABASE_URL": database_url}
    with service.running(env, workdir, workers=1) as svc:
        ready = httpx.get(f"{svc.url}/readyz", timeout=10)
        token = httpx.post(f"{svc.url}/internal/v1/token", json=TOKEN, timeout=30,
                           headers={"Authorization": f"Bearer {seeded.service_key}"})  # fmt: skip
    assert ready.status_code == 200, ready.text
    assert token.status_code == 200, token.text


@pytest.mark.slow
@pytest.mark.parametrize("backup", ["sqlite-backup", "sqlite-backup-python"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_documented_sqlite_backup_taken_while_serving_restores_and_serves(
    backup: str, database_url: str, tmp_path: Path, oauth: TokenServer
) -> None:
    if backup == "sqlite-backup" and shutil.which("sqlite3") is None:
        pytest.fail("the sqlite3 shell is needed (.ci/run installs it)")
    seeded = seed(database_url, tmp_path, oauth)
    live = Path(database_url.removeprefix("sqlite:///"))
    copy = tmp_path / "backups" / "vault.db"
    copy.parent.mkdir()
    with service.running(seeded.env, tmp_path, workers=1):  # the backup is taken while serving
        done = run(backup, DB=str(live), BACKUP=str(copy))
    assert copy.stat().st_mode & 0o077 == 0, "the copy is readable by its owner alone"
    if backup == "sqlite-backup":
        assert done.stdout.strip() == "ok"
    restored = tmp_path / "restored" / "vault.db"
    restored.parent.mkdir()
    (restored.parent / "vault.db-wal").write_bytes(b"a log left by another database")
    run("sqlite-restore", DB=str(restored), BACKUP=str(copy))
    assert not (restored.parent / "vault.db-wal").exists()
    serves_a_token(seeded, f"sqlite:///{restored}", tmp_path)


@pytest.mark.slow
def test_the_documented_postgresql_backup_restores_into_a_new_database_that_serves(
    pg_server: postgres.PostgresServer, tmp_path: Path, oauth: TokenServer
) -> None:
    role = f"dv_service_{os.getpid()}_{next(_roles)}"
    source, target = f"{role}_db", f"{role}_restored"
    pg_server.psql_execute(f"CREATE ROLE {role} LOGIN")
    pg_server.psql_execute(f"CREATE DATABASE {source} OWNER {role}")
    as_service = f"postgresql+psycopg://{role}@127.0.0.1:{pg_server.port}"
    engine = make_engine(f"{as_service}/{source}")
    migrate.upgrade(engine)  # as the service's role, which then owns every object
    engine.dispose()
    seeded = seed(f"{as_service}/{source}", tmp_path, oauth)
    dump = tmp_path / "vault.dump"
    where = f"host=127.0.0.1 port={pg_server.port}"
    variables = {
        "SERVICE": f"{where} user={role}", "ADMIN": f"{where} user=postgres", "DB_ROLE": role,
        "SOURCE_DB": source, "TARGET_DB": target, "DUMP": str(dump),
    }  # fmt: skip
    try:
        run("postgresql-backup", **variables)
        assert dump.stat().st_mode & 0o077 == 0
        run("postgresql-restore", **variables)
        serves_a_token(seeded, f"{as_service}/{target}", tmp_path)
    finally:
        for database in (target, source):
            pg_server.psql_execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        pg_server.psql_execute(f"DROP ROLE IF EXISTS {role}")
