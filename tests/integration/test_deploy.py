"""The deployment files, checked without a cluster (docs/deployment.md): the Kubernetes manifests
parse and carry what the docs promise (probes on real admin paths at the admin port of the
embedded grelay config, resources, a grace period above the drain, a PodDisruptionBudget, a
headless Service behind every strict_dns cluster, TLS files from a mounted Secret), every embedded
config passes `grelay --check`; the systemd unit passes `systemd-analyze verify`; the Dockerfile
agrees with install-deps.sh and its default config; the man page has every option of --help."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest
import yaml

from harness import GRELAY, ROOT, Backend, free_port, simple_config
from test_failures import wait_for
from test_tls import make_ca, make_cert

K8S = os.path.join(ROOT, "deploy", "kubernetes")
UNIT = os.path.join(ROOT, "deploy", "systemd", "grelay.service")
VERSION = re.search(r'#define GRELAY_VERSION "([^"]+)"', open(os.path.join(ROOT, "include", "grelay",
                                                                           "common.h")).read()).group(1)


def duration_s(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s|ms|us)", str(text))
    assert m, text
    return float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[m.group(2)]


def admin_paths():
    """The paths src/admin_endpoints.c serves on GET."""
    src = open(os.path.join(ROOT, "src", "admin_endpoints.c")).read()
    return set(re.findall(r'admin_route\(e->admin, "GET", "([^"]+)"', src))


def manifests():
    objs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path) as f:
            objs += [(os.path.basename(path), o) for o in yaml.safe_load_all(f) if o is not None]
    return objs


def by_kind(kind):
    return [o for _, o in manifests() if o["kind"] == kind]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def grelay_containers(deployment):
    """(container, its config's text, the config's path) for each grelay container."""
    spec = deployment["spec"]["template"]["spec"]
    maps = {c["metadata"]["name"]: c["data"] for c in by_kind("ConfigMap")}
    out = []
    for c in spec["containers"]:
        if not c["image"].startswith("grelay:"):
            continue
        path = c["args"][c["args"].index("--config") + 1]
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == os.path.dirname(path))
        assert "subPath" not in mount, "a subPath mount is never updated: watch_config would not see a change"
        vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        out.append((c, maps[vol["configMap"]["name"]][os.path.basename(path)], path))
    return out


def deployments_with_grelay():
    return [d for d in by_kind("Deployment") if grelay_containers(d)]


def test_every_object_parses_and_is_named():
    objs = manifests()
    kinds = {o["kind"] for _, o in objs}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds, kinds
    for name, o in objs:
        assert o.get("apiVersion") and o.get("metadata", {}).get("name"), (name, o)


@pytest.mark.parametrize("deployment", deployments_with_grelay(), ids=lambda d: d["metadata"]["name"])
def test_grelay_containers_have_probes_resources_and_a_grace_above_the_drain(deployment):
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    paths = admin_paths()
    for c, text, path in grelay_containers(deployment):
        cfg = yaml.safe_load(text)
        assert c["image"] == "grelay:" + VERSION
        assert cfg["watch_config"] is True, path
        admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, want in (("readinessProbe", "/ready"), ("livenessProbe", "/healthz")):
            get = c[probe]["httpGet"]
            assert get["path"] == want and want in paths, (c["name"], probe, get)
            assert ports.get(get["port"], get["port"]) == admin_port, (c["name"], probe, get, admin_port)
        for listener in cfg["listeners"]:
            port = int(listener["address"].rsplit(":", 1)[1])
            if not listener["address"].startswith("127."):
                assert port in ports.values(), (c["name"], listener)
        for k in ("requests", "limits"):
            assert c["resources"][k]["memory"] and c["resources"]["requests"]["cpu"], c["resources"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        drain = duration_s(cfg.get("drain_timeout", "30s")) + duration_s(cfg.get("drain_delay", "0s"))
        assert spec["terminationGracePeriodSeconds"] > drain, (spec["terminationGracePeriodSeconds"], drain)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0


# Services whose pods are described elsewhere (sidecar.yaml says where).
PODS_ELSEWHERE = {"inventory-mesh"}


def test_every_grelay_deployment_has_a_disruption_budget_and_services_select_real_ports():
    budgets = by_kind("PodDisruptionBudget")
    for d in deployments_with_grelay():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(selects(b["spec"]["selector"]["matchLabels"], labels) for b in budgets), d["metadata"]["name"]
    for s in by_kind("Service"):
        pods = [d for d in by_kind("Deployment") if selects(s["spec"]["selector"], d["spec"]["template"]["metadata"][
            "labels"])]
        if s["metadata"]["name"] in PODS_ELSEWHERE:
            assert not pods
            continue
        assert pods, s["metadata"]["name"]
        named = {p["name"] for d in pods for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports",
                                                                                                            [])}
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in named, (s["metadata"]["name"], p)


def test_every_strict_dns_cluster_is_fed_by_a_headless_service():
    headless = {"%s.default.svc.cluster.local:%d" % (s["metadata"]["name"], p["port"])
                for s in by_kind("Service") if s["spec"].get("clusterIP") == "None" for p in s["spec"]["ports"]}
    seen = 0
    for d in deployments_with_grelay():
        for _, text, _ in grelay_containers(d):
            for cl in yaml.safe_load(text)["clusters"]:
                if cl.get("discovery") == "strict_dns":
                    seen += 1
                    for e in cl["endpoints"]:
                        assert e["address"] in headless, (e["address"], headless)
    assert seen >= 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_cert(d, "tls", "ca", ["DNS:grelay.test"])
    return d


@pytest.mark.parametrize("deployment", deployments_with_grelay(), ids=lambda d: d["metadata"]["name"])
def test_embedded_configs_pass_check_with_their_secret_mounted(deployment, pki, tmp_path):
    """TLS files are named under a mounted Secret's path; with test certificates there, --check passes."""
    spec = deployment["spec"]["template"]["spec"]
    secrets = {v["name"] for v in spec["volumes"] if "secret" in v}
    for c, text, path in grelay_containers(deployment):
        mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in secrets]
        for f in re.findall(r"(?:cert_chain|private_key|client_ca|ca): (\S+)", text):
            assert os.path.dirname(f) in mounts, (c["name"], f, mounts)
        for m in mounts:
            for key, real in (("tls.crt", "tls.crt"), ("tls.key", "tls.key"), ("ca.crt", "ca.crt")):
                text = text.replace(m + "/" + key, os.path.join(pki, real))
        cfg = tmp_path / os.path.basename(path)
        cfg.write_text(text)
        r = subprocess.run([GRELAY, "--check", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "OK" in r.stdout, (c["name"], r.stderr)


def test_dockerfile_matches_install_deps_and_its_default_config():
    docker = open(os.path.join(ROOT, "docker", "Dockerfile")).read()
    deps = open(os.path.join(ROOT, "scripts", "install-deps.sh")).read()
    build = re.search(r"^build=\(([^)]*)\)", deps, re.M).group(1).split()
    stage = re.search(r"AS build-deps\n(.*?)\n\n", docker, re.S).group(1)
    listed = re.search(r"--no-install-recommends(.*?)&&", stage.replace("\\\n", " "), re.S).group(1).split()
    assert sorted(listed) == sorted(build)
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in docker and "STOPSIGNAL SIGTERM" in docker
    assert re.search(r"^USER 10001", docker, re.M) and re.search(r"^HEALTHCHECK .*\n.*/ready", docker, re.M)
    cfg_path = os.path.join(ROOT, "docker", "grelay.yaml")
    cfg = yaml.safe_load(open(cfg_path))
    assert cfg["admin"]["address"].endswith(":" + re.search(r"^ARG ADMIN_PORT=(\d+)", docker, re.M).group(1))
    assert cfg["listeners"][0]["address"].endswith(":" + re.search(r"^ARG LISTEN_PORT=(\d+)", docker,
                                                                   re.M).group(1))
    r = subprocess.run([GRELAY, "--check", "--config", cfg_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def unit_settings():
    out = {}
    for line in open(UNIT):
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_systemd_unit_verifies_and_waits_longer_than_the_drain(tmp_path):
    """systemd-analyze verify checks the ExecStart binary exists: a copy names the built one."""
    assert shutil.which("systemd-analyze"), "systemd-analyze (Debian: systemd) is missing"
    unit = tmp_path / "grelay.service"
    unit.write_text(open(UNIT).read().replace("/usr/local/bin/grelay", os.path.abspath(GRELAY)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--man=no", "--threshold=20", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "exposure above 2.0:\n" + r.stdout[-3000:]
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["all"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and s["KillSignal"] == ["SIGTERM"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert int(s["TimeoutStopSec"][0]) > 30, "the default drain_timeout is 30s"
    assert "SIGUSR2" in open(UNIT).read() and "SIGUSR2" in open(os.path.join(ROOT, "docs", "deployment.md")).read()


def test_man_page_has_every_option_and_signal_of_help():
    help_text = subprocess.run([GRELAY, "--help"], capture_output=True, text=True, timeout=10).stdout
    page = open(os.path.join(ROOT, "docs", "grelay.1")).read()
    plain = page.replace("\\-", "-")
    options = set(re.findall(r"--[a-z][a-z-]+", help_text)) | set(re.findall(r"(?<![\w-])-[a-zA-Z]\b", help_text))
    assert {"--config", "--check", "--log-level", "--version", "--help", "-c", "-l", "-V", "-h"} <= options
    for opt in options:
        assert opt in plain, opt
    for sig in set(re.findall(r"SIG[A-Z0-9]+", help_text)):
        assert sig in plain, sig
    assert '"grelay %s"' % VERSION in page
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", os.path.join(ROOT, "docs", "grelay.1")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(["man", "-l", os.path.join(ROOT, "docs", "grelay.1")], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""})
    assert r.returncode == 0 and "binary upgrade" in r.stdout.lower(), r.stderr


def syscall_set(group, cache={}):
    """The system calls of a systemd syscall group, nested groups expanded."""
    if group not in cache:
        out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group], capture_output=True,
                             text=True, timeout=30).stdout
        names = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if line and not line.startswith("#"):
                names |= syscall_set(line) if line.startswith("@") else {line}
        cache[group] = names
    return cache[group]


def test_the_units_sandbox_allows_what_grelay_does(tmp_path):
    """No systemd runs here, so the unit's SystemCallFilter, RestrictAddressFamilies and
    MemoryDenyWriteExecute are checked against what grelay really does under strace: start
    (sd_notify), a call, /metrics, a SIGHUP reload, a SIGUSR2 upgrade, a call to the new process,
    the SIGTERM drain. A system call outside the filter would kill it (SIGSYS) under systemd."""
    assert shutil.which("strace"), "strace is missing"
    s = unit_settings()
    allowed = set()
    for f in s["SystemCallFilter"]:
        groups = f.split()
        if groups[0].startswith("~"):
            allowed -= set().union(*(syscall_set(g.lstrip("~")) for g in groups))
        else:
            allowed |= set().union(*(syscall_set(g) for g in groups))
    families = {"AF_" + f[3:] if f.startswith("AF_") else f for f in s["RestrictAddressFamilies"][0].split()}
    b = Backend("sandbox-backend")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        port, admin = free_port(), free_port()
        cfg = simple_config(port, [b.addr])
        cfg.update(admin={"address": "127.0.0.1:%d" % admin}, watch_config=True,
                   access_log={"path": str(tmp_path / "access.log")})
        cfg["clusters"].append({"name": "dns", "discovery": "strict_dns", "dns_refresh": "1s",
                                "endpoints": [{"address": "localhost:%d" % b.port}]})
        path, trace, log = tmp_path / "grelay.yaml", tmp_path / "trace", tmp_path / "stderr"
        path.write_text(json.dumps(cfg))
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
               "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=66"}  # LSan cannot run under ptrace
        with open(log, "wb") as err:
            st = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), GRELAY, "--config", str(path)],
                                  stderr=err, env=env)
        try:
            assert notify.recv(256) == b"READY=1"

            def call():
                with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
                    assert ch.unary_unary("/test.Echo/Unary")(b"sandboxed", timeout=10) == b"sandboxed"
            call()
            urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=10).read()
            first = int(open(trace).readline().split()[0])
            os.kill(first, signal.SIGHUP)
            assert wait_for(lambda: "reload: done" in log.read_text(), 20), log.read_text()
            os.kill(first, signal.SIGUSR2)
            newer = int(wait_for(lambda: re.search(rb"MAINPID=(\d+)", notify.recv(256)), 20).group(1))
            assert wait_for(lambda: "drained in" in log.read_text(), 20), log.read_text()  # the old process
            call()
            os.kill(newer, signal.SIGTERM)
            assert st.wait(60) == 0, log.read_text()[-3000:]
        finally:
            if st.poll() is None:
                st.kill()
                st.wait(10)
    finally:
        notify.close()
        b.stop()
    text = trace.read_text()
    used = set(re.findall(r"^\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]", text, re.M)) - {"exit", "killed"}
    assert {"execve", "accept4", "sendto"} <= used, sorted(used)
    assert used <= allowed, "outside SystemCallFilter: %s" % sorted(used - allowed)
    opened = set(re.findall(r"^\d+ +socket\((AF_[A-Z0-9]+)", text, re.M))
    assert opened and opened <= families, "outside RestrictAddressFamilies: %s" % sorted(opened - families)
    wx = re.findall(r"^\d+ +(?:mmap|mprotect)\(.*PROT_WRITE\|PROT_EXEC.*", text, re.M)
    assert not wx, "MemoryDenyWriteExecute would refuse: %s" % wx[:3]
    assert "drained in" in log.read_text() and "+++ killed by" not in text


def embedded(deployment_name, container):
    d = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == deployment_name)
    return yaml.safe_load(next(t for c, t, _ in grelay_containers(d) if c["name"] == container))


