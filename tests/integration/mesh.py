#!/usr/bin/python3
"""The mesh in a box (docs/mesh.md): the topology, written once, that
scripts/mesh.sh runs for a person and tests/integration/test_mesh.py runs
with assertions.

One loopback address per "host", nothing else:

  client (grpcio) ─┐ TLS              mTLS                     h2c
  client (gRPC-Web)┴> edge 127.0.1.10 ────> A-inbound 127.0.1.20 ───> service A 127.0.1.20
                                                                        │ h2c
      B-inbound 127.0.1.31..33 <── mTLS, strict_dns b.mesh.test ── A-outbound 127.0.1.20
            │ h2c                  health checks                (dnsmasq 127.0.1.53)
      service B 127.0.1.31..33

Every grelay has its config in a ConfigMap-style directory (grelay.yaml ->
..data/grelay.yaml, ..data -> ..<timestamp>) with watch_config: true, and an
admin address on its host; one Prometheus scrapes all the admins.

Used as a program (scripts/mesh.sh): python3 mesh.py [--once] [--free-ports]
"""
import json
import os
import pwd
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcweb_client  # noqa: E402
from harness import GRELAY, PY, ROOT, free_port, stop  # noqa: E402
from prometheus import Prometheus  # noqa: E402
from test_tls import make_ca, make_cert  # noqa: E402

SERVICE = os.path.join(ROOT, "tests", "peers", "mesh_service.py")
HOSTS = {"edge": "127.0.1.10", "a": "127.0.1.20", "dns": "127.0.1.53",
         "b1": "127.0.1.31", "b2": "127.0.1.32", "b3": "127.0.1.33"}
REPLICAS = ("b1", "b2", "b3")
B_NAME = "b.mesh.test"  # strict_dns: dnsmasq answers the three B hosts
# The ports of each role (every host has its own address, so roles on
# different hosts share numbers): scripts/mesh.sh uses these; the test takes
# free ones (pick_ports).
FIXED_PORTS = {"edge": 8443, "app": 7000, "inbound": 7443, "outbound": 7001, "admin": 9901,
               "admin_out": 9902, "dns": 5353}
OFFSET_MS = 200  # grpc_timeout_offset of every hop's route: the deadline shrinks by it at each grelay
HOPS = ("edge", "a-inbound", "a-outbound", "b-inbound")  # Prometheus job names, in call order
CAPS_V2 = {"a-inbound": "8s", "a-outbound": "6s", "b-inbound": "4s"}  # max_grpc_timeout after the change
CALL_TIMEOUT = 10.0  # the clients' deadline, seconds
DELAY_MS = 20  # how long B holds each call, so that calls are in flight on every hop


def taken(ports, hosts=HOSTS.values()):
    """The "host:port"s of ports that something holds on a mesh host (TCP, as
    a listener binds it: SO_REUSEADDR, so TIME_WAIT does not count; UDP too
    for dns)."""
    out = []
    for host in hosts:
        for role, port in ports.items():
            kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if role == "dns" else (socket.SOCK_STREAM,)
            for kind in kinds:
                with socket.socket(socket.AF_INET, kind) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind((host, port))
                    except OSError:
                        out.append("%s:%d" % (host, port))
    return out


def ports_free(ports):
    return not taken(ports)


def pick_ports(tries=50):
    """Ports for every role, each free on every mesh host."""
    for _ in range(tries):
        ports = {}
        for role in FIXED_PORTS:
            p = free_port()
            while p in ports.values():
                p = free_port()
            ports[role] = p
        if ports_free(ports):
            return ports
    raise RuntimeError("no set of free ports on the mesh hosts after %d tries" % tries)


def http_get(host, port, path, timeout=5):
    """(status, body) of GET http://host:port/path; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def wait_until(what, cond, seconds=20, proc=None):
    """Polls cond every 50 ms; its true value, or RuntimeError after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: the process exited (%s)" % (what, proc.returncode))
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %ds waiting for %s" % (seconds, what))
        time.sleep(0.05)


