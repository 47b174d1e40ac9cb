"""Reload (SIGHUP, watch_config): new calls take the new snapshot, calls in
flight keep theirs, nothing is cut (issue 13, docs/reload.md)."""
import os
import signal
import socket
import ssl
import threading
import time

import grpc
import pytest

from harness import Backend, free_port, simple_config
from test_tls import make_ca, make_cert, read

UNARY = "/test.Echo/Unary"
STREAM = "/test.Echo/ServerStream"


def who(ch, timeout=5):
    """The backend that answers one unary call on channel ch."""
    _, call = ch.unary_unary(UNARY).with_call(b"who", timeout=timeout)
    return dict(call.initial_metadata())["x-backend"]


def reloads_done(g):
    return g.log().count("reload: done")


def reload(g, config=None, done_before=None, signal_it=True):
    """Writes config (if any), sends SIGHUP, waits (bounded) for the reload to finish."""
    n = reloads_done(g) if done_before is None else done_before
    if config is not None:
        g.write_config(config)
    if signal_it:
        g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while reloads_done(g) <= n:
        assert time.monotonic() < deadline, "no reload within 10 s:\n" + g.log()[-3000:]
        assert g.proc.poll() is None, "grelay exited:\n" + g.log()[-3000:]
        time.sleep(0.02)


def listener(name, port, routes, **extra):
    lst = {"name": name, "address": "127.0.0.1:%d" % port,
           "virtual_hosts": [{"name": "default", "domains": ["*"], "routes": routes}]}
    lst.update(extra)
    return lst


@pytest.fixture(scope="module")
def four():
    started = []
    try:
        for name in ("a1", "a2", "b1", "b2"):
            started.append(Backend(name))
        yield {b.name: b for b in started}
    finally:
        for b in started:
            b.stop()


def alternating(port, k, bk):
    """Config k: even ones send every call to cluster main = [a1]; odd ones
    change main's endpoints to [a2] and the route table: unary calls go to
    cluster other = [b1], the rest to main."""
    if k % 2 == 0:
        routes = [{"match": {"prefix": "/test."}, "cluster": "main"}]
        main = [bk["a1"].addr]
    else:
        routes = [{"match": {"path": UNARY}, "cluster": "other"}, {"match": {"prefix": "/test."}, "cluster": "main"}]
        main = [bk["a2"].addr]
    return {"workers": 2, "listeners": [listener("ingress", port, routes)],
            "clusters": [{"name": "main", "endpoints": [{"address": a} for a in main]},
                         {"name": "other", "endpoints": [{"address": bk["b1"].addr}]}]}


