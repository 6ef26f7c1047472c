"""The README's quick start, run as written: its commands are read from the section "Quick start: a
token in three commands" (its fenced blocks), not copied here.

Two substitutions, and only these: the install (``python3 -m venv .venv && .venv/bin/pip install
-e .``) is not run again, since this suite runs from that install: the temporary folder that stands
for the checkout gets a ``.venv`` link to it, so ``.venv/bin/...`` are the installed entry points;
and the ports, since the README's defaults (8000 for the service, 8100 for the sandbox) may be taken
on a machine that runs tests: ``PORT`` says the service's (as the README's configuration table
allows; the sandbox reads it too), ``--bind`` and ``--sandbox`` the sandbox's. The instance
folder (database and development key) defaults to the installed checkout's, so ``DV_INSTANCE_PATH``
puts it in the temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import service
from tests.support.ports import free_port

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Quick start: a token in three commands"
INSTALL = ("python3 -m venv .venv", ".venv/bin/pip install -e .")
# The contract's metric families (CONTRACT "Operator surfaces", GET /metrics).
CONTRACT_FAMILIES = {
    "dv_callbacks_total", "dv_token_requests_total", "dv_upstream_latency_seconds",
    "dv_upstream_errors_total", "dv_upstream_circuit_state", "dv_tenants_failing",
    "dv_http_request_duration_seconds", "dv_single_flight_waits_total", "dv_build_info",
}  # fmt: skip


def quick_start_blocks(readme: str) -> list[list[tuple[str, str]]]:
    """Each fenced block of the section: its commands (continuation lines joined), each with the
    comment written after it, on its line or on the lines below it."""
    lines = iter(readme.splitlines())
    for line in lines:
        if re.fullmatch(rf"#+ {re.escape(SECTION)}\s*", line):
            break
    else:
        raise AssertionError(f"README: no section {SECTION!r}")
    blocks: list[list[str]] = []
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
            if fenced:
                blocks.append([])
        elif fenced:
            blocks[-1].append(line)
        elif line.startswith("#"):  # the next heading (a '#' inside a block is a comment)
            break
    return [_commands("\n".join(block)) for block in blocks]


def _commands(block: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", "", block)
    commands: list[tuple[str, str]] = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#") and commands:  # what the command above prints, say
            command, comment = commands[-1]
            commands[-1] = (command, f"{comment} {line.lstrip('# ')}".strip())
        elif line.strip() and not line.lstrip().startswith("#"):
            command, _, comment = line.partition("  #")
            commands.append((command.strip(), comment.strip()))
    return commands


def serve_command(first: str) -> str:
    """Command 1 less the install that made this suite's environment."""
    *install, serve = [part.strip() for part in first.split("&&")]
    assert tuple(install) == INSTALL, install
    return serve


@contextlib.contextmanager
def started(command: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[Path]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield log
    finally:
        service.stop(process)


def printed(log: Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := re.search(pattern, log.read_text(errors="replace")):
            return found
        time.sleep(0.1)
    raise AssertionError(f"{log.name} did not print {pattern!r}:\n{log.read_text()}")


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_the_readme_quick_start_gives_a_token_and_every_sandbox_step_works(
    tmp_path: Path,
) -> None:
    started_at = time.monotonic()
    first, then = quick_start_blocks(README.read_text())
    (serve, _), (sandbox, _), (curl, expected) = first
    assert curl.startswith("curl ") and '"source": "upstream"' in expected
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    port, sandbox_port = free_port(), free_port()
    # The instance folder defaults to the checkout's, which is this suite's: the folder standing
    # for the checkout holds it instead.
    env = service.readme_env({"PORT": str(port), "DV_INSTANCE_PATH": str(checkout / "instance")})
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    with contextlib.ExitStack() as stack:
        serve_log = stack.enter_context(
            started(serve_command(serve), checkout, env, tmp_path / "serve.log")
        )
        printed(serve_log, r"listening on")  # then the second shell
        sb_log = stack.enter_context(
            started(
                f"{sandbox} --bind 127.0.0.1:{sandbox_port}", checkout, env, tmp_path / "sb.log"
            )
        )
        pasted = printed(sb_log, r"(curl -sS -X POST \S+/internal/v1/token .*)\n").group(1)
        assert _shape(pasted) == _shape(curl), (pasted, curl)  # the README shows what it prints

        def token() -> dict[str, object]:
            done = run(pasted, checkout, env)
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout))

        assert token()["source"] == "upstream" and token()["source"] == "cache"
        for command, effect in then:
            sent = run(f"{command} --sandbox {sandbox_url}", checkout, env)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            answer = token()
            refused = re.search(r"(\d{3}) ([a-z_]+)", effect)  # "token requests: 409 ..."
            if refused:
                assert answer.get("error") == refused.group(2), (command, answer)
            else:
                assert "access_token" in answer, (command, answer)
            if command.endswith(" delegation"):  # another delegated user: cached tokens go
                assert answer["source"] == "upstream"
        created = run(".venv/bin/delegation-vault keys create ops --role operator", checkout, env)
        assert created.returncode == 0, created.stderr
        operator = created.stdout.strip()
        scraped = httpx.get(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {operator}"}
        )
    families = {
        sample.name.removesuffix("_count").removesuffix("_bucket").removesuffix("_sum")
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    assert not CONTRACT_FAMILIES - families, sorted(families)
    print(f"\nquick start: {time.monotonic() - started_at:.1f} s; /metrics: {sorted(families)}")


def _shape(curl: str) -> str:
    """A curl command less what differs from run to run: the key and the port."""
    return re.sub(r"dvk_[\w.-]+", "dvk_...", re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", curl))