class ConfigMap:
    """A directory laid out as kubelet lays out a ConfigMap volume; publish()
    swaps ..data to a new timestamped directory in one rename."""

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.version = 0

    def path(self, name="grelay.yaml"):
        return os.path.join(self.dir, name)

    def publish(self, files):
        self.version += 1
        stamp = "..%s.%d" % (time.strftime("%Y_%m_%d_%H_%M_%S"), self.version)
        os.makedirs(os.path.join(self.dir, stamp))
        for name, text in files.items():
            with open(os.path.join(self.dir, stamp, name), "w") as f:
                f.write(text)
        data = os.path.join(self.dir, "..data")
        old = os.readlink(data) if os.path.islink(data) else None
        os.symlink(stamp, data + "_tmp")
        os.replace(data + "_tmp", data)
        for name in files:
            if not os.path.lexists(self.path(name)):
                os.symlink(os.path.join("..data", name), self.path(name))
        if old:
            shutil.rmtree(os.path.join(self.dir, old))


class Service:
    """A mesh_service.py process (service A or a B replica)."""

    def __init__(self, kind, name, listen, log_dir, outbound=None):
        self.name = name
        self.log_path = os.path.join(log_dir, name + ".log")
        argv = [PY, SERVICE, kind, name, listen] + ([outbound] if outbound else [])
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        line = b""
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 64)
                if not chunk:
                    break
                line += chunk
        if line.strip() != b"ready":
            stop(self.proc)
            raise RuntimeError("%s did not start: %s" % (name, open(self.log_path).read()[-2000:]))

    def term(self):
        """SIGTERM: it answers NOT_SERVING to health checks and goes on serving."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, seconds=10):
        """SIGINT: it stops (calls in flight end first); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(seconds)
        return self.proc.returncode


class Proxy:
    """One grelay on its ConfigMap, with its admin on its host."""

    SANITIZER = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")

    def __init__(self, name, host, admin_port, cm, log_dir):
        self.name, self.host, self.admin_port, self.cm = name, host, admin_port, cm
        self.admin = "%s:%d" % (host, admin_port)
        self.log_path = os.path.join(log_dir, name + ".log")
        self.log_file = open(self.log_path, "ab")
        # its own session: a Ctrl-C on scripts/mesh.sh reaches the script
        # alone, which then stops everything in order
        self.proc = subprocess.Popen([GRELAY, "--config", cm.path()], stderr=self.log_file, start_new_session=True)
        self.killed = False
        wait_until("%s ready (GET http://%s/ready)" % (name, self.admin),
                   lambda: self.get("/ready")[0] == 200, seconds=30, proc=self.proc)

    def get(self, path):
        return http_get(self.host, self.admin_port, path)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metric(self, name, **labels):
        """The sum of the series of name whose labels include labels (from /metrics)."""
        status, text = self.get("/metrics")
        if status != 200:
            return None
        total = 0.0
        want = ['%s="%s"' % kv for kv in labels.items()]
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                series, value = line.rsplit(" ", 1)
                if all(w in series for w in want):
                    total += float(value)
        return total

    def endpoint(self, address):
        """The outbound's view of one endpoint of cluster b (/clusters), or None."""
        status, body = self.get("/clusters")
        if status != 200:
            return None
        for c in json.loads(body)["clusters"]:
            for e in c["endpoints"]:
                if e["address"] == address:
                    return e
        return None

    def term(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)

    def finish(self, seconds=30):
        """Waits for the exit (after term()); the problems found: a bad exit or
        a sanitizer report."""
        try:
            code = self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.log_file.close()
        log = self.log()
        problems = ["%s: sanitizer report:\n%s" % (self.name, log[-4000:])
                    for m in self.SANITIZER if m in log][:1]
        if code != 0 and not self.killed:
            problems.append("%s exited with %s:\n%s" % (self.name, code, log[-3000:]))
        return problems


class Pki:
    """The mesh's certificates, made with test_tls's make_ca/make_cert."""

    def __init__(self, d):
        self.d = d
        os.makedirs(d)
        make_ca(d, "ca")
        make_cert(d, "edge.mesh.test", "ca", ["DNS:edge.mesh.test", "IP:" + HOSTS["edge"]])
        make_cert(d, "edge-client", "ca", ["DNS:edge.mesh.test"], client=True)
        make_cert(d, "a.mesh.test", "ca", ["DNS:a.mesh.test"])
        make_cert(d, "a-client", "ca", ["DNS:a.mesh.test"], client=True)
        make_cert(d, B_NAME, "ca", ["DNS:" + B_NAME])

    def __call__(self, name):
        return os.path.join(self.d, name)

    def server_tls(self, name):
        """A sidecar's inbound listener: its certificate, clients must show one from the CA."""
        return {"cert_chain": self(name + ".crt"), "private_key": self(name + ".key"),
                "client_ca": self("ca.crt"), "require_client_cert": True}

    def client_tls(self, sni, me):
        return {"sni": sni, "ca": self("ca.crt"), "cert_chain": self(me + ".crt"), "private_key": self(me + ".key")}


