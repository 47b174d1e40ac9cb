"""TLS on both sides, with certificates this test makes (openssl CLI, a test CA)."""
import base64
import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from harness import Backend, free_port, simple_config


def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", name + ".key", "-out", name + ".crt", "-subj", "/CN=" + name, "-days", "2", cwd=d)


def make_cert(d, name, ca, sans, client=False):
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
        name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=%s\n" % (",".join(sans), "clientAuth" if client else "serverAuth"))
    run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
        "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "grelay.test", "ca", ["DNS:grelay.test", "IP:127.0.0.1"])
    make_cert(d, "second.test", "ca", ["DNS:second.test"])
    make_cert(d, "backend.internal", "ca", ["DNS:backend.internal"])
    make_cert(d, "wrong.internal", "ca", ["DNS:wrong.internal"])
    make_cert(d, "client", "ca", ["DNS:client"], client=True)
    make_cert(d, "stranger", "other-ca", ["DNS:stranger"], client=True)
    return lambda name: os.path.join(d, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tls_backend(pki, name="tls-backend", cert="backend.internal", client_ca=None):
    args = [pki(cert + ".crt"), pki(cert + ".key")] + ([pki(client_ca)] if client_ca else [])
    b = Backend(name, tls=args)
    b.tls_channel = lambda: grpc.secure_channel(b.addr, grpc.ssl_channel_credentials(
        read(pki("ca.crt")), read(pki("client.key")), read(pki("client.crt"))),
        options=[("grpc.ssl_target_name_override", cert)])
    return b


def config(port, pki, backend, listener_tls=None, cluster_tls=None, grpc_web=False):
    cfg = simple_config(port, [backend.addr], routes=[{"match": {"prefix": "/"}, "cluster": "backend"}])
    lt = {"cert_chain": pki("grelay.test.crt"), "private_key": pki("grelay.test.key")}
    lt.update(listener_tls or {})
    cfg["listeners"][0]["tls"] = lt
    if grpc_web:
        cfg["listeners"][0]["grpc_web"] = True
    ct = {"sni": "backend.internal", "ca": pki("ca.crt")}
    ct.update(cluster_tls or {})
    cfg["clusters"][0]["tls"] = ct
    return cfg


def channel(g, pki, client_cert=None):
    key = read(pki(client_cert + ".key")) if client_cert else None
    crt = read(pki(client_cert + ".crt")) if client_cert else None
    creds = grpc.ssl_channel_credentials(read(pki("ca.crt")), key, crt)
    return grpc.secure_channel(g.addr, creds, options=[("grpc.ssl_target_name_override", "grelay.test")])


@pytest.fixture(scope="module")
def backend(pki):
    b = tls_backend(pki)
    yield b
    b.stop()


def test_grpc_over_tls_to_a_tls_backend(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend), port)
    with channel(g, pki) as ch:
        reply, call = ch.unary_unary("/test.Echo/Unary").with_call(b"secret", timeout=10)
    assert reply == b"secret"
    assert dict(call.initial_metadata())["x-backend"] == "tls-backend"


def test_mtls_listener_refuses_a_client_without_a_certificate(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend, {"client_ca": pki("ca.crt"), "require_client_cert": True}), port)
    with channel(g, pki) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with channel(g, pki, "stranger") as ch:  # a certificate from a CA grelay does not trust
        with pytest.raises(grpc.RpcError):
            ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
    with channel(g, pki, "client") as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"with cert", timeout=10) == b"with cert"


def test_mtls_to_a_backend_that_requires_client_certificates(pki, grelay_factory):
    b = tls_backend(pki, "strict-backend", client_ca="ca.crt")
    try:
        port = free_port()
        g = grelay_factory(config(port, pki, b, cluster_tls={"cert_chain": pki("client.crt"),
                                                              "private_key": pki("client.key")}), port)
        with channel(g, pki) as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"mutual", timeout=10) == b"mutual"
        port2 = free_port()
        g2 = grelay_factory(config(port2, pki, b), port2)  # no client certificate
        with channel(g2, pki) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "TLS" in e.value.details()
    finally:
        b.stop()


