import os
import sys

import grpc
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Backend, Grelay, free_port, simple_config  # noqa: E402

MAX_MSG = 16 * 1024 * 1024
CHANNEL_OPTS = [("grpc.max_receive_message_length", MAX_MSG), ("grpc.max_send_message_length", MAX_MSG)]


@pytest.fixture(scope="session")
def backends():
    """Three real gRPC backends shared by the tests that only read from them."""
    started = []
    try:
        for i in range(3):
            started.append(Backend("b%d" % (i + 1)))
        yield started
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def grelay_factory():
    running = []

    def start(config, port=None, preexec_fn=None, env=None, **kw):
        g = Grelay(config, port, preexec_fn, env, **kw)
        running.append(g)
        return g

    start.port = free_port
    yield start
    errors = []
    for g in running:
        try:
            g.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def proxy(backends, grelay_factory):
    """grelay with 2 workers in front of the three shared backends, round robin."""
    port = free_port()
    return grelay_factory(simple_config(port, [b.addr for b in backends], workers=2), port)


@pytest.fixture
def channel(proxy):
    with grpc.insecure_channel(proxy.addr, options=CHANNEL_OPTS) as ch:
        yield ch
