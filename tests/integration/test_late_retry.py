"""Retries that see late statuses: on a route with a retry_policy, response
HEADERS without END_STREAM are held until the first DATA frame or the
trailers; trailers with a status in retry_on and no DATA before them are
retried like a trailers-only failure, and the client sees only the retry's
answer. The backends are real grpcio servers in this process, so each
counts the attempts it saw per call (x-id)."""
import collections
import json
import threading
import time
from concurrent import futures

import grpc
import pytest

from grpcweb_client import web_call
from harness import free_port, simple_config
from test_access_log import wait_lines
from test_admin import Admin
from test_failures import wait_for

RETRY = {"retry_on": ["unavailable"], "num_retries": 1}


class LateBackend:
    """A grpcio server on a loopback port. A call carrying `x-fail-on: NAME`
    fails on the backend called NAME after its initial metadata (x-early)
    with `x-fail-code` (UNAVAILABLE by default) and trailers (x-late)."""

    def __init__(self, name):
        self.name = name
        self.calls = collections.Counter()  # x-id -> attempts seen
        self.cancelled = []  # x-id of calls that ended before the handler finished
        self.headers_sent = []  # x-id of calls whose initial metadata went out
        self.go = collections.defaultdict(threading.Event)  # x-id -> lets a slow stream send its messages
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("late.Svc", {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload),
        }),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def stop(self):
        self.server.stop(0)

    def begin(self, context):
        """Counts the attempt; -> (its metadata, whether this backend fails it)."""
        md = dict(context.invocation_metadata())
        with self.lock:
            self.calls[md.get("x-id", "")] += 1
        return md, md.get("x-fail-on") == self.name

    def fail_late(self, context, md):
        context.send_initial_metadata([("x-backend", self.name), ("x-early", "yes")])
        context.set_trailing_metadata([("x-late", "yes")])
        code = md.get("x-fail-code", "UNAVAILABLE")
        context.abort(grpc.StatusCode[code], "late %s from %s" % (code, self.name))

    def unary(self, request, context):
        md, fail = self.begin(context)
        if fail:
            self.fail_late(context, md)
        context.send_initial_metadata([("x-backend", self.name)])
        return self.name.encode() + b":" + request

    def stream(self, request, context):
        """Modes (the request): b"slow" sends its headers, then its three
        messages once the test sets go; b"data-then-fail" one message, then
        UNAVAILABLE; b"hold" its headers, then waits for the cancel."""
        md, _ = self.begin(context)
        call_id = md.get("x-id", "")
        context.send_initial_metadata([("x-backend", self.name)])
        with self.lock:
            self.headers_sent.append(call_id)
        if request == b"data-then-fail":
            yield b"first"
            context.abort(grpc.StatusCode.UNAVAILABLE, "failed after a message")
        if request == b"hold":
            deadline = time.monotonic() + 20
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not context.is_active():
                with self.lock:
                    self.cancelled.append(call_id)
            return
        assert self.go[call_id].wait(20)
        for i in range(3):
            yield b"message %d" % i

    def upload(self, request_iterator, context):
        md, fail = self.begin(context)
        n = total = 0
        if fail:
            context.send_initial_metadata([("x-backend", self.name), ("x-early", "yes")])
        for msg in request_iterator:
            n += 1
            total += len(msg)
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "late UNAVAILABLE from %s" % self.name)
        context.send_initial_metadata([("x-backend", self.name)])
        return json.dumps({"backend": self.name, "messages": n, "bytes": total}).encode()


@pytest.fixture
def bad():
    b = LateBackend("bad")
    yield b
    b.stop()


@pytest.fixture
def good():
    b = LateBackend("good")
    yield b
    b.stop()


def config(port, endpoints, retry=None, admin_port=None, log_path=None, grpc_web=False):
    route = {"name": "late", "match": {"prefix": "/"}, "cluster": "backend"}
    if retry:
        route["retry_policy"] = retry
    cfg = simple_config(port, [e.addr for e in endpoints], routes=[route],
                        listener_extra={"grpc_web": True} if grpc_web else None)
    if admin_port:
        cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    if log_path:
        cfg["access_log"] = {"path": log_path}
    return cfg


def metric(admin_port, name, **labels):
    """The value of the one series of name with these labels (and maybe more)."""
    _, _, text = Admin(admin_port).get("/metrics")
    want = ['%s="%s"' % kv for kv in labels.items()]
    found = [line for line in text.split("\n") if line.startswith(name + "{") and all(w in line for w in want)]
    assert len(found) == 1, "%s %s: %s" % (name, labels, found)
    return int(float(found[0].rsplit(" ", 1)[1]))


