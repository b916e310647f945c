"""The reference host for the host tests: one per module, reset before each test."""

import pytest
import requests

from simulators.host.runner import start_in_thread


@pytest.fixture(scope="module")
def host():
    running = start_in_thread("127.0.0.1", 0)
    yield running
    running.stop()


@pytest.fixture
def http(host):
    """A session that never goes through a proxy, reset to the host's seeded state."""
    session = requests.Session()
    session.trust_env = False
    assert session.post(host.url + "/_sim/reset", timeout=5).status_code == 200
    yield session
    session.close()
