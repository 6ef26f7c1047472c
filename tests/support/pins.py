"""Fail when a dependency in pyproject.toml is not held within a compatible range.

Every requirement must name both a floor and a ceiling (``>=x,<y``), ``~=`` or ``==``, so a new
major release never arrives unreviewed. Usage: ``python tests/support/pins.py pyproject.toml``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement


def unbounded(requirement: str) -> str | None:
    """Return why ``requirement`` is not pinned to a compatible range, or None when it is."""
    specifiers = {spec.operator for spec in Requirement(requirement).specifier}
    if specifiers & {"==", "~=", "==="}:
        return None
    if not specifiers & {">=", ">"}:
        return "no lower bound"
    if not specifiers & {"<", "<="}:
        return "no upper bound"
    return None


def requirements(pyproject: dict[str, object]) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    found = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        found.extend(extra)
    return found


def main(path: str) -> int:
    problems = [
        f"{req}: {why}"
        for req in requirements(tomllib.loads(Path(path).read_text()))
        if (why := unbounded(req))
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
