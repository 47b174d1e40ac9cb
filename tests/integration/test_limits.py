"""Resources bounded against floods: one behaviour a test (HAProxy reg-test style).

Out of file descriptors, accept() pauses the listener instead of spinning
(review 2026-12-01, F4), and grelay raises its own RLIMIT_NOFILE soft limit
to the hard one at start. An upstream connection that has used up its
stream ids is retired and its calls go elsewhere (F1).
"""
import os
import resource
import socket
import time

import grpc

from harness import Backend, free_port, simple_config
from test_failures import wait_for

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14, 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def unary_works(addr):
    try:
        with grpc.insecure_channel(addr) as ch:
            return ch.unary_unary("/test.Echo/Unary")(b"hello", timeout=2) == b"hello"
    except grpc.RpcError:
        return False


def test_out_of_file_descriptors_pauses_accept_and_resumes(grelay_factory):
    limit = 64

    def small_limit():  # soft and hard: grelay cannot raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    b = Backend("b")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr]), port, preexec_fn=small_limit)
        assert "open files limit: %d" % limit in g.log()
        assert unary_works(g.addr)
        # More connections than grelay has descriptors: the kernel's backlog
        # takes the rest, and accept() fails with EMFILE.
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(limit + 40)]
        try:
            wait_for(lambda: "not accepting" in g.log())
            before = cpu_seconds(g.proc.pid)
            time.sleep(2)  # saturated all along: a busy accept loop would burn ~2 s of CPU here
            used = cpu_seconds(g.proc.pid) - before
            assert used < 0.5, "grelay used %.2f s of CPU in 2 s while out of descriptors" % used
        finally:
            for s in socks:
                s.close()
        # The descriptors come back as grelay closes those connections; then
        # it accepts again and calls go through.
        wait_for(lambda: unary_works(g.addr), seconds=20)
    finally:
        b.stop()


def test_soft_open_files_limit_is_raised_to_the_hard_one(grelay_factory):
    def soft_below_hard():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    b = Backend("b")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr]), port, preexec_fn=soft_below_hard)
        assert "open files limit: 4096" in g.log()
        with open("/proc/%d/limits" % g.proc.pid) as f:
            line = next(l for l in f if l.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
    finally:
        b.stop()


def test_upstream_stream_ids_running_out_retire_the_connection(grelay_factory):
    """A test-only switch starts every upstream connection 4 stream ids
    before 2^31-1: each then takes 4 calls and must be replaced, with no
    call failing (today's nghttp2 gives a client 2^30 ids: hours of traffic
    on one connection at 100k calls/s)."""
    b = Backend("b")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr]), port, env={"GRELAY_TEST_FIRST_STREAM_ID": "2147483641"})
        with grpc.insecure_channel(g.addr) as ch:
            call = ch.unary_unary("/test.Echo/Unary")
            for i in range(30):
                assert call(b"call %d" % i, timeout=10) == b"call %d" % i
    finally:
        b.stop()
