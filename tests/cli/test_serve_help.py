"""``serve --help`` says which settings it runs with: development defaults unless DV_ENV says
production."""

from __future__ import annotations

from click.testing import CliRunner

from app.cli import cli


def test_serve_help_says_development_defaults_unless_dv_env_is_production() -> None:
    shown = CliRunner().invoke(cli, ["serve", "--help"])
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    assert "production settings" not in text
    assert "DV_ENV=production" in text and "development" in text