def mesh_cert(d, name, sans):
    """A certificate for both ends of mTLS (serverAuth and clientAuth), as the Secrets' comments ask."""
    def run(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True, timeout=60)
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
        name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" % ",".join("DNS:" + s for s in sans))
    run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext")
    return {"/etc/grelay-tls/tls.crt": os.path.join(d, name + ".crt"),
            "/etc/grelay-tls/tls.key": os.path.join(d, name + ".key"),
            "/etc/grelay-tls/ca.crt": os.path.join(d, "ca.crt")}


def on_loopback(cfg, files, endpoints):
    """The manifest's config, run here: listeners and admin on free loopback ports, the Secret's
    files replaced by test ones, each DNS endpoint (a Service name) by a loopback address. Everything
    else (routes, TLS settings, SNI, timeouts, watch_config) stays as the manifest has it."""
    text = json.dumps(cfg)
    for k, v in files.items():
        text = text.replace(k, v)
    cfg = json.loads(text)
    # One worker: under ASan glibc's malloc is never initialised, and two workers calling
    # malloc_trim for the first time at once race in its ptmalloc_init (a SEGV in mtrim seen here
    # once in five runs of the edge's workers: 2; a release build initialises it at the first malloc).
    cfg["workers"] = 1
    cfg["admin"]["address"] = "127.0.0.1:%d" % free_port()
    for listener in cfg["listeners"]:
        listener["address"] = "127.0.0.1:%d" % free_port()
    for cl in cfg["clusters"]:
        for e in cl["endpoints"]:
            e["address"] = endpoints.get(e["address"], e["address"])
    return cfg