def test_a_late_unavailable_is_retried_on_the_other_endpoint(bad, good, grelay_factory, tmp_path):
    port, admin_port, log = free_port(), free_port(), str(tmp_path / "access.log")
    g = grelay_factory(config(port, [bad, good], RETRY, admin_port, log), port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/late.Svc/Unary")
        for i in range(6):
            reply, c = call.with_call(b"%d" % i, metadata=[("x-fail-on", "bad"), ("x-id", str(i))], timeout=10)
            assert reply == b"good:%d" % i
            md = dict(c.initial_metadata())
            assert md["x-backend"] == "good" and "x-early" not in md  # the failed attempt's headers never left
            assert "x-late" not in dict(c.trailing_metadata())
    assert set(bad.calls.values()) == {1} and len(bad.calls) >= 1  # round robin: some calls went there first
    assert good.calls == {str(i): 1 for i in range(6)}
    # The calls' ends are counted as their streams close (wait a little for the last).
    assert wait_for(lambda: metric(admin_port, "grelay_upstream_requests_total", endpoint=good.addr,
                                   grpc_code="OK") == 6)
    assert metric(admin_port, "grelay_retries_total", route="late", kind="configured") == len(bad.calls)
    assert metric(admin_port, "grelay_retries_total", route="late", kind="transparent") == 0
    assert metric(admin_port, "grelay_upstream_requests_total", endpoint=bad.addr,
                  grpc_code="UNAVAILABLE") == len(bad.calls)
    recs = [json.loads(x) for x in wait_lines(log, 6)]
    assert sorted(r["attempts"] for r in recs) == sorted(2 if str(i) in bad.calls else 1 for i in range(6))
    assert {(r["grpc_code"], r["upstream"]) for r in recs} == {("OK", good.addr)}


def test_without_retry_policy_the_late_status_comes_after_its_headers(bad, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [bad]), port)
    with grpc.insecure_channel(g.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/late.Svc/Unary")(b"x", metadata=[("x-fail-on", "bad"), ("x-id", "1")], timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details() == "late UNAVAILABLE from bad"
    assert dict(e.value.initial_metadata()) == {"x-backend": "bad", "x-early": "yes"}
    assert dict(e.value.trailing_metadata())["x-late"] == "yes"
    assert bad.calls == {"1": 1}


def test_a_status_not_in_retry_on_is_forwarded_with_its_metadata(bad, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [bad], RETRY), port)
    with grpc.insecure_channel(g.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/late.Svc/Unary")(
                b"x", metadata=[("x-fail-on", "bad"), ("x-fail-code", "NOT_FOUND"), ("x-id", "1")], timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "late NOT_FOUND from bad"
    assert dict(e.value.initial_metadata()) == {"x-backend": "bad", "x-early": "yes"}
    assert dict(e.value.trailing_metadata())["x-late"] == "yes"
    assert bad.calls == {"1": 1}


def test_no_retry_once_data_reached_the_client(bad, grelay_factory):
    """One endpoint and a retry left: a retry would land on it again."""
    port = free_port()
    g = grelay_factory(config(port, [bad], dict(RETRY, num_retries=2)), port)
    got = []
    with grpc.insecure_channel(g.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            for msg in ch.unary_stream("/late.Svc/Stream")(b"data-then-fail", metadata=[("x-id", "1")], timeout=10):
                got.append(msg)
    assert got == [b"first"]
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details() == "failed after a message"
    assert bad.calls == {"1": 1}


@pytest.mark.parametrize("per_try", ["300ms", None])
def test_headers_first_and_messages_later_still_stream(good, grelay_factory, per_try):
    """The hold ends by itself (the rest of the per-try timeout, or 1 s
    without one): the client gets the initial metadata while the backend
    has sent no message yet, then every message, and no retry happens."""
    port = free_port()
    retry = dict(RETRY, per_try_timeout=per_try) if per_try else RETRY
    g = grelay_factory(config(port, [good], retry), port)
    with grpc.insecure_channel(g.addr) as ch:
        it = ch.unary_stream("/late.Svc/Stream")(b"slow", metadata=[("x-id", "s")], timeout=20)
        assert dict(it.initial_metadata()) == {"x-backend": "good"}  # before any message was sent
        good.go["s"].set()
        assert list(it) == [b"message 0", b"message 1", b"message 2"]
        assert it.code() == grpc.StatusCode.OK
    assert good.calls == {"s": 1}


def test_the_request_body_streams_while_headers_are_held(bad, good, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [bad, good], RETRY), port)
    with grpc.insecure_channel(g.addr) as ch:
        for i in range(4):
            reply = ch.stream_unary("/late.Svc/Upload")(iter([b"m" * 1024] * 5),
                                                        metadata=[("x-fail-on", "bad"), ("x-id", str(i))], timeout=10)
            assert json.loads(reply) == {"backend": "good", "messages": 5, "bytes": 5120}
    assert set(bad.calls.values()) == {1} and len(bad.calls) >= 1
    assert good.calls == {str(i): 1 for i in range(4)}


def test_a_cancel_while_headers_are_held_reaches_the_backend(good, grelay_factory):
    """per_try_timeout 20s: the headers are held for all of the test."""
    port = free_port()
    g = grelay_factory(config(port, [good], dict(RETRY, per_try_timeout="20s")), port)
    with grpc.insecure_channel(g.addr) as ch:
        it = ch.unary_stream("/late.Svc/Stream")(b"hold", metadata=[("x-id", "c")], timeout=20)
        assert wait_for(lambda: "c" in good.headers_sent)
        it.cancel()
        assert wait_for(lambda: "c" in good.cancelled)
        assert it.code() == grpc.StatusCode.CANCELLED


def test_the_deadline_ends_a_call_whose_headers_are_held(good, grelay_factory):
    port = free_port()
    g = grelay_factory(config(port, [good], dict(RETRY, per_try_timeout="20s")), port)
    with grpc.insecure_channel(g.addr) as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(ch.unary_stream("/late.Svc/Stream")(b"hold", metadata=[("x-id", "d")], timeout=0.5))
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: "d" in good.cancelled)
    assert good.calls == {"d": 1}


