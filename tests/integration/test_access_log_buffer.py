"""access_log.buffer, each worker's ring (docs/configuration.md#access_log):
a line that finds it full is dropped and counted, never the call slowed,
and every line is either in the file or in grelay_access_log_dropped_total.

The log goes to a FIFO the test holds open but does not read during the
burst: the writer thread blocks in write(2) once the pipe (64 KiB) is full,
so the ring alone takes the burst, as if the writer were never scheduled.
That makes both tests deterministic: with the least buffer a burst of
h2load calls must drop lines, each counted; with the default one a burst
whose lines fill at most half of it must drop none. Then the test reads
the FIFO and counts the lines against the calls. A reload cannot resize the
rings (it says the new size waits for a restart), and --check names a bad
size's file, line and column."""
import json
import os
import re
import select
import signal
import subprocess
import time

import pytest

from harness import GRELAY, ROOT, free_port, simple_config
from test_admin import Admin

HEADER = os.path.join(ROOT, "include", "grelay", "access_log.h")


def header_define(name):
    m = re.search(r"^#define %s (\d+)u?\b" % name, open(HEADER).read(), re.M)
    return int(m.group(1))




@pytest.fixture
def fifo(tmp_path):
    """(path, read end): a FIFO opened for reading (non-blocking) before
    grelay opens it, so grelay's open does not wait; nothing reads it yet."""
    path = str(tmp_path / "access.fifo")
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield path, fd
    finally:
        os.close(fd)


def metric(admin, name):
    status, _, text = admin.get("/metrics")
    assert status == 200
    return int(re.search(r"^%s (\d+)" % name, text, re.M).group(1))


def start(grelay_factory, echo, path, **access_log):
    port, admin_port = free_port(), free_port()
    cfg = simple_config(port, [echo], routes=[{"match": {"prefix": "/"}, "cluster": "backend"}], workers=1)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    cfg["access_log"] = dict({"path": path}, **access_log)
    g = grelay_factory(cfg, port)
    g.admin = Admin(admin_port)
    return g


def burst(g, tmp_path, calls):
    """calls unary calls of 100 bytes, h2load at 16 connections x 64 streams; every one must succeed."""
    body = tmp_path / "req.bin"
    body.write_bytes(b"\0\0\0\0\x64" + b"x" * 100)
    r = subprocess.run(["h2load", "-n", str(calls), "-c", "16", "-m", "64", "-d", str(body),
                        "-H", "content-type: application/grpc", "-H", "te: trailers",
                        "http://%s/bench.Echo/Unary" % g.addr], capture_output=True, text=True, timeout=120)
    assert "%d succeeded" % calls in r.stdout, r.stdout + r.stderr


def read_fifo(fd, lines, seconds=30):
    """The FIFO's bytes once they hold lines newlines (bounded wait)."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    while data.count(b"\n") < lines:
        assert time.monotonic() < deadline, "%d of %d lines read in %d s" % (data.count(b"\n"), lines, seconds)
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            data += os.read(fd, 1 << 20)
    return bytes(data)


def lines_then_read(g, fd, calls):
    """(lines buffered, dropped, the bytes read): the counters, then the
    FIFO read until every buffered line is out; each line counted once."""
    buffered = metric(g.admin, "grelay_access_log_lines_total")
    dropped = metric(g.admin, "grelay_access_log_dropped_total")
    assert buffered + dropped == calls, (buffered, dropped, calls)
    data = read_fifo(fd, buffered)
    assert data.endswith(b"\n") and data.count(b"\n") == buffered
    for line in data.split(b"\n")[:-1]:
        assert line.startswith(b'{"time":"') and line.endswith(b"}"), line[:200]
    return buffered, dropped, data


def test_the_least_buffer_drops_lines_under_a_burst_and_counts_each(grelay_factory, echo, fifo, tmp_path):
    path, fd = fifo
    g = start(grelay_factory, echo, path, buffer="64KiB")
    calls = 3000  # ~1.2 MB of lines against 64 KiB of ring and 64 KiB of pipe
    burst(g, tmp_path, calls)
    buffered, dropped, data = lines_then_read(g, fd, calls)
    assert dropped > calls // 2, (buffered, dropped)
    assert buffered >= 64 * 1024 // len(data.split(b"\n")[0])  # the ring filled before it dropped
    # Once read, the ring is free again: a second burst fits as far as it can, and is counted the same way.
    burst(g, tmp_path, 100)
    buffered2 = metric(g.admin, "grelay_access_log_lines_total")
    dropped2 = metric(g.admin, "grelay_access_log_dropped_total")
    assert buffered2 + dropped2 == calls + 100
    read_fifo(fd, buffered2 - buffered)


def test_the_default_buffer_takes_a_burst_with_no_writer_and_drops_nothing(grelay_factory, echo, fifo, tmp_path):
    """The default ring holds calls' lines though the writer takes none
    (after the pipe's first 64 KiB) until the burst is over."""
    path, fd = fifo
    g = start(grelay_factory, echo, path)
    default = header_define("ACCESS_LOG_BUFFER_DEFAULT")
    calls = default // 2 // 512  # a JSON line of these calls is ~420 bytes: at most half the ring
    assert calls >= 2000
    burst(g, tmp_path, calls)
    buffered, dropped, data = lines_then_read(g, fd, calls)
    assert dropped == 0 and buffered == calls
    assert len(data) <= default // 2  # what the test assumes: the burst fits with room to spare


def test_a_reload_keeps_the_rings_and_says_a_new_buffer_waits_for_a_restart(grelay_factory, echo, fifo, tmp_path):
    path, fd = fifo
    g = start(grelay_factory, echo, path, buffer="64KiB")
    cfg = json.loads(open(g.config_path).read())
    cfg["access_log"]["buffer"] = "8MiB"
    g.write_config(cfg)
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload: done" not in g.log():
        assert time.monotonic() < deadline, g.log()[-3000:]
        time.sleep(0.02)
    assert "reload: access_log: buffer 8388608 waits for a restart; each worker's ring stays 65536 bytes" in g.log()
    calls = 3000
    burst(g, tmp_path, calls)
    _, dropped, _ = lines_then_read(g, fd, calls)  # the file reopened by the reload: the same FIFO
    assert dropped > calls // 2  # still the 64 KiB ring


@pytest.mark.parametrize("value,message", [
    ("1KiB", "'buffer' must be between 65536 and 268435456, got '1KiB'"),
    ("lots", "'buffer' must be a size such as 65536, 64KiB or 1MiB, got 'lots'"),
])
def test_check_reports_a_bad_buffer_at_its_line_and_column(tmp_path, value, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    virtual_hosts:\n"
                   "      - name: v\n        domains: ['*']\n        routes:\n"
                   "          - match: { prefix: / }\n            cluster: c\n"
                   "clusters:\n  - name: c\n    endpoints: [{address: 127.0.0.1:2}]\n"
                   "access_log:\n  path: /dev/stdout\n  buffer: %s\n" % value)
    r = subprocess.run([GRELAY, "--check", "--config", str(bad)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert r.stderr.startswith("%s:15:11: %s" % (bad, message)), r.stderr
