"""Virtual hosts by :authority; routes by prefix, exact path, service, method and headers."""
import grpc
import pytest

from harness import Backend, free_port


@pytest.fixture
def routed(backends, grelay_factory):
    b1, b2, b3 = backends
    port = free_port()
    cfg = {
        "workers": 1,
        "listeners": [{
            "name": "edge",
            "address": "127.0.0.1:%d" % port,
            "virtual_hosts": [
                {"name": "api", "domains": ["api.example.com"],
                 "routes": [{"match": {"prefix": "/"}, "cluster": "c2"}]},
                {"name": "wild", "domains": ["*.example.com"],
                 "routes": [{"match": {"prefix": "/"}, "cluster": "c3"}]},
                {"name": "default", "domains": ["*"], "routes": [
                    {"match": {"service": "test.Echo", "method": "ServerStream"}, "cluster": "c3"},
                    {"match": {"exact": "/test.Echo/Unary",
                               "headers": [{"name": "x-tenant", "exact": "blue"}]}, "cluster": "c2"},
                    {"match": {"service": "test.Echo",
                               "headers": [{"name": "x-canary", "present": True}]}, "cluster": "c3"},
                    {"match": {"service": "test.Echo"}, "cluster": "c1"},
                ]},
            ],
        }],
        "clusters": [
            {"name": "c1", "endpoints": [{"address": b1.addr}]},
            {"name": "c2", "endpoints": [{"address": b2.addr}]},
            {"name": "c3", "endpoints": [{"address": b3.addr}]},
        ],
    }
    return grelay_factory(cfg, port)


def served_by(addr, path, metadata=(), authority=None):
    opts = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(addr, options=opts) as ch:
        if path.endswith("ServerStream"):
            it = ch.unary_stream(path)(b'{"count": 1}', metadata=list(metadata), timeout=10)
            list(it)
            return dict(it.initial_metadata())["x-backend"]
        _, c = ch.unary_unary(path).with_call(b"x", metadata=list(metadata), timeout=10)
        return dict(c.initial_metadata())["x-backend"]


def test_exact_domain_wins(routed):
    assert served_by(routed.addr, "/test.Echo/Unary", authority="api.example.com") == "b2"
    assert served_by(routed.addr, "/test.Echo/Unary", authority="API.example.com:443") == "b2"


def test_suffix_wildcard_domain(routed):
    assert served_by(routed.addr, "/test.Echo/Unary", authority="www.example.com") == "b3"


def test_catch_all_domain_and_service_route(routed):
    assert served_by(routed.addr, "/test.Echo/Unary", authority="other.org") == "b1"


def test_method_route(routed):
    assert served_by(routed.addr, "/test.Echo/ServerStream") == "b3"


def test_header_exact_match(routed):
    assert served_by(routed.addr, "/test.Echo/Unary", [("x-tenant", "blue")]) == "b2"
    assert served_by(routed.addr, "/test.Echo/Unary", [("x-tenant", "red")]) == "b1"


def test_header_presence_match(routed):
    assert served_by(routed.addr, "/test.Echo/ClientStream".replace("ClientStream", "Unary"),
                     [("x-canary", "")]) == "b3"


def test_unknown_service_is_unimplemented(routed):
    with grpc.insecure_channel(routed.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Other/Unary")(b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
