"""Binary upgrade (SIGUSR2): the running grelay starts its binary again with
the listening sockets handed over, the new process serves, and the old one
drains as on SIGTERM. Under steady load, no call fails and no connection
attempt is refused across the switch (issue 13)."""
import json
import os
import re
import signal
import threading
import time

import grpc

from harness import Backend, Grelay, free_port, simple_config

SANITIZER = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def new_pid(g, seconds=20):
    """The PID of the process the upgrade started, once it serves (from the log)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log = g.log()
        m = re.search(r"upgrade: new process (\d+) is serving", log)
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError("no new process served within %ds:\n%s" % (seconds, g.log()[-3000:]))


def alive(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def stop_pid(pid, seconds=15):
    """SIGTERM to a process that is not our child; waits until it is gone."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("process %d did not stop within %ds" % (pid, seconds))


class Load:
    """Client threads calling until stopped: `fresh` threads open a new
    connection for every call (so any refused connection shows), one keeps
    its channel (it must follow the GOAWAY to the new process).

    The channels keep grpc-core's defaults, transparent retries included: a
    client that reads the drain's first GOAWAY fails the calls it had not
    yet written on that connection ("GOAWAY received", never sent) and,
    with retries on, sends them on the next one; with
    `grpc.enable_retries=0` they fail, whatever the server does (one or two
    in 3 of 4 full-suite runs on 2026-12-02, none of them seen by the
    backend). What
    this test must catch is a call grelay forwarded and then disowned (a
    final GOAWAY naming an older last stream): the client would retry it
    and the backend serve it twice, so end() compares the backend's
    count with the calls that succeeded. A refused connection is not
    retried: it fails the call."""

    def __init__(self, addr, fresh=3):
        self.addr, self.stop, self.lock = addr, threading.Event(), threading.Lock()
        self.ok, self.failed = [0], []
        self.threads = [threading.Thread(target=self.run, args=(i, True)) for i in range(fresh)]
        self.threads.append(threading.Thread(target=self.run, args=(fresh, False)))
        for t in self.threads:
            t.start()

    def call(self, ch, i):
        try:
            assert ch.unary_unary("/test.Echo/Unary")(b"m%d" % i, timeout=10) == b"m%d" % i
            with self.lock:  # += is not atomic across threads
                self.ok[0] += 1
        except grpc.RpcError as e:
            with self.lock:
                self.failed.append((e.code(), e.details()))

    def run(self, i, fresh):
        if fresh:
            for _ in range(100000):
                if self.stop.is_set():
                    return
                with grpc.insecure_channel(self.addr) as ch:
                    self.call(ch, i)
        else:
            with grpc.insecure_channel(self.addr) as ch:
                for _ in range(100000):
                    if self.stop.is_set():
                        return
                    self.call(ch, i)

    def end(self, backend, others=0):
        """Stops the load; asserts that no call failed and that the backend
        served each call once (others: calls besides the load's)."""
        self.stop.set()
        for t in self.threads:
            t.join(30)
        ok = self.ok[0]
        assert self.failed == [], self.failed[:5]
        served = backend.events()["calls"] - others
        assert served == ok, "the backend served %d calls, the clients saw %d succeed" % (served, ok)
        return ok


class Upgradable:
    """A backend and a grelay in front of it (cfg_extra merged into its
    config), for `with`: upgrade() sends SIGUSR2 and returns the new PID once
    it serves; at the end the new process, if any, is stopped by PID and the
    shared log checked for sanitizer reports, else grelay is stopped as
    usual (exit 0, no report)."""

    def __init__(self, workers=1, env=None, **cfg_extra):
        self.b = Backend("b1")
        port = free_port()
        self.cfg = simple_config(port, [self.b.addr], workers=workers)
        self.cfg.update(cfg_extra)
        try:
            self.g = Grelay(self.cfg, port=port, env=env)
        except Exception:
            self.b.stop()
            raise
        self.pid = None

    def upgrade(self):
        os.kill(self.g.proc.pid, signal.SIGUSR2)
        self.pid = new_pid(self.g)
        return self.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if self.pid is None:
                self.g.stop()
            else:
                stop_pid(self.pid)
                log = self.g.log()
                for marker in SANITIZER:
                    assert marker not in log, "sanitizer report:\n" + log[-6000:]
                self.g.stopped = True
                self.g.stderr.close()
                self.g.dir.cleanup()
        finally:
            self.b.stop()


def test_upgrade_under_load_fails_no_call_and_refuses_no_connection():
    with Upgradable(workers=2, drain_timeout="10s") as u:
        g = u.g
        load = Load(g.addr)
        # A server stream that outlives the switch: it finishes on the old process.
        with grpc.insecure_channel(g.addr) as sch:
            stream = sch.unary_stream("/test.Echo/ServerStream")(
                json.dumps({"count": 20, "size": 16, "interval_ms": 100}).encode(), timeout=30)
            first = next(stream)
            time.sleep(1.0)
            before = load.ok[0]
            pid = u.upgrade()
            assert pid != g.proc.pid
            rest = list(stream)
        assert first.startswith(b"00000000") and len(rest) == 19
        assert g.proc.wait(15) == 0  # the old one drained and exited 0
        at_exit = load.ok[0]
        time.sleep(1.0)  # the new process alone now
        ok = load.end(u.b, others=1)  # the server stream
        assert before > 0 and ok > at_exit, (before, at_exit, ok)
        assert "upgrade: 2 listening sockets inherited" in g.log()
        with grpc.insecure_channel(g.addr) as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"after", timeout=5) == b"after"


def test_an_upgrade_to_fewer_workers_accepts_on_every_handed_over_socket():
    """The new config asks for 1 worker, the old process has 2 sockets per
    listener: the new process runs 2 workers (a socket nobody accepts on
    would reset the connections in its queue) and no call fails."""
    with Upgradable(workers=2) as u:
        g = u.g
        with open(g.config_path, "w") as f:
            json.dump({**u.cfg, "workers": 1}, f)
        load = Load(g.addr)
        time.sleep(0.5)
        u.upgrade()
        assert g.proc.wait(15) == 0
        at_exit = load.ok[0]
        time.sleep(0.5)
        ok = load.end(u.b)
        assert ok > at_exit
        assert "running 2 workers instead of 1" in g.log()


def test_an_upgrade_that_cannot_start_leaves_the_old_process_serving():
    with Upgradable() as u:
        g = u.g
        with open(g.config_path, "w") as f:
            f.write("listeners: [\n")  # the new process cannot load it
        os.kill(g.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 20
        while "before it was ready; this one goes on serving" not in g.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "before it was ready; this one goes on serving" in g.log(), g.log()[-2000:]
        assert g.proc.poll() is None
        with grpc.insecure_channel(g.addr) as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"still", timeout=5) == b"still"


def test_systemd_hears_ready_and_then_the_new_main_pid(tmp_path):
    """sd_notify(3) as systemd's Type=notify + NotifyAccess=all sees it: READY=1
    at start; after SIGUSR2, MAINPID of the new process with READY=1."""
    import socket
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        with Upgradable(env={"NOTIFY_SOCKET": path}) as u:
            assert sock.recv(256) == b"READY=1"
            pid = u.upgrade()
            assert sock.recv(256) == b"MAINPID=%d\nREADY=1" % pid
            assert u.g.proc.wait(15) == 0
