"""Every dependency stays within a compatible range: checked on the real pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import pins

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("requirement", "problem"),
    [
        ("flask", "no lower bound"),
        ("flask>=3.1", "no upper bound"),
        ("flask<4", "no lower bound"),
        ("flask>=3.1,<4", None),
        ("psycopg[binary]>=3.2,<4", None),
        ("click~=8.1", None),
        ("gunicorn==23.0.0", None),
    ],
)
def test_ranges_are_judged(requirement: str, problem: str | None) -> None:
    assert pins.unbounded(requirement) == problem


def test_project_dependencies_are_all_within_ranges() -> None:
    assert pins.main(str(ROOT / "pyproject.toml")) == 0