def test_a_backend_with_a_certificate_for_another_name_is_rejected(pki, grelay_factory):
    b = tls_backend(pki, "impostor", cert="wrong.internal")
    try:
        port = free_port()
        g = grelay_factory(config(port, pki, b), port)
        with channel(g, pki) as ch:
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as e:
                    ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "certificate verify failed: hostname mismatch" in e.value.details().lower()
        assert g.log().count("certificate verify failed") == 1  # logged once, not per call
    finally:
        b.stop()


def test_alpn_http11_serves_grpc_web(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend, grpc_web=True), port)
    ctx = client_context(pki, ["http/1.1"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        body = base64.b64encode(b"\x00" + struct.pack(">I", 3) + b"web")
        conn.request("POST", "/test.Echo/Unary", body, {"content-type": "application/grpc-web-text"})
        resp = conn.getresponse()
        raw = resp.read()
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
    finally:
        conn.close()
    data = b"".join(base64.b64decode(raw[i:i + 4]) for i in range(0, len(raw), 4))
    assert data.startswith(b"\x00\x00\x00\x00\x03web\x80")


def client_context(pki, alpn=("h2",)):
    """A TLS client context that trusts the test CA and offers alpn."""
    ctx = ssl.create_default_context(cafile=pki("ca.crt"))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port, pki, server_name, alpn=("h2",)):
    ctx = client_context(pki, alpn)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(s, server_hostname=server_name)


def test_sni_chooses_between_certificates(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend, {"server_names": [
        {"names": ["second.test"], "cert_chain": pki("second.test.crt"), "private_key": pki("second.test.key")}]}),
        port)
    for name in ("grelay.test", "second.test"):
        s = tls_connect(port, pki, name)
        try:
            cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
            assert cn == name
        finally:
            s.close()


def test_a_client_offering_neither_protocol_is_refused(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend), port)
    with pytest.raises(ssl.SSLError) as e:
        tls_connect(port, pki, "grelay.test", alpn=("spdy/3.1",)).close()
    assert "no application protocol" in str(e.value).lower()


def test_a_stalled_handshake_times_out_and_frees_its_connection(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend, {"handshake_timeout": "300ms"}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        assert s.recv(100) == b""  # grelay gives up and closes
    finally:
        s.close()


def test_sessions_resume(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend), port)
    ctx = client_context(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # sessions are known after the handshake
    first = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="grelay.test")
    session = first.session
    first.close()
    again = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="grelay.test",
                            session=session)
    try:
        assert again.session_reused
    finally:
        again.close()


def negotiated(port, pki, version, ciphers=None):
    """The cipher a TLS client of this version (offering Python's defaults,
    or only ciphers) agrees on with the listener; an ssl.SSLError if none."""
    ctx = client_context(pki)
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="grelay.test") as s:
        return s.cipher()[0]


