"""Retries: transparent ones when nothing reached the application, configured
ones (retry_policy) on chosen statuses, never after the client saw a response
and never past the deadline."""
import collections
import json

import grpc
import pytest

from harness import Backend, free_port, simple_config


def config(port, endpoints, retry=None, **cluster_extra):
    route = {"match": {"prefix": "/"}, "cluster": "backend"}
    if retry:
        route["retry_policy"] = retry
    return simple_config(port, endpoints, routes=[route], cluster_extra=cluster_extra or None)


def calls(g, n, metadata=(), timeout=10):
    """Makes n unary calls; returns (backends that answered, failures)."""
    served, failed = collections.Counter(), []
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        for i in range(n):
            try:
                _, c = call.with_call(b"%d" % i, metadata=list(metadata), timeout=timeout)
                served[dict(c.initial_metadata())["x-backend"]] += 1
            except grpc.RpcError as e:
                failed.append((e.code(), e.details()))
    return served, failed


def test_a_stopped_endpoint_costs_no_failed_calls(backends, grelay_factory):
    dead = Backend("dead")
    dead.stop()  # its port now refuses connections
    port = free_port()
    g = grelay_factory(config(port, [backends[0].addr, dead.addr, backends[1].addr]), port)
    served, failed = calls(g, 60)
    assert failed == []
    assert set(served) == {"b1", "b2"} and sum(served.values()) == 60


def test_a_backend_killed_mid_stream_fails_that_call_only(backends, grelay_factory):
    victim = Backend("victim")
    port = free_port()
    g = grelay_factory(config(port, [victim.addr, backends[0].addr, backends[1].addr]), port)
    with grpc.insecure_channel(g.addr) as ch:
        held = None
        for i in range(3):  # round robin: one of three lands on the victim
            it = ch.unary_stream("/test.Echo/ServerStream")(
                json.dumps({"count": 2, "size": 8, "hold": True, "id": "k%d" % i}).encode(), timeout=30)
            next(it)
            if dict(it.initial_metadata())["x-backend"] == "victim":
                held = it
            else:
                it.cancel()
        assert held is not None
        victim.proc.kill()
        victim.proc.wait(10)
        with pytest.raises(grpc.RpcError) as e:
            list(held)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    served, failed = calls(g, 30)
    assert failed == []
    assert set(served) == {"b1", "b2"}


def test_configured_retry_on_unavailable_succeeds_on_the_second_endpoint(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [backends[0].addr, backends[1].addr],
                              retry={"retry_on": ["unavailable"], "num_retries": 1}), port)
    served, failed = calls(g, 10, [("x-fail-on", "b1")])
    assert failed == []
    assert served == {"b2": 10}


def test_without_retry_policy_the_failure_reaches_the_client(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [backends[0].addr, backends[1].addr]), port)
    served, failed = calls(g, 10, [("x-fail-on", "b1")])
    assert served == {"b2": 5}
    assert failed == [(grpc.StatusCode.UNAVAILABLE, "b1 is failing on purpose")] * 5


def test_retry_on_only_the_statuses_listed(backends, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [backends[0].addr, backends[1].addr],
                              retry={"retry_on": ["resource_exhausted"], "num_retries": 3}), port)
    served, failed = calls(g, 4, [("x-fail-on", "b1")])
    assert len(failed) == 2 and served == {"b2": 2}


def test_a_late_status_is_retried_up_to_num_retries(backends, grelay_factory):
    """Headers, then UNAVAILABLE with no message between: nothing reached the
    client, so the route retries it (test_late_retry.py has the rest, and the
    case of a message first, never retried); every attempt fails here, so the
    client gets the last one's status after 1 + num_retries attempts."""
    port = free_port()
    g = grelay_factory(config(port, [backends[0].addr, backends[1].addr],
                              retry={"retry_on": ["unavailable"], "num_retries": 2}), port)
    before = backends[0].events()["calls"] + backends[1].events()["calls"]
    with grpc.insecure_channel(g.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Unary")(b"late failure", metadata=[("x-fail-code", "UNAVAILABLE")],
                                                timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert e.value.details() == "late failure"
    assert backends[0].events()["calls"] + backends[1].events()["calls"] == before + 3


def test_retries_never_outlive_the_deadline(backends, grelay_factory):
    """Backoff of up to 10 s against a 1 s deadline: grelay must give up with
    the upstream's status rather than sleep into DEADLINE_EXCEEDED."""
    port = free_port()
    retry = {"retry_on": ["unavailable"], "num_retries": 3,
             "backoff": {"base_interval": "10s", "max_interval": "10s"}}
    g = grelay_factory(config(port, [backends[0].addr, backends[1].addr], retry=retry), port)
    with grpc.insecure_channel(g.addr) as ch:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Unary")(b"x", metadata=[("x-fail-on", "b1,b2")],
                                                    timeout=1)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()


def test_per_try_timeout_moves_the_call_to_another_endpoint(backends, grelay_factory):
    port = free_port()
    retry = {"retry_on": ["unavailable"], "num_retries": 1, "per_try_timeout": "300ms"}
    g = grelay_factory(config(port, [backends[2].addr, backends[1].addr], retry=retry), port)
    served, failed = calls(g, 4, [("x-hold-on", "b3")])
    assert failed == []
    assert served == {"b2": 4}
    assert "hold-on-b3" in backends[2].events()["cancelled"]


def test_per_try_timeout_without_retries_left_is_deadline_exceeded(backends, grelay_factory):
    port = free_port()
    retry = {"retry_on": ["unavailable"], "num_retries": 0, "per_try_timeout": "200ms"}
    g = grelay_factory(config(port, [backends[2].addr], retry=retry), port)
    served, failed = calls(g, 1, [("x-hold-on", "b3")])
    assert failed == [(grpc.StatusCode.DEADLINE_EXCEEDED, "per-try timeout of 200ms exceeded at grelay")]


def raw_call(g, method):
    with grpc.insecure_channel(g.addr) as ch:
        reply, c = ch.unary_unary("/raw.Svc/" + method).with_call(b"payload", timeout=10)
    return reply, dict(c.trailing_metadata())


def test_upstream_goaway_drains_and_new_calls_use_a_new_connection(raw_backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [raw_backend.addr]), port)
    assert raw_call(g, "Ok")[1]["x-conn-id"] == "1"
    reply, trailers = raw_call(g, "Goaway")  # in flight below last-stream-id: finishes
    assert reply == b"payload" and trailers["x-conn-id"] == "1"
    assert raw_call(g, "Ok")[1]["x-conn-id"] == "2"


def test_streams_above_goaway_last_stream_id_are_retried_transparently(raw_backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [raw_backend.addr]), port)
    assert raw_call(g, "Ok")[1]["x-conn-id"] == "1"
    reply, trailers = raw_call(g, "GoawayRefuseOnce")
    assert reply == b"payload" and trailers["x-conn-id"] == "2"


def test_per_try_timeout_does_not_cut_a_stream_that_answered(backends, grelay_factory):
    port = free_port()
    retry = {"retry_on": ["unavailable"], "num_retries": 1, "per_try_timeout": "200ms"}
    g = grelay_factory(config(port, [backends[0].addr], retry=retry), port)
    with grpc.insecure_channel(g.addr) as ch:
        it = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "long-stream"}).encode(), timeout=30)
        next(it)
        # Well past the per-try timeout: the stream is still open.
        import time
        time.sleep(0.6)
        assert "long-stream" not in backends[0].events()["cancelled"]
        it.cancel()
