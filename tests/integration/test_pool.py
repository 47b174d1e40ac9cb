"""Upstream pools: streams share connections up to the limit, new connections
open when all are full, and past max_connections calls wait in a bounded line."""
import json

import grpc
import pytest

from harness import Backend, concurrent_calls, free_port, simple_config


@pytest.fixture
def solo():
    b = Backend("solo")
    yield b
    b.stop()


def test_one_upstream_connection_carries_many_streams(solo, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [solo.addr]), port)
    concurrent_calls(g.addr, 150, "many")
    assert len(solo.events()["peers"]) == 1


def test_full_connections_make_the_pool_open_more(solo, grelay_factory):
    port = free_port()
    g = grelay_factory(simple_config(port, [solo.addr], cluster_extra={"max_streams_per_connection": 10}), port)
    concurrent_calls(g.addr, 40, "forty")
    assert len(solo.events()["peers"]) == 4


def test_calls_wait_in_line_for_a_free_slot(solo, grelay_factory):
    port = free_port()
    extra = {"max_connections": 1, "max_streams_per_connection": 2}
    g = grelay_factory(simple_config(port, [solo.addr], cluster_extra=extra), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        futs = [call.future(b"%d" % i, timeout=30) for i in range(30)]
        assert [f.result() for f in futs] == [b"%d" % i for i in range(30)]
    assert len(solo.events()["peers"]) == 1


def test_a_full_line_answers_unavailable_and_the_line_drains(solo, grelay_factory):
    port = free_port()
    extra = {"max_connections": 1, "max_streams_per_connection": 1, "max_pending": 2}
    g = grelay_factory(simple_config(port, [solo.addr], cluster_extra=extra), port)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "line"}).encode(), timeout=30)
        next(held)  # holds the only stream slot
        call = ch.unary_unary("/test.Echo/Unary")
        queued = [call.future(b"q%d" % i, timeout=30) for i in range(2)]
        with pytest.raises(grpc.RpcError) as e:
            call(b"overflow", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "too many calls waiting" in e.value.details()
        assert not any(f.done() for f in queued)
        held.cancel()
        assert [f.result() for f in queued] == [b"q0", b"q1"]
