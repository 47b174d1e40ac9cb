import os
import subprocess
import sys

import grpc
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import GRELAY, Backend, Grelay, free_port, simple_config, stop, wait_port  # noqa: E402

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
def raw_backend():
    """tests/peers/h2_raw_server.py: a backend that misbehaves on request
    (resets, HTTP errors, GOAWAYs, Hold) and reports what it saw."""
    b = Backend("raw", raw=True)
    yield b
    b.stop()


@pytest.fixture
def proxy(backends, grelay_factory):
    """grelay with 2 workers in front of the three shared backends, round robin."""
    port = free_port()
    return grelay_factory(simple_config(port, [b.addr for b in backends], workers=2), port)


@pytest.fixture
def channel(proxy):
    with grpc.insecure_channel(proxy.addr, options=CHANNEL_OPTS) as ch:
        yield ch


@pytest.fixture
def echo():
    """The bench's C echo backend (bench/backend/echo_backend, built next to
    the grelay under test) on a free loopback port: its address."""
    port = free_port()
    proc = subprocess.Popen([os.path.join(os.path.dirname(GRELAY), "echo_backend"), "127.0.0.1", str(port)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        wait_port(port, proc)
        yield "127.0.0.1:%d" % port
    finally:
        stop(proc)
