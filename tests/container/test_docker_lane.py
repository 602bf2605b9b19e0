"""The Docker lane (tests/container/lane.py) as a test: a real engine and a three-node cluster.

Skipped, with the reason, when no Docker engine can be started here (not root, docker.io not
installable, dockerd refusing to start, no Debian mirror for the base image), or when
FAKECFS_SKIP_DOCKER_LANE=1. It takes about a minute once the base image is cached (the
first run adds debootstrap and the image build: two to three minutes).
"""

from __future__ import annotations

import os

import pytest

from tests.container import lane
from tests.container.dockerd import Skip

pytestmark = [pytest.mark.slow, pytest.mark.mount]


def test_docker_lane(capsys: pytest.CaptureFixture[str]) -> None:
    if os.environ.get("FAKECFS_SKIP_DOCKER_LANE") == "1":
        pytest.skip("FAKECFS_SKIP_DOCKER_LANE=1")
    try:
        timings = lane.run_lane()
    except Skip as exc:
        pytest.skip(f"no Docker engine here: {exc}")
    with capsys.disabled():
        print("\n" + timings.table())