def test_the_default_suites_prefer_aes_128_gcm(pki, backend, grelay_factory):
    """Python's client offers AES-256-GCM first in TLS 1.3 and lists it first
    in TLS 1.2 too; the listener's own order decides: AES-128-GCM, as in
    Envoy. A TLS 1.2 client offering only a CBC cipher finds none it shares."""
    port = free_port()
    g = grelay_factory(config(port, pki, backend), port)
    assert negotiated(port, pki, ssl.TLSVersion.TLSv1_3) == "TLS_AES_128_GCM_SHA256"
    assert negotiated(port, pki, ssl.TLSVersion.TLSv1_2) == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert negotiated(port, pki, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384") == \
        "ECDHE-ECDSA-AES256-GCM-SHA384"
    with pytest.raises(ssl.SSLError):
        negotiated(port, pki, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA")
    with channel(g, pki) as ch:  # and gRPC goes through as before
        assert ch.unary_unary("/test.Echo/Unary")(b"aes128", timeout=10) == b"aes128"


def test_configured_suites_are_the_only_ones(pki, backend, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, pki, backend, {"ciphersuites": "TLS_CHACHA20_POLY1305_SHA256",
                                                   "ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305"}), port)
    assert negotiated(port, pki, ssl.TLSVersion.TLSv1_3) == "TLS_CHACHA20_POLY1305_SHA256"
    assert negotiated(port, pki, ssl.TLSVersion.TLSv1_2) == "ECDHE-ECDSA-CHACHA20-POLY1305"
    with pytest.raises(ssl.SSLError):
        negotiated(port, pki, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    with channel(g, pki) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"chacha", timeout=10) == b"chacha"


@pytest.mark.parametrize("field,value,expected", [
    ("ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_NO_SUCH_SUITE",
     "tls: ciphersuites: 'TLS_AES_128_GCM_SHA256:TLS_NO_SUCH_SUITE' is not a list of TLS 1.3 suites OpenSSL knows"),
    ("ciphersuites", "", "tls: ciphersuites: '' is not a list of TLS 1.3 suites OpenSSL knows"),
    ("ciphers", "NO-SUCH-CIPHER", "tls: ciphers: no cipher OpenSSL knows in 'NO-SUCH-CIPHER'"),
])
def test_unknown_suites_are_a_config_error(pki, tmp_path, field, value, expected):
    """OpenSSL itself would skip a TLS 1.3 name it does not know, and an
    empty list would turn TLS 1.3 off without a word."""
    from harness import GRELAY
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n  - name: edge\n    address: 127.0.0.1:1\n    tls:\n"
                    "      cert_chain: %s\n      private_key: %s\n      %s: '%s'\n"
                    "    virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, cluster: c}]}]\n"
                    "clusters: [{name: c, endpoints: [{address: 127.0.0.1:2}]}]\n" % (
                        pki("grelay.test.crt"), pki("grelay.test.key"), field, value))
    r = subprocess.run([GRELAY, "--check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith(str(path) + ":5:7: listener 'edge': " + expected), r.stderr


def test_a_slow_tls_reader_gets_every_message_whole_and_in_order(pki, backend, grelay_factory):
    """Small frames leave grelay gathered into records of up to 16 KiB
    (conn.c, tls_next_record). This client's socket takes 4 KiB at a time
    and it does not read for its first second, so grelay's SSL_write finds
    the socket full (WANT_WRITE) again and again and must be retried with
    the same bytes. 20,000 messages of 1,000 B (20 MB: more than a loopback
    socket's send buffer grows to) must all arrive, intact and in order: a
    record gathered twice differently would fail its MAC or shuffle the
    stream."""
    port = free_port()
    grelay_factory(config(port, pki, backend), port)
    count = 20000
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    s = client_context(pki).wrap_socket(raw, server_hostname="grelay.test")
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    c.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
    c.initiate_connection()
    c.increment_flow_control_window(2 ** 31 - 1 - 65535)
    c.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "grelay.test"),
                       (":path", "/test.Echo/ServerStream"), ("content-type", "application/grpc"),
                       ("te", "trailers")])
    body = json.dumps({"count": count, "size": 1000}).encode()
    c.send_data(1, b"\x00" + struct.pack(">I", len(body)) + body, end_stream=True)
    s.sendall(c.data_to_send())
    time.sleep(1)  # grelay fills the 4 KiB socket and waits
    data, trailers, deadline = bytearray(), None, time.monotonic() + 60
    try:
        while trailers is None and time.monotonic() < deadline:
            chunk = s.recv(65536)
            assert chunk, "grelay closed the connection after %d bytes" % len(data)
            for ev in c.receive_data(chunk):
                if isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
            out = c.data_to_send()
            if out:
                s.sendall(out)
    finally:
        s.close()
    assert trailers is not None and trailers.get(b"grpc-status") == b"0", trailers
    got, i = [], 0
    while i < len(data):
        n = struct.unpack(">I", data[i + 1:i + 5])[0]
        got.append(bytes(data[i + 5:i + 5 + n]))
        i += 5 + n
    assert got == [b"%08d" % k + b"x" * 992 for k in range(count)]


