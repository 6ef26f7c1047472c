"""What a client assertion costs a token request: ``python -m tests.perf.assertions``.

Prints the median time to build one assertion (RS256, ES256, and the RSA key load with the key
validated again, which vault/upstream/client_auth.py skips), each as a ratio of a baseline measured in
the same run: one client_secret_post token request to a loopback token endpoint.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization

from tests.support.client_auth_server import ec_key, pem, rsa_key
from tests.support.oauth_server import serving
from vault.settings import Settings
from vault.upstream.client import TokenRequest, Upstream
from vault.upstream.client_auth import Credential, client_assertion

ROUNDS, PER_ROUND = 7, 40


def median_ms(work: Callable[[], object]) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(PER_ROUND):
            work()
        rounds.append((time.perf_counter() - started) / PER_ROUND * 1000)
    return statistics.median(rounds)


def main() -> None:
    rsa_pem, ec_pem = pem(rsa_key()), pem(ec_key())
    url = "https://acme.okta.com/oauth2/default/v1/token"
    with serving() as server, Upstream(Settings(allow_http_token_urls=True)) as upstream:
        request = TokenRequest(
            server.url, "c", "client_secret_post", "client_credentials", "t", None, "a"
        )
        baseline = median_ms(lambda: upstream.fetch(request, "s3cret", 600))
    cases = {
        "RS256 assertion": lambda: client_assertion("c", url, Credential(rsa_pem), time.time()),
        "ES256 assertion": lambda: client_assertion("c", url, Credential(ec_pem), time.time()),
        "RSA key load with validation": lambda: serialization.load_pem_private_key(
            rsa_pem.encode(), None
        ),
    }
    print(f"{'loopback token request (baseline)':38} {baseline:9.3f} ms")
    for name, work in cases.items():
        took = median_ms(work)
        print(f"{name:38} {took:9.3f} ms  {took / baseline:6.2f} x baseline")


if __name__ == "__main__":
    main()
