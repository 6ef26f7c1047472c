"""The ``delegation-vault`` command: parse, call vault, print. Secrets come from stdin, never argv.

Exit codes: 0 success, 1 operational failure (one line on standard error), 2 usage error.
One module per command group; this one builds the root group from them.
"""

from __future__ import annotations

import click

from app.cli.apps import apps_group
from app.cli.common import Commands
from app.cli.credentials import apps_test
from app.cli.crypto import crypto_group
from app.cli.db import db
from app.cli.delegations import delegations_group
from app.cli.identities import identities_group
from app.cli.issuers import issuers_group
from app.cli.keys import keys_group
from app.cli.sandbox import sandbox
from app.cli.serve import serve
from app.cli.sign import sign


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="delegation-vault", prog_name="delegation-vault")
def cli() -> None:
    """Delegation Vault: Seismic delegations, kept encrypted, exchanged for access tokens."""


apps_group.add_command(apps_test)
for command in (
    serve, db, apps_group, keys_group, issuers_group, identities_group, delegations_group,
    crypto_group, sign, sandbox,
):  # fmt: skip
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="delegation-vault")
