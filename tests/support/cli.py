"""Running the command line in-process, as an operator would, failing on any traceback."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import CliRunner, Result

from app.cli import cli


def invoker(env: dict[str, str]) -> Callable[..., Result]:
    """``run(*args, stdin=None)``: one command with ``env``; expected failures exit, never raise."""

    def invoke(*args: str, stdin: str | None = None) -> Result:
        result = CliRunner().invoke(cli, list(args), input=stdin, env=env)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        return result

    return invoke