class Dnsmasq:
    """Debian's dnsmasq on the mesh's DNS host, answering from a hosts file,
    as tests/integration/test_dns.py runs it (there on 127.0.0.1)."""

    def __init__(self, d, host, port, records):
        self.hosts = os.path.join(d, "hosts")
        with open(self.hosts, "w") as f:
            f.write("".join("%s %s\n" % (ip, name) for name, ip in records))
        self.host, self.port = host, port
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--addn-hosts=" + self.hosts, "--listen-address=" + host, "--bind-interfaces",
             "--port=%d" % port, "--user=" + pwd.getpwuid(os.getuid()).pw_name, "--pid-file=", "--local-ttl=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ready\x04test\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)

            def answers():
                s.sendto(query, (host, port))
                try:
                    return s.recv(512)[:2] == b"\x12\x34"
                except socket.timeout:
                    return False
            wait_until("dnsmasq on %s:%d" % (host, port), answers, seconds=10, proc=self.proc)

    def stop(self):
        stop(self.proc)


def route(name, prefix, cluster, offset=True, cap=None):
    r = {"name": name, "match": {"prefix": prefix}, "cluster": cluster}
    if offset:
        r["grpc_timeout_offset"] = "%dms" % OFFSET_MS
    if cap:
        r["max_grpc_timeout"] = cap
    return r


def proxy_config(admin, listener, routes, clusters, **top):
    """One listener with one virtual host, an admin on the host, watch_config."""
    listener = dict(listener, virtual_hosts=[{"name": "mesh", "domains": ["*"], "routes": routes}])
    cfg = {"workers": 1, "watch_config": True, "admin": {"address": admin}, "listeners": [listener],
           "clusters": clusters}
    cfg.update(top)
    return cfg


