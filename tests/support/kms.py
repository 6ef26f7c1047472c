"""A KMS-compatible server on 127.0.0.1 (moto's server mode), and keys made on it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support.ports import free_port

REGION = "eu-west-1"


@dataclass
class Kms:
    endpoint: str

    def env(self, key_id: str, **changes: str) -> dict[str, str]:
        return {
            "DV_KEY_WRAPPING": "aws-kms",
            "DV_KMS_KEY_ID": key_id,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            **changes,
        }

    def client(self) -> Any:
        return boto3.client(
            "kms", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def create_key(self, alias: str | None = None) -> str:
        """A new symmetric key's ARN (and an alias pointing at it when given)."""
        client = self.client()
        arn = str(client.create_key(Description="delegation-vault test KEK")["KeyMetadata"]["Arn"])
        if alias:
            client.create_alias(AliasName=alias, TargetKeyId=arn)
        client.close()
        return arn


@contextlib.contextmanager
def serving() -> Iterator[Kms]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per KMS call on the console
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Kms(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