class App:
    """The application behind a sidecar or the edge: a grpcio server that answers any method with
    its name, the request, and what it was called on."""

    def __init__(self, name):
        from concurrent import futures
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))

        class Any(grpc.GenericRpcHandler):
            def service(self, details):
                def answer(request, context):
                    context.send_initial_metadata([("x-app", name)])
                    return b"%s %s %s" % (name.encode(), details.method.encode(), request)
                return grpc.unary_unary_rpc_method_handler(answer)
        self.server.add_generic_rpc_handlers((Any(),))
        self.server.add_insecure_port("127.0.0.1:%d" % self.port)
        self.server.start()

    def stop(self):
        self.server.stop(0)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def get(admin_address, path):
    try:
        with urllib.request.urlopen("http://%s%s" % (admin_address, path), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_sidecar_pods_configs_carry_a_call_over_mutual_tls(tmp_path, grelay_factory):
    """orders' app -> orders' outbound sidecar (outbound.yaml) -> mTLS -> inventory's inbound sidecar
    (inbound.yaml: inventory's pods run the same one) -> inventory's app; a client without the mesh's
    certificate is refused by the inbound sidecar's handshake."""
    d = str(tmp_path)
    make_ca(d, "ca")
    files = mesh_cert(d, "mesh", ["inventory-mesh.default.svc.cluster.local", "orders-mesh.default.svc.cluster.local"])
    app = App("inventory")
    try:
        inbound = on_loopback(embedded("orders", "grelay-inbound"), files,
                              {"127.0.0.1:50051": "127.0.0.1:%d" % app.port})
        in_port = port_of(inbound["listeners"][0]["address"])
        g_in = grelay_factory(inbound, in_port)
        outbound = on_loopback(embedded("orders", "grelay-outbound"), files,
                               {"inventory-mesh.default.svc.cluster.local:15443": "localhost:%d" % in_port})
        out_port = port_of(outbound["listeners"][0]["address"])
        g_out = grelay_factory(outbound, out_port)
        for cfg in (inbound, outbound):
            assert get(cfg["admin"]["address"], "/ready") == 200 and get(cfg["admin"]["address"], "/healthz") == 200
        with grpc.insecure_channel("127.0.0.1:%d" % out_port) as ch:
            fn = ch.unary_unary("/inventory.Stock/Reserve")
            # strict_dns finds localhost at the first resolution; wait_for_ready rides over that moment.
            reply, call = fn.with_call(b"sku-42", timeout=10, wait_for_ready=True)
        assert reply == b"inventory /inventory.Stock/Reserve sku-42"
        assert dict(call.initial_metadata())["x-app"] == "inventory"
        ca = open(files["/etc/grelay-tls/ca.crt"], "rb").read()
        creds = grpc.ssl_channel_credentials(ca)  # no client certificate
        opts = [("grpc.ssl_target_name_override", "inventory-mesh.default.svc.cluster.local")]
        with grpc.secure_channel("127.0.0.1:%d" % in_port, creds, options=opts) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/inventory.Stock/Reserve")(b"x", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        g_out.stop()
        g_in.stop()
    finally:
        app.stop()


def test_the_edge_config_serves_grpc_and_grpc_web_over_tls(tmp_path, grelay_factory):
    """edge.yaml's config in front of the greeter app (its strict_dns name on loopback): a native
    gRPC call over TLS, and a gRPC-Web call over TLS and HTTP/1.1 from the allowed browser origin."""
    import http.client
    import ssl
    import struct
    from grpcweb_client import parse_frames
    d = str(tmp_path)
    make_ca(d, "ca")
    files = mesh_cert(d, "edge", ["api.example.com"])
    app = App("greeter")
    try:
        cfg = on_loopback(embedded("grelay-edge", "grelay"), files,
                          {"greeter-headless.default.svc.cluster.local:50051": "localhost:%d" % app.port})
        cfg["access_log"]["path"] = str(tmp_path / "access.log")  # stdout is the test's
        port = port_of(cfg["listeners"][0]["address"])
        g = grelay_factory(cfg, port)
        assert get(cfg["admin"]["address"], "/ready") == 200
        ca = open(files["/etc/grelay-tls/ca.crt"], "rb").read()
        opts = [("grpc.ssl_target_name_override", "api.example.com")]
        with grpc.secure_channel("127.0.0.1:%d" % port, grpc.ssl_channel_credentials(ca), options=opts) as ch:
            reply = ch.unary_unary("/demo.Greeter/SayHello")(b"native", timeout=10, wait_for_ready=True)
        assert reply == b"greeter /demo.Greeter/SayHello native"
        ctx = ssl.create_default_context(cafile=files["/etc/grelay-tls/ca.crt"])
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.check_hostname = False  # the certificate names api.example.com (verified above), we dial 127.0.0.1
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        body = b"\x00" + struct.pack(">I", 3) + b"web"
        conn.request("POST", "/demo.Greeter/SayHello", body, {
            "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "host": "api.example.com",
            "origin": "https://app.example.com"})
        r = conn.getresponse()
        data = r.read()
        assert r.status == 200 and r.getheader("access-control-allow-origin") == "https://app.example.com"
        msgs, trailers = parse_frames(data)
        assert msgs == [b"greeter /demo.Greeter/SayHello web"] and trailers["grpc-status"] == "0", (msgs, trailers)
        conn.close()
        g.stop()
        lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
        assert [(x["protocol"], x["grpc_code"], x["cluster"]) for x in lines] == [
            ("h2", "OK", "greeter"), ("grpc-web", "OK", "greeter")], lines
    finally:
        app.stop()
