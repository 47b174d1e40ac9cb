"""All four RPC kinds, metadata and statuses through grelay, with grpcio on both ends."""
import json
import queue
import threading

import grpc
import pytest

from harness import Backend, concurrent_calls, free_port, simple_config


def test_unary_echo_with_custom_and_binary_metadata_both_ways(channel):
    call = channel.unary_unary("/test.Echo/Unary")
    blob = bytes(range(256))
    reply, c = call.with_call(b"ping", metadata=[("x-trace", "abc-123"), ("x-blob-bin", blob)], timeout=10)
    assert reply == b"ping"
    initial = dict(c.initial_metadata())
    trailing = dict(c.trailing_metadata())
    assert initial["x-trace"] == "abc-123"
    assert initial["x-blob-bin"] == blob
    assert initial["x-backend"] in ("b1", "b2", "b3")
    assert trailing["x-trace-t"] == "abc-123"
    assert trailing["x-blob-t-bin"] == blob
    assert c.code() == grpc.StatusCode.OK


def test_server_streaming_delivers_every_message_in_order(channel):
    call = channel.unary_stream("/test.Echo/ServerStream")
    msgs = list(call(json.dumps({"count": 50, "size": 1000}).encode(), timeout=10))
    assert len(msgs) == 50
    assert [int(m[:8]) for m in msgs] == list(range(50))
    assert all(len(m) == 1000 for m in msgs)


def test_client_streaming_counts_every_message(channel):
    call = channel.stream_unary("/test.Echo/ClientStream")
    reply = json.loads(call(iter([b"z" * 3000] * 40), timeout=10))
    assert reply == {"messages": 40, "bytes": 120000}


def test_bidi_messages_interleave(channel):
    """Each request is sent only after the previous echo came back: a proxy
    that held messages until the end of the stream would deadlock here."""
    call = channel.stream_stream("/test.Echo/Bidi")
    echoes = queue.Queue()
    sent = []

    def requests():
        for i in range(20):
            msg = b"message %d" % i
            sent.append(msg)
            yield msg
            echoes.get(timeout=10)  # wait for the echo before the next send

    got = []
    for reply in call(requests(), timeout=30):
        got.append(reply)
        echoes.put(reply)
    assert got == sent


def test_4mib_messages_both_ways(channel):
    call = channel.unary_unary("/test.Echo/Unary")
    big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    assert call(big, timeout=30) == big
    stream = channel.unary_stream("/test.Echo/ServerStream")
    msgs = list(stream(json.dumps({"count": 3, "size": 4 * 1024 * 1024}).encode(), timeout=30))
    assert [len(m) for m in msgs] == [4 * 1024 * 1024] * 3


def test_200_concurrent_calls_on_one_connection(grelay_factory):
    """The backend holds each call until all 200 are in flight at once, so
    this passes only if grelay carries them concurrently."""
    b = Backend("solo")
    try:
        port = free_port()
        g = grelay_factory(simple_config(port, [b.addr]), port)
        concurrent_calls(g.addr, 200, "c200")
    finally:
        b.stop()


@pytest.mark.parametrize("code", ["NOT_FOUND", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "INTERNAL"])
def test_server_error_status_and_message_reach_client_unchanged(channel, code):
    message = "n\u00e9e 100% \u2713 \u00e0 l'\u00e9cole\nline two"
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/test.Echo/Unary")(message.encode(), metadata=[("x-fail-code", code)], timeout=10)
    assert e.value.code() == grpc.StatusCode[code]
    assert e.value.details() == message