@pytest.mark.parametrize("field,expected", [
    ("cert_chain", "tls: cannot load cert_chain '/nonexistent/cert.pem'"),
    ("private_key", "tls: cannot load private_key '/nonexistent/cert.pem'"),
])
def test_a_wrong_certificate_file_is_a_config_error(pki, tmp_path, field, expected):
    from harness import GRELAY
    import json
    lt = {"cert_chain": pki("grelay.test.crt"), "private_key": pki("grelay.test.key")}
    lt[field] = "/nonexistent/cert.pem"
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n  - name: edge\n    address: 127.0.0.1:1\n    tls:\n"
                    "      cert_chain: %s\n      private_key: %s\n"
                    "    virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, cluster: c}]}]\n"
                    "clusters: [{name: c, endpoints: [{address: 127.0.0.1:2}]}]\n" % (lt["cert_chain"], lt["private_key"]))
    r = subprocess.run([GRELAY, "--check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith(str(path) + ":5:7: listener 'edge': " + expected), r.stderr
    assert "No such file" in r.stderr or "no such file" in r.stderr.lower() or "system lib" in r.stderr


@pytest.mark.parametrize("name", ["edge-tls.yaml", "sidecar-mtls.yaml"])
def test_shipped_tls_configs_pass_check(pki, tmp_path, name):
    """conf/ examples name /etc/grelay/...: check them with our test files there."""
    from harness import GRELAY, ROOT
    files = {"server": "grelay.test", "org": "second.test", "client": "client"}
    text = open(os.path.join(ROOT, "conf", name)).read()
    for short, real in files.items():
        text = text.replace("/etc/grelay/%s.crt" % short, pki(real + ".crt"))
        text = text.replace("/etc/grelay/%s.key" % short, pki(real + ".key"))
    text = text.replace("/etc/grelay/backend-ca.crt", pki("ca.crt")).replace("/etc/grelay/clients-ca.crt",
                                                                             pki("ca.crt"))
    assert "/etc/grelay/" not in text
    path = tmp_path / name
    path.write_text(text)
    r = subprocess.run([GRELAY, "--check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_tls_connection_hibernates_and_wakes(pki, backend, grelay_factory):
    """Hibernation under TLS: the session swap happens above the TLS records
    (the window top-up goes out through SSL_write)."""
    from test_hibernate import wait_log
    port = free_port()
    cfg = config(port, pki, backend)
    cfg["listeners"][0]["hibernate_after"] = "100ms"
    cfg["log_level"] = "debug"
    g = grelay_factory(cfg, port)
    with channel(g, pki) as ch:
        for i in range(3):
            msg = b"s" * (20000 * (i + 1))
            assert ch.unary_unary("/test.Echo/Unary")(msg, timeout=10) == msg
            assert wait_log(g, "client connection hibernates", i + 1) == i + 1
        assert ch.unary_unary("/test.Echo/Unary")(b"end", timeout=10) == b"end"
    assert g.log().count("client connection wakes") == 3


def test_upstream_connections_resume_the_last_tls_session(pki, backend, grelay_factory):
    """A cluster's SSL_CTX is shared by the workers, and so are its sessions:
    the first upstream connection (on one worker) does the full handshake and
    keeps the session the backend gives; the next one, made later by the
    other worker, resumes it. grelay says which at debug level."""
    port = free_port()
    cfg = config(port, pki, backend)
    cfg["workers"] = 2
    cfg["log_level"] = "debug"
    g = grelay_factory(cfg, port)

    def handshakes():
        return g.log().count("TLS session new (full handshake)"), g.log().count("TLS session resumed")

    with channel(g, pki) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"first", timeout=10) == b"first"
    assert handshakes() == (1, 0), g.log()
    # New client connections until one lands on the other worker (the kernel
    # spreads them by hash), which opens its own upstream connection.
    for i in range(40):
        with channel(g, pki) as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"more", timeout=10) == b"more"
        if sum(handshakes()) == 2:
            break
    assert handshakes() == (1, 1), g.log()
    assert "upstream %s backend.internal: TLSv1.3, TLS session resumed" % backend.addr in g.log()
