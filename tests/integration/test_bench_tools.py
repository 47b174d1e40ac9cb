"""The bench's C load tools still build and still do what bench.py reads
from them, briefly, against a real grelay in front of the bench's C echo
backend: conn_load (built by bench/load/build.sh, as bench/run.sh builds it)
makes exactly the connections it is asked for, h2c and TLS with resumed
sessions; stream_load (built by CMake next to grelay) holds the calls it is
asked to hold, and in ping-pong mode, as bench/syscalls.py --kind bidi
drives it (through bench.py's stream_load()), echoes messages on the calls
asked. Counts, never timing: grelay's own metrics must agree with what each
tool printed."""
import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from harness import ROOT, free_port

BIN_DIR = os.path.dirname(os.environ.get("GRELAY_BIN", os.path.join(ROOT, "build-test", "grelay")))
STREAM_LOAD = os.path.join(BIN_DIR, "stream_load")
ROUTES = [{"match": {"prefix": "/bench."}, "cluster": "echo"}]


@pytest.fixture(scope="module")
def conn_load(tmp_path_factory):
    """bench/load/build.sh's conn_load (-Wall -Wextra -Werror), built here."""
    out = tmp_path_factory.mktemp("bench-load")
    r = subprocess.run([os.path.join(ROOT, "bench", "load", "build.sh"), str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return str(out / "conn_load")




@pytest.fixture
def relay(echo, grelay_factory, tmp_path):
    """grelay with an h2c listener "plain" and a TLS one "tls" (a P-256
    certificate made here) in front of the echo backend, and its admin port:
    (grelay, plain port, tls port, admin port)."""
    crt, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    plain, tls, admin = free_port(), free_port(), free_port()
    vhosts = [{"name": "v", "domains": ["*"], "routes": ROUTES}]
    cfg = {"workers": 1, "admin": {"address": "127.0.0.1:%d" % admin},
           "listeners": [{"name": "plain", "address": "127.0.0.1:%d" % plain, "virtual_hosts": vhosts},
                         {"name": "tls", "address": "127.0.0.1:%d" % tls, "virtual_hosts": vhosts,
                          "tls": {"cert_chain": crt, "private_key": key}}],
           "clusters": [{"name": "echo", "endpoints": [{"address": echo}]}]}
    # Waited for through the admin port, never by probing the listeners: a
    # probe's connection is counted when the worker accepts it, which may be
    # after the test has read the counter (CI, 2026-12-02: 11 for 10).
    g = grelay_factory(cfg, admin)
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/ready" % admin, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline and g.proc.poll() is None, "grelay never said /ready:\n" + g.log()
        time.sleep(0.05)
    return g, plain, tls, admin


def metric(admin, name, **labels):
    """The value of one series on grelay's /metrics (0 if it is not there)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=10) as r:
        text = r.read().decode()
    want = set('%s="%s"' % kv for kv in labels.items())
    total = 0.0
    for m in re.finditer(r"^%s(?:\{([^}]*)\})? (\S+)$" % re.escape(name), text, re.M):
        if want <= set((m.group(1) or "").split(",")):
            total += float(m.group(2))
    return total


def settled(admin, want, name, **labels):
    """metric() once it reads want, or what it reads after 5 s (a call's
    counters are added up when grelay has closed its stream, which may be a
    moment after the client saw the call end)."""
    deadline = time.monotonic() + 5
    while True:
        got = metric(admin, name, **labels)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def figures(stdout):
    """conn_load's and stream_load's last line, "name value name value ...": {name: value}."""
    f = stdout.strip().splitlines()[-1].split()
    return dict(zip(f[0::2], f[1::2]))


@pytest.mark.parametrize("listener,mode,resumed", [("plain", "h2c", 0), ("tls", "tls1.3-resume", 8),
                                                   ("tls", "tls1.2-resume", 8)])
def test_conn_load_makes_the_connections_asked(relay, conn_load, listener, mode, resumed):
    """2 threads x 5 connections, one unary call each: 10 connections, every
    call checked by conn_load; with TLS every connection but each thread's
    first resumes the session grelay gave it. grelay accepted 10
    connections on that listener and answered 10 calls OK."""
    g, plain, tls, admin = relay
    port = plain if listener == "plain" else tls
    r = subprocess.run([conn_load, "127.0.0.1", str(port), "2", "30", "100", mode, "5"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = figures(r.stdout)
    assert (out["conns"], out["resumed"], out["errors"]) == ("10", str(resumed), "0"), r.stdout
    assert settled(admin, 10, "grelay_downstream_connections_total", listener=listener) == 10
    assert settled(admin, 10, "grelay_requests_total", listener=listener, grpc_code="OK") == 10


def test_conn_load_counts_a_failed_connection(conn_load):
    """Nothing listens: every attempt is an error, none a connection, and
    the exit code says so (bench.py flags such a run)."""
    r = subprocess.run([conn_load, "127.0.0.1", str(free_port()), "1", "30", "100", "h2c", "3"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    out = figures(r.stdout)
    assert (out["conns"], out["errors"]) == ("0", "3"), r.stdout


def test_stream_load_holds_the_calls_asked(relay):
    """stream_load in held mode (INFLIGHT 0), 2 connections x 25 calls: it
    says "held 50" once every call's one message is echoed, grelay has those
    50 calls in flight while they are held, and at the end 50 messages came
    back with no error."""
    g, plain, tls, admin = relay
    load = subprocess.Popen([STREAM_LOAD, "127.0.0.1", str(plain), "2", "25", "100", "2", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert load.stdout.readline().split() == ["held", "50"]
        assert settled(admin, 50, "grelay_requests_in_flight", listener="plain") == 50
        rest, err = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, err
    out = figures(rest)
    assert (out["messages"], out["bytes"], out["errors"]) == ("50", str(50 * 105), "0"), rest


@pytest.fixture(scope="module")
def syscalls():
    """bench/syscalls.py as a module (it imports bench.py, whose temporary
    directory goes when this process exits)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import syscalls
        yield syscalls
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def test_syscalls_bidi_mode_drives_stream_load(relay, syscalls):
    """syscalls.py --kind bidi's load without its perf counting (perf is no
    test dependency, and its tracepoints need privileges a test may not
    have): bidi_runs() at 2 connections x 3 streams, ping-pong, the warm-up
    then one run. The run returns the messages stream_load echoed, more
    than one a call (held mode, INFLIGHT 0, would echo exactly one), and
    grelay saw the 2 x 3 calls of each and 2 x 2 connections."""
    g, plain, tls, admin = relay
    args = argparse.Namespace(stream_load=STREAM_LOAD, seconds=0.5)
    warm, run = syscalls.bidi_runs(args, 100, 2, 3)
    assert warm(plain)["requests"] > 0
    assert run(plain) > 2 * 3
    assert settled(admin, 4, "grelay_downstream_connections_total", listener="plain") == 4
    assert settled(admin, 12, "grelay_requests_total", listener="plain") == 12