def test_twenty_reloads_under_load_fail_no_call(four, grelay_factory):
    port = free_port()
    g = grelay_factory(alternating(port, 0, four), port)
    expect = {0: "a1", 1: "b1"}  # who answers a unary call under config k % 2
    state = {"gen": 0, "stop": False}
    failures, mismatches, counts = [], [], [0] * 4

    def client(i):
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary(UNARY)
            for _ in range(100000):  # bounded; ends when the test says so
                if state["stop"]:
                    return
                before = state["gen"]
                try:
                    _, c = call.with_call(b"load %d" % i, timeout=10)
                except grpc.RpcError as e:
                    failures.append("%s: %s" % (e.code(), e.details()))
                    continue
                after = state["gen"]
                counts[i] += 1
                got = dict(c.initial_metadata())["x-backend"]
                if before == after and before is not None and got != expect[before % 2]:
                    mismatches.append((before, got))

    streams = []

    def stream(i):
        with grpc.insecure_channel(g.addr) as ch:
            req = b'{"count": 50, "size": 16, "interval_ms": 100}'
            try:
                got = list(ch.unary_stream(STREAM)(req, timeout=30))
                streams.append(len(got))
            except grpc.RpcError as e:
                failures.append("stream %d: %s: %s" % (i, e.code(), e.details()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        with grpc.insecure_channel(g.addr) as kept:  # one connection that lives through every reload
            for k in range(1, 21):
                state["gen"] = None  # calls that span the switch may land on either side
                reload(g, alternating(port, k, four))
                state["gen"] = k
                assert who(kept) == expect[k % 2], "config %d, existing connection" % k
                with grpc.insecure_channel(g.addr) as fresh:
                    assert who(fresh) == expect[k % 2], "config %d, new connection" % k
                time.sleep(0.1)
    finally:
        state["stop"] = True
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    assert not mismatches, mismatches[:5]
    assert streams == [50, 50], "both server streams (begun under config 0, on a1) finish whole"
    assert min(counts) > 0
    log = g.log()
    assert "reload: cluster main kept" in log and "endpoint %s left the set" % four["a1"].addr in log


def test_a_broken_file_keeps_the_running_config(four, grelay_factory):
    port = free_port()
    good = simple_config(port, [four["a1"].addr])
    g = grelay_factory(good, port)
    with grpc.insecure_channel(g.addr) as ch:
        assert who(ch) == "a1"
        with open(g.config_path, "w") as f:
            f.write("workers: 1\nclusters: []\nlisteners: []\n")
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "keeps running the previous configuration" not in g.log():
            assert time.monotonic() < deadline, g.log()[-2000:]
            time.sleep(0.02)
        assert "grelay.yaml:3:12: 'listeners' must not be empty" in g.log()
        assert who(ch) == "a1"
        with grpc.insecure_channel(g.addr) as fresh:
            assert who(fresh) == "a1"
        reload(g, simple_config(port, [four["b1"].addr], workers=2))  # a good file again is taken
        assert who(ch) == "b1"
    assert "workers stays 1 (2 asked): changing it needs a restart" in g.log()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("reload-pki"))
    make_ca(d, "ca")
    make_cert(d, "old", "ca", ["DNS:grelay.test", "IP:127.0.0.1"])
    make_cert(d, "new", "ca", ["DNS:grelay.test", "IP:127.0.0.1"])
    return d


def served_cert(port):
    """The certificate a new TLS handshake gets (DER)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="grelay.test") as t:
            return t.getpeercert(binary_form=True)


def test_a_renewed_certificate_serves_new_handshakes(four, certs, grelay_factory):
    crt, key = os.path.join(certs, "live.crt"), os.path.join(certs, "live.key")
    for src, dst in (("old.crt", crt), ("old.key", key)):
        with open(os.path.join(certs, src), "rb") as f, open(dst, "wb") as o:
            o.write(f.read())
    port = free_port()
    cfg = simple_config(port, [four["a1"].addr], routes=[{"match": {"prefix": "/"}, "cluster": "backend"}],
                        listener_extra={"tls": {"cert_chain": crt, "private_key": key}})
    g = grelay_factory(cfg, port)
    der = lambda name: ssl.PEM_cert_to_DER_cert(read(os.path.join(certs, name)).decode())  # noqa: E731
    assert served_cert(port) == der("old.crt")
    creds = grpc.ssl_channel_credentials(read(os.path.join(certs, "ca.crt")))
    opts = [("grpc.ssl_target_name_override", "grelay.test")]
    with grpc.secure_channel(g.addr, creds, options=opts) as ch:
        assert who(ch) == "a1"
        got = []
        it = ch.unary_stream(STREAM)(b'{"count": 10, "size": 16, "interval_ms": 100}', timeout=20)
        t = threading.Thread(target=lambda: got.extend(it))
        t.start()
        time.sleep(0.2)
        for src, dst in (("new.crt", crt), ("new.key", key)):  # renewed in place, as cert-manager does
            with open(os.path.join(certs, src), "rb") as f, open(dst + ".tmp", "wb") as o:
                o.write(f.read())
            os.replace(dst + ".tmp", dst)
        reload(g)
        assert served_cert(port) == der("new.crt")
        t.join(20)
        assert len(got) == 10, "the stream on the connection made before the reload finishes"
        assert who(ch) == "a1"
    assert "listener ingress on 127.0.0.1:%d kept" % port in g.log()


def test_watch_config_sees_a_configmap_symlink_swap(four, grelay_factory, tmp_path):
    """A Kubernetes ConfigMap volume: grelay.yaml -> ..data/grelay.yaml,
    ..data -> ..<timestamp>; an update writes a new timestamped directory
    and renames a new ..data over the old one."""
    port = free_port()
    cfg = simple_config(port, [four["a1"].addr])
    cfg["watch_config"] = True
    d = str(tmp_path)

    def version(stamp, config):
        os.mkdir(os.path.join(d, stamp))
        g_tmp = os.path.join(d, stamp, "grelay.yaml")
        with open(g_tmp, "w") as f:
            import json
            json.dump(config, f)

    version("..2026_12_01_10_00_00.1", cfg)
    os.symlink("..2026_12_01_10_00_00.1", os.path.join(d, "..data"))
    os.symlink("..data/grelay.yaml", os.path.join(d, "grelay.yaml"))
    g = grelay_factory(None, port, config_path=os.path.join(d, "grelay.yaml"))
    with grpc.insecure_channel(g.addr) as ch:
        assert who(ch) == "a1"
        n = reloads_done(g)
        cfg2 = simple_config(port, [four["b2"].addr])
        cfg2["watch_config"] = True
        version("..2026_12_01_10_05_00.2", cfg2)
        os.symlink("..2026_12_01_10_05_00.2", os.path.join(d, "..data_tmp"))
        os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        reload(g, done_before=n, signal_it=False)
        assert who(ch) == "b2"
    assert "reload (the file changed)" in g.log()


def test_listeners_added_and_removed(four, grelay_factory):
    p1, p2, p3 = free_port(), free_port(), free_port()
    routes = [{"match": {"prefix": "/"}, "cluster": "backend"}]
    clusters = [{"name": "backend", "endpoints": [{"address": four["a1"].addr}]}]
    cfg = {"workers": 2, "listeners": [listener("one", p1, routes), listener("two", p2, routes)], "clusters": clusters}
    g = grelay_factory(cfg, p1)
    with grpc.insecure_channel("127.0.0.1:%d" % p2) as old:
        assert who(old) == "a1"
        got = []
        it = old.unary_stream(STREAM)(b'{"count": 8, "size": 16, "interval_ms": 100}', timeout=20)
        t = threading.Thread(target=lambda: got.extend(it))
        t.start()
        time.sleep(0.2)
        cfg2 = {"workers": 2, "listeners": [listener("one", p1, routes), listener("three", p3, routes)],
                "clusters": clusters}
        reload(g, cfg2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p2), timeout=2).close()
        for port in (p1, p3):
            with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
                assert who(ch) == "a1"
        t.join(20)
        assert len(got) == 8, "a call on the removed listener's connection finishes"
    log = g.log()
    assert "listener two on 127.0.0.1:%d removed" % p2 in log and "listener three on 127.0.0.1:%d added" % p3 in log


def test_a_removed_listener_drains_and_cuts_what_outlives_drain_timeout(four, grelay_factory):
    """The removed listener's connection drains as on SIGTERM: a short call
    still finishes, a held one ends after the new snapshot's drain_timeout
    with UNAVAILABLE (clients retry), and the channel moves on."""
    p1, p2 = free_port(), free_port()
    routes = [{"match": {"prefix": "/"}, "cluster": "backend"}]
    clusters = [{"name": "backend", "endpoints": [{"address": four["a1"].addr}]}]
    cfg = {"workers": 1, "listeners": [listener("one", p1, routes), listener("two", p2, routes)], "clusters": clusters}
    g = grelay_factory(cfg, p1)
    with grpc.insecure_channel("127.0.0.1:%d" % p2) as old:
        assert who(old) == "a1"
        held = old.unary_unary(UNARY).future(b"held", metadata=[("x-hold", "removed-1")], timeout=20)
        short = old.unary_stream(STREAM)(b'{"count": 3, "size": 16, "interval_ms": 100}', timeout=20)
        time.sleep(0.2)
        reload(g, {"drain_timeout": "1s", "workers": 1, "listeners": [listener("one", p1, routes)],
                   "clusters": clusters})
        assert len(list(short)) == 3
        with pytest.raises(grpc.RpcError) as e:
            held.result(timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert "listener was removed by a reload" in e.value.details()
    assert "removed-1" in four["a1"].events()["cancelled"]


def test_sigterm_after_a_reload_drains_with_the_new_drain_timeout_and_ignores_sighup(four, grelay_factory):
    port = free_port()
    cfg = simple_config(port, [four["a1"].addr])
    g = grelay_factory(cfg, port)
    cfg["drain_timeout"] = "1s"  # was the default, 30 s
    reload(g, cfg)
    with grpc.insecure_channel(g.addr) as ch:
        held = ch.unary_unary(UNARY).future(b"held", metadata=[("x-hold", "drain-after-reload")], timeout=30)
        time.sleep(0.2)
        g.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        g.proc.send_signal(signal.SIGHUP)
        with pytest.raises(grpc.RpcError) as e:
            held.result(timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in e.value.details(), e.value
    assert g.proc.wait(10) == 0
    assert "reload (SIGHUP): ignored: grelay is draining" in g.log()


from test_dns import dns, dns_backends, dns_config, spread  # noqa: E402,F401 (fixtures)
from test_failures import wait_for  # noqa: E402


def test_a_dns_cluster_keeps_its_endpoints_across_a_reload_with_the_resolver_down(dns_backends, dns,
                                                                                   grelay_factory):
    (b1, b2, b3), bport = dns_backends
    dns.set([("backend.test", "127.0.0.21"), ("backend.test", "127.0.0.23")])
    port = free_port()
    cfg = dns_config(port, dns, "backend.test", bport)
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary(UNARY)
        assert wait_for(lambda: set(spread(call, 6)[0]) == {"d1", "d3"}), g.log()
        dns.stop()
        cfg["clusters"][0]["connect_timeout"] = "2s"  # a setting changes; the names stay
        reload(g, cfg)
        seen, failed = spread(call, 20)
        assert failed == [] and set(seen) == {"d1", "d3"}
        time.sleep(0.5)  # the restarted discovery has tried (dns_refresh 200ms) and failed by now
        seen, failed = spread(call, 20)
        assert failed == [] and set(seen) == {"d1", "d3"}
    assert "keeping the last good addresses" in g.log()


def test_a_grpc_web_keepalive_connection_takes_the_new_routes(four, grelay_factory):
    from grpcweb_client import H1, frame, parse_frames
    port = free_port()
    g = grelay_factory(simple_config(port, [four["a1"].addr], listener_extra={"grpc_web": True}), port)
    c = H1(port)
    try:
        def call():
            c.request(UNARY, frame(b"web"), [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")])
            status, h, body = c.read_response()
            msgs, trailers = parse_frames(body)
            assert status == 200 and msgs == [b"web"] and trailers["grpc-status"] == "0"
            return h["x-backend"]
        assert call() == "a1"
        reload(g, simple_config(port, [four["b2"].addr], listener_extra={"grpc_web": True}))
        assert call() == "b2", "the next request on the same HTTP/1.1 connection takes the new routes"
    finally:
        c.close()
