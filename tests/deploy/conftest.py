"""The image, built once per test session for every deployment test that runs a container."""

from __future__ import annotations

import sys

import pytest

from tests.support import podman


@pytest.fixture(scope="session")
def containers(tmp_path_factory: pytest.TempPathFactory) -> podman.Podman:
    if absent := podman.missing():
        pytest.skip(f"{', '.join(absent)} not installed (.ci/run installs them)")
    return podman.Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def image(containers: podman.Podman) -> str:
    took = podman.test_images(containers)
    print(f"image {podman.IMAGE} built in {took:.0f} s", file=sys.stderr)
    return podman.IMAGE