class Mesh:
    """The whole topology; start() brings it up, stop() takes it down (both
    bounded). self.problems collects what a grelay's exit showed (a bad code,
    a sanitizer report)."""

    def __init__(self, ports=None, prometheus=True, prometheus_port=None, say=None):
        self.ports = ports or pick_ports()
        self.with_prometheus, self.prometheus_port = prometheus, prometheus_port
        self.say = say or (lambda text: None)
        self.dir = tempfile.mkdtemp(prefix="grelay-mesh-")
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs)
        self.problems = []
        self.dns = self.prom = self.a = self.a_in = self.a_out = self.edge = None
        self.apps, self.sidecars, self.cms = {}, {}, {}

    def addr(self, host, role):
        return "%s:%d" % (HOSTS[host], self.ports[role])

    # The configurations: v1 at start, v2 after the ConfigMap change (routes
    # renamed, max_grpc_timeout caps on every sidecar).
    def config(self, role, v=1, host=None):
        cap = CAPS_V2.get(role) if v == 2 else None
        if role == "edge":
            listener = {"name": "edge", "address": self.addr("edge", "edge"), "grpc_web": True,
                        "tls": {"cert_chain": self.pki("edge.mesh.test.crt"),
                                "private_key": self.pki("edge.mesh.test.key")}}
            cluster = {"name": "a", "endpoints": [{"address": self.addr("a", "inbound")}],
                       "tls": self.pki.client_tls("a.mesh.test", "edge-client")}
            return proxy_config(self.addr("edge", "admin"), listener, [route("to-a", "/mesh.A/", "a")], [cluster])
        if role == "a-inbound":
            listener = {"name": "inbound", "address": self.addr("a", "inbound"),
                        "tls": self.pki.server_tls("a.mesh.test")}
            cluster = {"name": "local", "endpoints": [{"address": self.addr("a", "app")}]}
            return proxy_config(self.addr("a", "admin"), listener, [route("a-v%d" % v, "/mesh.A/", "local", cap=cap)],
                                [cluster])
        if role == "a-outbound":
            listener = {"name": "outbound", "address": self.addr("a", "outbound")}
            cluster = {"name": "b", "discovery": "strict_dns", "dns_refresh": "1s",
                       "dns_resolvers": [self.addr("dns", "dns")],
                       "endpoints": [{"address": "%s:%d" % (B_NAME, self.ports["inbound"])}],
                       "tls": self.pki.client_tls(B_NAME, "a-client"),
                       "health_check": {"interval": "500ms", "timeout": "500ms", "unhealthy_threshold": 2,
                                        "healthy_threshold": 2},
                       # a replica whose calls fail in a row is ejected; a draining one must not be
                       "outlier_detection": {"consecutive_failures": 3, "base_ejection_time": "10s"}}
            return proxy_config(self.addr("a", "admin_out"), listener, [route("b-v%d" % v, "/mesh.B/", "b", cap=cap)],
                                [cluster])
        assert role == "b-inbound", role
        listener = {"name": "inbound", "address": self.addr(host, "inbound"), "tls": self.pki.server_tls(B_NAME)}
        cluster = {"name": "local", "endpoints": [{"address": self.addr(host, "app")}]}
        routes = [route("b-v%d" % v, "/mesh.B/", "local", cap=cap),
                  route("health", "/grpc.health.v1.Health/", "local", offset=False)]
        return proxy_config(self.addr(host, "admin"), listener, routes, [cluster], drain_delay="1s",
                            drain_timeout="10s")

    def publish(self, name, cfg):
        self.cms[name].publish({"grelay.yaml": json.dumps(cfg, indent=1)})  # JSON is YAML

    def proxy(self, name, host, admin_role, cfg):
        if name not in self.cms:
            self.cms[name] = ConfigMap(os.path.join(self.dir, "configmaps"), name)
            self.publish(name, cfg)
        return Proxy(name, HOSTS[host], self.ports[admin_role], self.cms[name], self.logs)

    def start_replica(self, b):
        self.apps[b] = Service("b", b, self.addr(b, "app"), self.logs)
        self.sidecars[b] = self.proxy(b + "-inbound", b, "admin", self.config("b-inbound", 1, b))

    def start(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        if taken(self.ports):
            raise RuntimeError("taken on a mesh host: %s" % " ".join(taken(self.ports)))
        self.say("certificates (a test CA) in " + self.dir)
        self.pki = Pki(os.path.join(self.dir, "pki"))
        self.dns = Dnsmasq(self.dir, HOSTS["dns"], self.ports["dns"], [(B_NAME, HOSTS[b]) for b in REPLICAS])
        for b in REPLICAS:
            self.start_replica(b)
        self.a_out = self.proxy("a-outbound", "a", "admin_out", self.config("a-outbound"))
        self.a = Service("a", "a", self.addr("a", "app"), self.logs, outbound=self.addr("a", "outbound"))
        self.a_in = self.proxy("a-inbound", "a", "admin", self.config("a-inbound"))
        self.edge = self.proxy("edge", "edge", "admin", self.config("edge"))
        for b in REPLICAS:
            self.wait_health(b, "healthy")
        if self.with_prometheus:
            self.prom = Prometheus(self.jobs(), port=self.prometheus_port)

    def jobs(self):
        return {"edge": [self.edge.admin], "a-inbound": [self.a_in.admin], "a-outbound": [self.a_out.admin],
                "b-inbound": [self.sidecars[b].admin for b in REPLICAS]}

    def proxies(self):
        return [self.edge, self.a_in, self.a_out] + [self.sidecars[b] for b in REPLICAS]

    def endpoint_of(self, b):
        return self.addr(b, "inbound")

    def health(self, b):
        e = self.a_out.endpoint(self.endpoint_of(b))
        return e and e["health"]

    def wait_health(self, b, want, seconds=30):
        """Until the outbound sidecar's /clusters gives endpoint b that health
        (want: a string, or a function of it)."""
        ok = want if callable(want) else (lambda h: h == want)
        return wait_until("%s %s in a-outbound's /clusters" % (b, want), lambda: (h := self.health(b)) and ok(h) and h,
                          seconds=seconds)

    def stop(self):
        """Everything down, callers first; grelays are checked as harness.Grelay checks them."""
        for p in [self.edge, self.a_in]:
            if p is not None and p.proc.poll() is None:
                p.term()
        if self.a is not None:
            self.a.stop()
        for p in [self.a_out] + list(self.sidecars.values()):
            if p is not None:
                p.term()
        for p in [self.edge, self.a_in, self.a_out] + list(self.sidecars.values()):
            if p is not None:
                self.problems += p.finish()
        for s in self.apps.values():
            if s.proc.poll() is None:
                s.stop()
        for x in (self.dns, self.prom):
            if x is not None:
                x.stop()
        self.edge = self.a_in = self.a_out = self.a = self.dns = self.prom = None
        self.sidecars, self.apps = {}, {}
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsH1(grpcweb_client.H1):
    """grpcweb_client's HTTP/1.1 connection, over TLS to the edge."""

    def __init__(self, host, port, ctx):
        raw = socket.create_connection((host, port), timeout=CALL_TIMEOUT)
        self.sock = ctx.wrap_socket(raw, server_hostname="edge.mesh.test")
        self.buf = b""


class Load:
    """Steady calls through the edge until stop(): grpc_clients threads with
    a grpcio channel each, web_clients threads with a keep-alive HTTP/1.1 TLS
    connection each (gRPC-Web, binary mode, as a browser's fetch sends it).
    Each thread has one call in flight at a time. self.calls: every call
    that ended, as a dict (kind, start, end, code, details, replica, and the
    deadlines A and B saw)."""

    def __init__(self, mesh, grpc_clients=2, web_clients=1, gap=0.01):
        self.mesh, self.gap = mesh, gap
        self.calls = []
        self.in_flight = 0
        self.paused = False
        self.quit = False
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._grpc_loop, daemon=True) for _ in range(grpc_clients)]
        self.threads += [threading.Thread(target=self._web_loop, daemon=True) for _ in range(web_clients)]
        for t in self.threads:
            t.start()

    def _begin(self):
        with self.cond:
            while self.paused and not self.quit:
                self.cond.wait(0.2)
            if self.quit:
                return None
            self.in_flight += 1
            return time.monotonic()

    def _end(self, kind, start, code, details="", reply=None):
        call = {"kind": kind, "start": start, "end": time.monotonic(), "code": code, "details": details}
        if reply is not None:
            r = json.loads(reply)
            call.update(replica=r["b"]["replica"], a_remaining=r["remaining"], b_remaining=r["b"]["remaining"])
        with self.cond:
            self.in_flight -= 1
            self.calls.append(call)
            self.cond.notify_all()
        time.sleep(self.gap)

    def _grpc_loop(self):
        creds = grpc.ssl_channel_credentials(open(self.mesh.pki("ca.crt"), "rb").read())
        body = json.dumps({"delay_ms": DELAY_MS}).encode()
        with grpc.secure_channel(self.mesh.addr("edge", "edge"), creds,
                                 options=[("grpc.ssl_target_name_override", "edge.mesh.test")]) as ch:
            call = ch.unary_unary("/mesh.A/Call")
            while (start := self._begin()) is not None:
                try:
                    self._end("grpc", start, "OK", reply=call(body, timeout=CALL_TIMEOUT))
                except grpc.RpcError as e:
                    self._end("grpc", start, e.code().name, e.details())

    def _web_loop(self):
        ctx = ssl.create_default_context(cafile=self.mesh.pki("ca.crt"))
        ctx.set_alpn_protocols(["http/1.1"])
        host, port = HOSTS["edge"], self.mesh.ports["edge"]
        body = grpcweb_client.frame(json.dumps({"delay_ms": DELAY_MS}).encode())
        headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1"),
                   ("grpc-timeout", "%dm" % (CALL_TIMEOUT * 1000))]
        conn = None
        while (start := self._begin()) is not None:
            try:
                if conn is None:
                    conn = TlsH1(host, port, ctx)
                conn.request("/mesh.A/Call", body, headers)
                status, h, raw = conn.read_response(CALL_TIMEOUT)
                msgs, trailers = grpcweb_client.parse_frames(raw)
                trailers = trailers or h  # trailers-only: the status is in the headers
                code = grpc.StatusCode.OK.name
                for c in grpc.StatusCode:
                    if str(c.value[0]) == trailers.get("grpc-status"):
                        code = c.name
                if status != 200 or code != "OK" or len(msgs) != 1:
                    self._end("web", start, code if status == 200 else "HTTP_%d" % status,
                              trailers.get("grpc-message", ""))
                else:
                    self._end("web", start, "OK", reply=msgs[0])
                if h.get("connection") == "close":
                    conn.close()
                    conn = None
            except (OSError, ConnectionError, ValueError) as e:
                self._end("web", start, "CONNECTION", repr(e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def pause(self, seconds=30):
        """No new call begins until resume(); returns once none is in flight."""
        with self.cond:
            self.paused = True
            deadline = time.monotonic() + seconds
            while self.in_flight and time.monotonic() < deadline:
                self.cond.wait(0.2)
            assert self.in_flight == 0, "calls still in flight after %ds" % seconds

    def resume(self):
        with self.cond:
            self.paused = False
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.calls), self.in_flight

    def started(self, t0, t1=float("inf")):
        """The calls that began in [t0, t1) and have ended."""
        return [c for c in self.snapshot()[0] if t0 <= c["start"] < t1]

    def wait_calls(self, t0, n, seconds=60, **match):
        """Until n calls begun after t0 (with those values) have ended; they."""
        def enough():
            got = [c for c in self.started(t0) if all(c.get(k) == v for k, v in match.items())]
            return got if len(got) >= n else None
        return wait_until("%d calls %s after the mark" % (n, match or ""), enough, seconds=seconds)

    def stop(self):
        with self.cond:
            self.quit = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(CALL_TIMEOUT + 5)


def failed(calls):
    return [c for c in calls if c["code"] != "OK"]


# The scenarios, in order. Each returns what it saw; test_mesh.py asserts
# on it, main() prints it.

def hop_counts(mesh, load):
    """Load paused, every admin scraped after the pause: Prometheus' count of
    calls at each hop, and at each B replica (as the outbound sidecar counts
    its attempts, and as the replica's inbound sidecar counts its calls),
    beside the clients' own count."""
    load.pause()
    try:
        after = time.time()
        for p in mesh.proxies():
            if not p.killed:
                mesh.prom.wait_scraped(p.admin, after)
        q = mesh.prom.query
        hops = {dict(k)["job"]: v for k, v in
                q('sum by (job) (grelay_requests_total{grpc_service=~"mesh.A|mesh.B"})').items()}
        codes = {(dict(k)["job"], dict(k)["grpc_code"]): v for k, v in
                 q('sum by (job, grpc_code) (grelay_requests_total{grpc_service=~"mesh.A|mesh.B"})').items()}
        attempts = {dict(k)["endpoint"].split(":")[0]: v for k, v in
                    q('sum by (endpoint) (grelay_upstream_requests_total{job="a-outbound", cluster="b"})').items()}
        served = {dict(k)["instance"].split(":")[0]: v for k, v in
                  q('sum by (instance) (grelay_requests_total{job="b-inbound", grpc_service="mesh.B"})').items()}
        calls = load.snapshot()[0]
    finally:
        load.resume()
    return {"hops": hops, "codes": codes, "attempts": attempts, "served": served, "clients": len(calls),
            "client_failures": len(failed(calls))}


def rolling_restart(mesh, load, say=lambda text: None):
    """Each B replica in turn: SIGTERM to the replica (its health answer
    turns NOT_SERVING) and to its sidecar (drain_delay 1s, then GOAWAY, its
    calls finish); the outbound sidecar's checks see it unhealthy; the
    replica stops; both start again; the next one only once the outbound
    sidecar's health checks pass and the replica serves calls again."""
    t0 = time.monotonic()
    steps = []
    for b in REPLICAS:
        mark = time.monotonic()
        mesh.apps[b].term()
        mesh.sidecars[b].term()
        seen = mesh.wait_health(b, lambda h: h != "healthy")
        mesh.problems += mesh.sidecars[b].finish()
        drained = [line for line in mesh.sidecars[b].log().splitlines() if "main: drained in" in line][-1:]
        mesh.apps[b].stop()
        say("  %s: the outbound sidecar saw it %s; its sidecar %s; restarting" %
            (b, seen, drained[0].split("main: ", 1)[1] if drained else "did not say it drained"))
        mesh.start_replica(b)
        mesh.wait_health(b, "healthy")
        back = load.wait_calls(time.monotonic(), 1, replica=b)
        steps.append({"replica": b, "seen": seen, "drained": drained, "seconds": round(time.monotonic() - mark, 2)})
        say("  %s: health checks pass, it serves again (%.1fs)" % (b, time.monotonic() - mark))
        assert back
    t1 = time.monotonic()
    return {"steps": steps, "calls": load.started(t0, t1)}


def config_change(mesh, load, say=lambda text: None):
    """A new ConfigMap (routes renamed -v2, max_grpc_timeout caps) pushed to
    every sidecar by a ..data swap; each reloads through watch_config."""
    sidecars = [mesh.a_in, mesh.a_out] + [mesh.sidecars[b] for b in REPLICAS]
    before = {p.name: p.metric("grelay_config_reloads_total", result="success") for p in sidecars}
    t0 = time.monotonic()
    mesh.publish("a-inbound", mesh.config("a-inbound", 2))
    mesh.publish("a-outbound", mesh.config("a-outbound", 2))
    for b in REPLICAS:
        mesh.publish(b + "-inbound", mesh.config("b-inbound", 2, b))
    for p in sidecars:
        wait_until(p.name + " reloaded", lambda: p.metric("grelay_config_reloads_total", result="success")
                   > before[p.name])
    reloaded = time.monotonic()
    say("  every sidecar reloaded %.2fs after the swap" % (reloaded - t0))
    after = load.wait_calls(reloaded, 30)
    routes = {p.name: p.metric("grelay_requests_total", route=("a-v2" if p is mesh.a_in else "b-v2"))
              for p in sidecars}
    return {"calls": load.started(t0, time.monotonic()), "after": after, "routes_v2": routes,
            "failed_reloads": {p.name: p.metric("grelay_config_reloads_total", result="failure") for p in sidecars}}


def kill_replica(mesh, load, b="b3", say=lambda text: None):
    """SIGKILL of a replica's sidecar (and of the replica): the calls in
    flight on it fail; connect failures eject it at once (passive ejection)
    and the health checks mark it unhealthy; no call fails after that."""
    in_flight = load.snapshot()[1]
    t_kill = time.monotonic()
    mesh.sidecars[b].kill()
    mesh.apps[b].kill()
    health = mesh.wait_health(b, lambda h: h != "healthy")
    t_out = time.monotonic()
    attempts_out = mesh.a_out.metric("grelay_upstream_requests_total", endpoint=mesh.endpoint_of(b))
    say("  %s killed; the outbound sidecar says %s after %.2fs" % (b, health, t_out - t_kill))
    after = load.wait_calls(t_out, 40)
    attempts_end = mesh.a_out.metric("grelay_upstream_requests_total", endpoint=mesh.endpoint_of(b))
    around = [c for c in load.snapshot()[0] if c["end"] >= t_kill and c["start"] < t_out]
    return {"in_flight": in_flight, "health": health, "around": around,
            "after": after, "attempts_at_out": attempts_out, "attempts_end": attempts_end,
            "t_kill": t_kill, "t_out": t_out}


# scripts/mesh.sh: the same, told to a person.

def tour(mesh, say):
    """What runs where, and where to look."""
    p = mesh.ports
    say("== the mesh in a box: one loopback address per host")
    say("   edge          https://%s:%d  TLS, gRPC and gRPC-Web     live view http://%s/"
        % (HOSTS["edge"], p["edge"], mesh.edge.admin))
    say("   service A     %s  (grpcio)" % mesh.addr("a", "app"))
    say("     inbound     %s  mTLS from the edge           live view http://%s/" % (mesh.addr("a", "inbound"),
                                                                                    mesh.a_in.admin))
    say("     outbound    %s  -> %s:%d, mTLS     live view http://%s/" % (mesh.addr("a", "outbound"), B_NAME,
                                                                          p["inbound"], mesh.a_out.admin))
    for b in REPLICAS:
        say("   service %s    %s  (grpcio), inbound %s   live view http://%s/"
            % (b.upper(), mesh.addr(b, "app"), mesh.addr(b, "inbound"), mesh.sidecars[b].admin))
    say("   dnsmasq       %s  answers %s with the three B hosts" % (mesh.addr("dns", "dns"), B_NAME))
    if mesh.prom:
        say("   Prometheus    %s/graph  scrapes every admin each second" % mesh.prom.url)
        say("     try: sum by (job) (rate(grelay_requests_total{grpc_service=~\"mesh.A|mesh.B\"}[30s]))")
        say("          sum by (endpoint, grpc_code) (rate(grelay_upstream_requests_total{job=\"a-outbound\"}[30s]))")
    say("   configs (laid out as Kubernetes lays out a ConfigMap): %s/configmaps/<name>/grelay.yaml"
        % mesh.dir)
    say("   logs: %s/logs/<name>.log" % mesh.dir)


def scenarios(mesh, load, say):
    """The five steps, each with what it showed; False when one went wrong."""
    say("== load: 2 gRPC clients and 1 gRPC-Web client call /mesh.A/Call through the edge (10 s deadline)")
    calls = load.wait_calls(time.monotonic(), 10)
    c = calls[-1]
    say("== 1. deadlines: the client gave 10 s; A saw %.3f s, B saw %.3f s (each grelay sends what is left "
        "less its route's grpc_timeout_offset, %d ms)" % (c["a_remaining"], c["b_remaining"], OFFSET_MS))
    load.wait_calls(time.monotonic(), 20)
    r = hop_counts(mesh, load)
    say("== 2. Prometheus, load paused: calls per hop %s; the clients made %d" %
        (", ".join("%s %d" % (h, r["hops"].get(h, 0)) for h in HOPS), r["clients"]))
    say("   per replica, sent by A's outbound sidecar %s; received by their sidecars %s" %
        (dict(sorted(r["attempts"].items())), dict(sorted(r["served"].items()))))
    ok = r["hops"] == {h: r["clients"] for h in HOPS} and r["attempts"] == r["served"]
    say("== 3. rolling restart of B (SIGTERM: NOT_SERVING, drain, restart, health checks pass, next)")
    r = rolling_restart(mesh, load, say)
    say("   %d calls meanwhile, %d failed" % (len(r["calls"]), len(failed(r["calls"]))))
    ok = ok and not failed(r["calls"])
    say("== 4. a new ConfigMap (..data swapped) for every sidecar: routes renamed, max_grpc_timeout capped")
    r = config_change(mesh, load, say)
    c = r["after"][-1]
    say("   %d calls meanwhile, %d failed; now A sees %.3f s and B %.3f s (caps %s)" % (
        len(r["calls"]), len(failed(r["calls"])), c["a_remaining"], c["b_remaining"], CAPS_V2))
    ok = ok and not failed(r["calls"])
    say("== 5. kill b3 hard (SIGKILL of its sidecar and its replica)")
    r = kill_replica(mesh, load, "b3", say)
    lost = failed(r["around"])
    say("   %d failed (%s); %d calls since, %d failed" % (
        len(lost), "; ".join(sorted({c["details"] for c in lost})) or "no call was in flight on it",
        len(r["after"]), len(failed(r["after"]))))
    ok = ok and not failed(r["after"])
    r = hop_counts(mesh, load)
    say("== 6. Prometheus at the end: calls per hop %s (b3's sidecar is gone, restarted ones count from 0); "
        "the clients made %d, %d failed" % (", ".join("%s %d" % (h, r["hops"].get(h, 0)) for h in HOPS),
                                           r["clients"], r["client_failures"]))
    return ok


def main(argv):
    """--once: the steps, then stop. --free-ports: any free ports instead of
    FIXED_PORTS (the test runs the script so, beside its own mesh)."""
    once = "--once" in argv
    say = lambda text: print(text, flush=True)  # noqa: E731
    ports = pick_ports() if "--free-ports" in argv else dict(FIXED_PORTS)
    if taken(ports):
        say("taken (another mesh running?): %s" % " ".join(taken(ports)))
        return 1
    prom_port = 9090 if "--free-ports" not in argv and not taken({"prometheus": 9090}, ["127.0.0.1"]) else None
    mesh = Mesh(ports, prometheus_port=prom_port, say=say)
    try:
        code = run(mesh, once, say)
    finally:
        mesh.stop()
    for problem in mesh.problems:
        say("== " + problem)
    return 1 if mesh.problems else code


def run(mesh, once, say):
    """main's part with the mesh: its exit code."""
    load = None
    try:
        mesh.start()
        tour(mesh, say)
        load = Load(mesh)
        ok = scenarios(mesh, load, say)
        say("== %s" % ("every step as expected" if ok else "a step went wrong: see above and the logs"))
        if once:
            return 0 if ok else 1
        mesh.start_replica("b3")
        load.gap = 0.2
        say("== b3 is back; the clients go on at a slow pace. Open the live views above. Ctrl-C stops everything.")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, AssertionError) as e:
        say("== failed: %s" % e)
        for p in mesh.proxies():
            if p is not None:
                say("-- %s (last lines)\n%s" % (p.name, p.log()[-800:]))
        return 1
    finally:
        if load is not None:
            load.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
