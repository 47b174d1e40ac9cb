"""gRPC-Web from a real browser: Debian's chromium, driven by npm's
playwright-core, runs npm's grpc-web runtime on a page served from another
origin than grelay, against a native-only grpcio backend."""
import json
import os
import subprocess
import sys

import pytest

from harness import Backend, Grelay, ROOT, deadline_message, free_port, simple_config, stop, wait_port
from test_failures import wait_for

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")


@pytest.fixture(scope="module")
def page_server():
    """Builds the bundle and serves tests/browser/page on its own port."""
    if not os.path.exists("/usr/bin/chromium") or not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules")):
        pytest.fail("browser tests need /usr/bin/chromium and tests/browser/node_modules: run scripts/test.sh")
    subprocess.run([os.path.join(BROWSER_DIR, "node_modules", ".bin", "esbuild"), "client.js", "--bundle",
                    "--format=iife", "--log-level=warning", "--outfile=page/bundle.js"], cwd=BROWSER_DIR,
                   check=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                             os.path.join(BROWSER_DIR, "page")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser_backend():
    b = Backend("browser-backend")
    yield b
    b.stop()


@pytest.fixture
def web_grelay(page_server, browser_backend, grelay_factory):
    port = free_port()
    # The deadline call's route caps its grpc-timeout (150 ms) far below the
    # page's own 3 s timer (the runtime's XHR gives up at 3.3 s), so the
    # browser's timer never wins: at equal deadlines it raced grelay's, and
    # with the page's timer at 400 ms a loaded machine (CI under ASan,
    # 2026-12-01) lost it once. grelay sends the backend the time left
    # (150 ms less the hop), so at 150 ms the grpcio backend's own timer
    # and grelay's fire together, and either may answer: both are the
    # deadline the route set, reaching the browser as a gRPC-Web status
    # (CI, 2026-12-02: the backend's "Deadline Exceeded" came first, in
    # 149.7 ms by grelay's access log).
    deadline_route = {"match": {"prefix": "/", "headers": [{"name": "x-hold", "exact": "browser-deadline"}]},
                      "cluster": "backend", "max_grpc_timeout": "150ms"}
    cfg = simple_config(port, [browser_backend.addr],
                        routes=[deadline_route, {"match": {"prefix": "/"}, "cluster": "backend"}],
                        listener_extra={"grpc_web": True})
    cfg["listeners"][0]["virtual_hosts"][0]["cors"] = {
        "allow_origins": ["http://localhost:%d" % page_server],
        "allow_headers": ["x-custom-req", "x-fail-code", "x-hold"],
        "expose_headers": ["x-custom-req", "x-backend"],
        "max_age": 600,
    }
    return grelay_factory(cfg, port)


def run_in_browser(page_url, api, fn):
    r = subprocess.run(["node", "run.mjs", page_url, api, fn], cwd=BROWSER_DIR, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_grpc_web_from_chromium(page_server, web_grelay, browser_backend):
    out = run_in_browser("http://localhost:%d/" % page_server, "http://127.0.0.1:%d" % web_grelay.port, "runAll")
    res = out["result"]
    # unary, text and binary modes, custom metadata both ways
    assert res["unaryText"] == {"err": None, "resp": "hello from chromium (text)", "custom": "from-the-browser",
                                "backend": "browser-backend"}
    assert res["unaryBinary"] == {"err": None, "resp": "hello from chromium (binary)", "custom": "from-the-browser"}
    # an error status and its message, unchanged
    assert res["error"] == {"code": 5, "message": "caf\u00e9 is closed \u2013 100%"}
    # server streaming, every message, then OK
    assert res["stream"]["sizes"] == [100] * 5 and res["stream"]["status"]["code"] == 0
    # the first message arrived while the backend still held the stream open
    assert res["incremental"] == {"first": "00000000", "endedBeforeFirst": False}
    assert wait_for(lambda: "browser-incremental" in browser_backend.events()["cancelled"])
    # a 1 MiB response
    assert res["big"]["sizes"] == [1024 * 1024] and res["big"]["status"]["code"] == 0
    # a deadline that expires at the route's cap: grelay's status or the
    # backend's, never the browser runtime's own ("Request timed out")
    assert res["deadline"]["code"] == 4, res["deadline"]
    msg = res["deadline"]["message"]
    assert deadline_message(msg), res["deadline"]
    # and it was the route's cap: the backend was given 150 ms, not the page's 3 s
    assert 0 < browser_backend.events()["held"]["browser-deadline"] <= 0.15
    # the browser asked grelay's permission (CORS preflight) before its calls
    assert out["preflights"] >= 1


def test_a_page_from_an_origin_not_allowed_gets_nothing(page_server, web_grelay):
    out = run_in_browser("http://127.0.0.1:%d/" % page_server, "http://127.0.0.1:%d" % web_grelay.port, "runDenied")
    res = out["result"]
    assert res["resp"] is None and res["err"] is not None
    assert res["err"]["code"] != 0
    assert out["preflights"] >= 1


def test_the_demo_page_calls_the_backends_from_chromium(page_server):
    """The README's run command, as a newcomer's browser sees it."""
    import signal
    import socket
    import time
    demo = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "demo.sh")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + 300
        for line in demo.stdout:  # the demo prints this once everything is up
            if "open http://localhost:3000" in line or time.monotonic() > deadline:
                break
        out = run_in_browser("http://localhost:3000/", "", "page")
        text = out["result"]
        assert text.count("unary: Hello, browser! (from backend-") == 3, text
        assert "stream: Greeting 5 of 5 for browser" in text
        assert "failed" not in text
        assert out["preflights"] >= 1
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(30)
