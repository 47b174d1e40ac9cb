"""Start and stop the real processes the integration tests talk to.

Every process is started by the test, stopped by PID, and waited for with a
bound. grelay runs with AddressSanitizer/UBSan (see scripts/test.sh): on stop
it must exit 0 and print no sanitizer report.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRELAY = os.environ.get("GRELAY_BIN", os.path.join(ROOT, "build-test", "grelay"))
PY = "/usr/bin/python3"  # Debian's, which has grpcio
ECHO_SERVER = os.path.join(ROOT, "tests", "peers", "echo_server.py")
RAW_SERVER = os.path.join(ROOT, "tests", "peers", "h2_raw_server.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %ds" % (port, seconds))


def stop(proc, seconds=10):
    """SIGTERM, then SIGKILL after a bound; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(seconds)
    return proc.returncode


class Backend:
    """One echo_server.py (a real grpcio server) on a loopback port; with
    raw=True, h2_raw_server.py (a misbehaving HTTP/2 server) instead."""

    def __init__(self, name, port=None, raw=False, tls=(), host="127.0.0.1"):
        self.name = name
        self.port = port or free_port()
        self.addr = "%s:%d" % (host, self.port)
        self.log = tempfile.TemporaryFile()
        argv = [PY, RAW_SERVER, self.addr] if raw else [PY, ECHO_SERVER, name, self.addr] + list(tls)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        self.tls_channel = None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            self.log.seek(0)
            raise RuntimeError("backend %s did not start: %s" % (name, self.log.read().decode()))

    def events(self):
        import grpc
        if self.tls_channel is not None:
            ch = self.tls_channel()
            with ch:
                return json.loads(ch.unary_unary("/test.Control/Events")(b"", timeout=5))
        with grpc.insecure_channel(self.addr) as ch:
            return json.loads(ch.unary_unary("/test.Control/Events")(b"", timeout=5))

    def stop(self):
        stop(self.proc)


class Grelay:
    """grelay on a generated config (JSON is YAML, so a dict will do)."""

    def __init__(self, config, port=None, preexec_fn=None, env=None, config_path=None):
        """config_path: run that file instead of writing config (a test that
        lays the file out itself, as a Kubernetes ConfigMap say)."""
        self.port = port or free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.dir = tempfile.TemporaryDirectory()
        self.config_path = config_path or os.path.join(self.dir.name, "grelay.yaml")
        if config_path is None:
            self.write_config(config)
        self.stderr_path = os.path.join(self.dir.name, "stderr.log")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([GRELAY, "--config", self.config_path], stderr=self.stderr,
                                     preexec_fn=preexec_fn, env=None if env is None else {**os.environ, **env})
        self.stopped = False
        wait_port(self.port, self.proc)

    def write_config(self, config):
        """Replaces the file in one rename (a reader never sees half of it)."""
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(tmp, self.config_path)

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        """Stops grelay and fails the test on a bad exit or a sanitizer report.
        Only the first call checks; later ones (the fixture's) do nothing."""
        if self.stopped:
            return
        self.stopped = True
        code = stop(self.proc)
        self.stderr.close()
        log = self.log()
        self.dir.cleanup()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer"):
            assert marker not in log, "sanitizer report from grelay:\n" + log[-6000:]
        assert code == 0, "grelay exited with %s:\n%s" % (code, log[-4000:])


def deadline_message(msg):
    """A DEADLINE_EXCEEDED message either timer could have written when the
    backend is grpcio: grelay sends it the time left as grpc-timeout, so
    grpcio's "Deadline Exceeded" and grelay's race at the deadline."""
    return "deadline exceeded at grelay" in msg or msg == "Deadline Exceeded"


def simple_config(port, endpoints, lb_policy="round_robin", routes=None, workers=1, listener_extra=None,
                  cluster_extra=None):
    """One listener, one virtual host for '*', one cluster 'backend'."""
    eps = []
    for e in endpoints:
        if isinstance(e, tuple):
            eps.append({"address": e[0], "weight": e[1]})
        else:
            eps.append({"address": e})
    listener = {
        "name": "ingress",
        "address": "127.0.0.1:%d" % port,
        "virtual_hosts": [{
            "name": "default",
            "domains": ["*"],
            "routes": routes or [{"match": {"prefix": "/test."}, "cluster": "backend"}],
        }],
    }
    listener.update(listener_extra or {})
    cluster = {"name": "backend", "lb_policy": lb_policy, "endpoints": eps}
    cluster.update(cluster_extra or {})
    return {"workers": workers, "listeners": [listener], "clusters": [cluster]}


def concurrent_calls(addr, n, key):
    """n unary calls on one connection that the echo backend holds until all
    n are in flight at once (x-barrier); asserts every answer."""
    import grpc
    with grpc.insecure_channel(addr) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        md = [("x-barrier", str(n)), ("x-barrier-key", key)]
        futs = [call.future(b"call %d" % i, metadata=md, timeout=30) for i in range(n)]
        assert [f.result() for f in futs] == [b"call %d" % i for i in range(n)]


class CountingListener:
    """A bare TCP listener on loopback that accepts and counts connections
    (and never speaks): a backend that nothing may reach. .addr to point a
    cluster at, .accepted the sockets so far; close() ends it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepted, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except socket.timeout:
                pass

    def close(self):
        self._stop.set()
        self._t.join(2)
        for c in self.accepted:
            c.close()
        self.sock.close()
