"""AWS KMS key wrapping: the data key is encrypted by a KMS key that never leaves KMS.

Region, credentials and endpoint come from the standard AWS settings (``AWS_REGION``,
``AWS_ACCESS_KEY_ID``..., ``AWS_ENDPOINT_URL``). The KEK recorded in an entry is the key ARN KMS
answers with, so moving an alias to a new key leaves older entries opening under their own key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from vault.errors import KeyringError
from vault.settings import Settings

# Bound to every wrapped key: a ciphertext made for anything else does not decrypt as one of ours.
CONTEXT = {"purpose": "delegation-vault keyring"}


def current(settings: Settings) -> str:
    return settings.kms_key_id or ""


@contextlib.contextmanager
def connect(settings: Settings) -> Iterator[Any]:
    """A KMS client that fails fast: start-up should not hang on an unreachable endpoint."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise KeyringError(
            "DV_KEY_WRAPPING=aws-kms needs boto3: pip install 'delegation-vault[aws-kms]'"
        ) from None

    config = Config(
        connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
    )
    try:
        client = boto3.client("kms", config=config)
    except BotoCoreError as exc:
        raise KeyringError(f"AWS KMS: {exc}") from None
    try:
        yield client
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise KeyringError(
            f"AWS KMS refused the request: {code} (DV_KMS_KEY_ID {settings.kms_key_id})"
        ) from None
    except BotoCoreError as exc:
        raise KeyringError(f"AWS KMS unreachable or not configured: {exc}") from None
    finally:
        client.close()


def wrap(client: Any, key_id: str, key: bytes) -> tuple[str, bytes]:
    answer = client.encrypt(KeyId=key_id, Plaintext=key, EncryptionContext=CONTEXT)
    return str(answer["KeyId"]), bytes(answer["CiphertextBlob"])


def unwrap(client: Any, key_id: str, wrapped: bytes) -> bytes:
    answer = client.decrypt(KeyId=key_id, CiphertextBlob=wrapped, EncryptionContext=CONTEXT)
    return bytes(answer["Plaintext"])