@pytest.mark.parametrize("text", [False, True])
def test_grpc_web_clients_get_the_retry_answer(bad, good, grelay_factory, text):
    port = free_port()
    g = grelay_factory(config(port, [bad, good], RETRY, grpc_web=True), port)
    for i in range(4):
        status, h, msgs, trailers = web_call(g.port, "/late.Svc/Unary", b"w%d" % i, text,
                                             [("x-fail-on", "bad"), ("x-id", str(i))])
        assert status == 200 and h["x-backend"] == "good" and "x-early" not in h
        assert msgs == [b"good:w%d" % i] and trailers["grpc-status"] == "0"
    assert set(bad.calls.values()) == {1} and len(bad.calls) >= 1
    # Forwarded as it came when not in retry_on: headers, then the trailer frame.
    port = free_port()
    g = grelay_factory(config(port, [bad], RETRY, grpc_web=True), port)
    status, h, msgs, trailers = web_call(g.port, "/late.Svc/Unary", b"x", text,
                                         [("x-fail-on", "bad"), ("x-fail-code", "NOT_FOUND"), ("x-id", "nf")])
    assert status == 200 and h["x-backend"] == "bad" and h["x-early"] == "yes"
    assert msgs == [] and trailers["grpc-status"] == "5" and trailers["x-late"] == "yes"
    assert bad.calls["nf"] == 1


def test_late_statuses_retried_under_the_hold_still_eject_the_endpoint(bad, good, grelay_factory):
    """Outlier ejection (docs/health.md) sees a late status that the hold
    turned into a retry: the client gets OK every time, yet the endpoint
    that failed twice in a row is ejected and gets no more calls."""
    port, admin_port = free_port(), free_port()
    cfg = config(port, [bad, good], RETRY, admin_port)
    cfg["workers"] = 1
    cfg["clusters"][0]["outlier_detection"] = {"consecutive_failures": 2, "base_ejection_time": "60s"}
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/late.Svc/Unary")
        for i in range(10):
            assert call(b"%d" % i, metadata=[("x-fail-on", "bad"), ("x-id", str(i))], timeout=10) == b"good:%d" % i
    assert sum(bad.calls.values()) == 2, bad.calls  # round robin sent it 2 in a row-of-its-turns, then none
    assert metric(admin_port, "grelay_upstream_ejections_total", endpoint=bad.addr,
                  reason="consecutive_failures") == 1


def test_a_late_status_whose_retry_a_breaker_refuses_goes_out_as_it_came(bad, good, grelay_factory):
    """circuit_breakers max_retries 0: the held headers' late UNAVAILABLE is
    not retried; the client gets the backend's answer (its initial
    metadata, trailers and message) with the note that names the limit."""
    port = free_port()
    cfg = config(port, [bad, good], RETRY)
    cfg["clusters"][0]["circuit_breakers"] = {"max_retries": 0}
    g = grelay_factory(cfg, port)
    with grpc.insecure_channel(g.addr) as ch:
        call = ch.unary_unary("/late.Svc/Unary")
        errors = []
        for i in range(4):  # round robin: some go to bad first
            try:
                call(b"x", metadata=[("x-fail-on", "bad"), ("x-id", str(i))], timeout=10)
            except grpc.RpcError as e:
                errors.append(e)
    assert errors and len(errors) == len(bad.calls), (len(errors), bad.calls)
    for e in errors:
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert e.details() == "late UNAVAILABLE from bad; retry not made: cluster backend: max_retries 0 reached", \
            e.details()
        assert dict(e.initial_metadata()).get("x-early") == "yes"
        assert dict(e.trailing_metadata()).get("x-late") == "yes"
