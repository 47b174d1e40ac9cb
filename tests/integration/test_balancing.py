"""Per-call balancing: one client connection spreads over all endpoints."""
import collections
import json

import grpc

from harness import free_port, simple_config


def spread(g, n):
    counts = collections.Counter()
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        for i in range(n):
            _, c = call.with_call(b"%d" % i, timeout=10)
            counts[dict(c.initial_metadata())["x-backend"]] += 1
    return counts


def spread_with(grelay_factory, endpoints, policy, n=300):
    """grelay with this policy in front of endpoints; the spread of n calls on one connection."""
    port = free_port()
    return spread(grelay_factory(simple_config(port, endpoints, policy), port), n)


def test_round_robin_spreads_one_connection_evenly(backends, grelay_factory):
    counts = spread_with(grelay_factory, [b.addr for b in backends], "round_robin")
    assert counts == {"b1": 100, "b2": 100, "b3": 100}


def test_round_robin_honours_weights_exactly(backends, grelay_factory):
    eps = [(backends[0].addr, 1), (backends[1].addr, 2), (backends[2].addr, 3)]
    assert spread_with(grelay_factory, eps, "round_robin") == {"b1": 50, "b2": 100, "b3": 150}


def test_random_reaches_every_endpoint(backends, grelay_factory):
    counts = spread_with(grelay_factory, [b.addr for b in backends], "random")
    # Binomial(300, 1/3): mean 100, sd 8.2. Below 50 is ~6 sd away.
    assert set(counts) == {"b1", "b2", "b3"}
    assert min(counts.values()) >= 50, counts


def test_random_honours_weights(backends, grelay_factory):
    eps = [(backends[0].addr, 1), (backends[1].addr, 1), (backends[2].addr, 8)]
    counts = spread_with(grelay_factory, eps, "random")
    # b3 expects 240 (sd 6.9); an unweighted pick would give it 100.
    assert counts["b3"] >= 180, counts


def test_least_request_reaches_every_endpoint(backends, grelay_factory):
    counts = spread_with(grelay_factory, [b.addr for b in backends], "least_request")
    assert set(counts) == {"b1", "b2", "b3"}
    assert min(counts.values()) >= 50, counts


def test_least_request_avoids_the_busy_endpoint(backends, grelay_factory):
    """One call is held open on some backend; with the others idle, the power
    of two choices never picks the busy one (round robin would, a third of
    the time)."""
    port = free_port()
    g = grelay_factory(simple_config(port, [b.addr for b in backends], "least_request"), port)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_stream("/test.Echo/ServerStream")(
            json.dumps({"count": 2, "size": 8, "hold": True, "id": "lr-held"}).encode(), timeout=30)
        next(held)
        busy = dict(held.initial_metadata())["x-backend"]
        call = ch.unary_unary("/test.Echo/Unary")
        counts = collections.Counter()
        for i in range(30):
            _, c = call.with_call(b"%d" % i, timeout=10)
            counts[dict(c.initial_metadata())["x-backend"]] += 1
        held.cancel()
    assert counts[busy] == 0, (busy, counts)
    assert sum(counts.values()) == 30
