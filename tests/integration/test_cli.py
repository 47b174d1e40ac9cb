"""The command line as users' scripts call it, the shipped configs, and the README demo."""
import glob
import os
import subprocess

import pytest

from harness import GRELAY, ROOT


def run(*args, timeout=30):
    return subprocess.run([GRELAY, *args], capture_output=True, text=True, timeout=timeout)


def cleartext_configs():
    """The shipped configs that name no certificate files (test_tls.py checks
    the others with certificates it makes)."""
    return [p for p in sorted(glob.glob(os.path.join(ROOT, "conf", "*.yaml"))) if "/etc/grelay/" not in open(p).read()]


@pytest.mark.parametrize("path", cleartext_configs())
def test_shipped_configs_pass_check(path):
    r = run("--check", "--config", path)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


ONE_ROUTE = ("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n"
             "      - name: v\n        domains: ['*']\n        routes:\n"
             "          - match: { prefix: / }\n")


@pytest.mark.parametrize("last_line,message", [
    ("            clustr: x\n", ":9:13: unknown key 'clustr' in route"),
    ("            cluster: nowhere\n", ":9:22: route names cluster 'nowhere', which is not defined"),
])
def test_check_reports_file_line_column(tmp_path, last_line, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(ONE_ROUTE + last_line)
    r = run("--check", "--config", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith(str(bad) + message), r.stderr


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("grelay ")
    r = run("--help")
    assert r.returncode == 0 and "--config" in r.stdout and "--check" in r.stdout


def test_missing_config_file_is_an_error():
    r = run("--config", "/nonexistent/grelay.yaml")
    assert r.returncode == 1
    assert "/nonexistent/grelay.yaml: cannot open" in r.stderr


def test_port_in_use_is_reported(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text('{"workers": 1, "listeners": [{"name": "l", "address": "127.0.0.1:%d", "virtual_hosts": '
                       '[{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "cluster": "c"}]}]}],'
                       ' "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:1"}]}]}' % port)
        r = run("--config", str(cfg))
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1:%d" % port in r.stderr


def demo_report(r, logs):
    """What explains a demo run: its spread, grelay's attempts and retries
    as its /metrics counted them, and the tails of its output and log."""
    def tail(path, n=3000):
        try:
            with open(path) as f:
                return f.read()[-n:]
        except OSError as e:
            return "(%s)" % e
    metrics = [line for line in tail(os.path.join(logs, "metrics.txt"), 10**6).splitlines()
               if line.startswith(("grelay_upstream_requests_total", "grelay_retries_total",
                                   "grelay_upstream_connect_failures_total", "grelay_upstream_ejections_total"))]
    return "\n".join(["exit %s" % r.returncode, "per call:"] +
                     [line for line in r.stdout.splitlines() if line.startswith(("unary", "one connection"))] +
                     ["attempts and retries (grelay /metrics):"] + metrics +
                     ["stdout tail:", r.stdout[-2000:], "stderr tail:", r.stderr[-3000:],
                      "grelay log tail:", tail(os.path.join(logs, "grelay.log"))])


def test_readme_demo_runs(tmp_path):
    """The README's first command, in its non-interactive form: six calls on
    one connection go round robin over the three backends, 2 each."""
    logs = str(tmp_path / "demo-logs")
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh"), "--once"], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "DEMO_LOGS": logs})
    assert r.returncode == 0, demo_report(r, logs)
    assert "Hello, newcomer! (from backend-1)" in r.stdout, demo_report(r, logs)
    assert "'backend-1': 2, 'backend-2': 2, 'backend-3': 2" in r.stdout, demo_report(r, logs)
    assert "Greeting 5 of 5" in r.stdout, demo_report(r, logs)
    assert "no route -> UNIMPLEMENTED" in r.stdout, demo_report(r, logs)


def test_the_demo_refuses_ports_another_process_listens_on(tmp_path):
    """A second demo beside a running one (or anything on its ports) would
    send its calls to the other one's grelay and share its round robin: it
    stops before building anything, naming the port."""
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 3000))
        s.listen()
        r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh"), "--once"], capture_output=True,
                           text=True, timeout=600, env={**os.environ, "DEMO_LOGS": str(tmp_path)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "demo: 127.0.0.1:3000 is taken" in r.stderr, r.stderr
    assert "Hello" not in r.stdout


def test_the_demo_waits_for_a_backend_port_a_connection_holds(tmp_path):
    """50051-50053 are in Linux's ephemeral range: a connection made from one
    of them (and, once closed, its 60 s of TIME_WAIT) keeps the backend from
    binding it. The backend waits, the demo says so, and the calls start
    once all three serve: still 2 each (the demo used to take the bind
    error's "already in use" for "ready" and run on two backends)."""
    import socket
    import struct
    import time
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the TIME_WAITs of earlier demos' backends
    deadline = time.monotonic() + 65  # a client's TIME_WAIT on it (from elsewhere) ends within 60 s
    while True:
        try:
            held.bind(("127.0.0.1", 50052))
            break
        except OSError:
            assert time.monotonic() < deadline, "127.0.0.1:50052 stayed taken"
            time.sleep(0.5)
    held.connect(srv.getsockname())
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)  # now it blocks other binds, as a client's would
    peer, _ = srv.accept()
    logs = str(tmp_path / "demo-logs")
    demo = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "demo.sh"), "--once"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "DEMO_LOGS": logs})
    try:
        told = ""
        for line in demo.stderr:  # bounded: the demo gives up on a backend after 70 s
            if "127.0.0.1:50052 is held by a connection" in line:
                told = line
                break
        assert told.startswith("demo: "), told
    finally:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST: no TIME_WAIT left
        held.close()
        peer.close()
        srv.close()
    out, err = demo.communicate(timeout=600)
    r = subprocess.CompletedProcess(demo.args, demo.returncode, out, err)
    assert r.returncode == 0, demo_report(r, logs)
    assert "'backend-1': 2, 'backend-2': 2, 'backend-3': 2" in r.stdout, demo_report(r, logs)
