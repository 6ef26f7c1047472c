"""Configuration from the environment, and the boundary between the web layer and the domain."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vault.errors import ConfigError
from vault.settings import Settings


def test_defaults_are_the_contracts() -> None:
    settings = Settings.from_env({})
    # sqlite:///instance/vault.db: vault.db in the instance folder (the checkout's instance/).
    assert settings.database_url == f"sqlite:///{settings.instance_path / 'vault.db'}"
    assert settings.instance_path.name == "instance" and settings.instance_path.is_absolute()
    assert (settings.webhook_max_age, settings.webhook_max_skew) == (120, 60)
    assert (settings.token_refresh_margin, settings.token_default_ttl) == (300, 600)
    assert (settings.upstream_max_attempts, settings.upstream_timeout) == (3, 5.0)
    assert settings.port == 8000 and not settings.production and settings.log_format == "text"


def test_production_logs_json_by_default() -> None:
    assert Settings.from_env({"DV_ENV": "production"}).log_format == "json"


@pytest.mark.parametrize("scheme", ["postgres://", "postgresql://"])
def test_postgres_urls_are_read_as_postgresql_with_psycopg(scheme: str) -> None:
    url = Settings.from_env({"DATABASE_URL": f"{scheme}u:p@db:5432/vault"}).database_url
    assert url == "postgresql+psycopg://u:p@db:5432/vault"


@pytest.mark.parametrize(
    "environ",
    [
        {"DV_ENV": "staging"},
        {"DV_WEBHOOK_MAX_AGE": "two minutes"},
        {"DV_UPSTREAM_MAX_ATTEMPTS": "0"},
        {"DV_ENV": "production", "DV_ALLOW_HTTP_TOKEN_URLS": "1"},
        {"DV_LOG_FORMAT": "xml"},
        {"PORT": "70000"},
    ],
)
def test_bad_configuration_is_a_clear_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(environ)


def test_the_domain_never_imports_flask() -> None:
    code = (
        "import sys, pkgutil, importlib, vault\n"
        "for m in pkgutil.walk_packages(vault.__path__, 'vault.'):\n"
        "    if '.migrations' not in m.name: importlib.import_module(m.name)\n"
        "assert 'flask' not in sys.modules, 'vault imported flask'\n"
        "assert 'werkzeug' not in sys.modules, 'vault imported werkzeug'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
