/* One direction of a call's body and its flow-control credit.
 *
 * Bytes received from the sending peer are counted as they were on the
 * wire and wait in q until the other side takes them; only then are they
 * given back to the sender's window. This module does the counting; the
 * stream gives the credit back (stream.c, stream_credit_back, the one caller of
 * the downstream's and the upstream's consume). At every moment:
 *
 *     received = unacked + given_back      (flow_unacked() is the first)
 *
 * Unacked bytes are still queued (request: not yet sent by the current
 * attempt; response: not yet taken downstream) or, for a -text request,
 * base64 whose decoded bytes are not all sent yet. Credit may run ahead of
 * the queue: while a request is replayable the bytes already sent stay in
 * q behind the `sent` cursor (replay costs the client no window; the first
 * `acked` bytes of q are such bytes), and the response bytes of an upstream
 * stream that is gone owe nothing any more. Response credit here is the
 * upstream *stream's* window: the upstream connection's window is given
 * back as bytes arrive (h2_client.c), so one call never holds it. Whatever
 * is unacked when the call ends is given back at connection level.
 *
 * Bytes that flow control no longer bounds (a replay copy, a response
 * whose upstream stream is gone) are counted per client connection
 * against the listener's connection_buffer (stream.c, stream_count_held). */
#ifndef GRELAY_FLOW_H
#define GRELAY_FLOW_H

#include "grelay/buf.h"
#include "grelay/common.h"

struct flow {
    struct buf q;        /* bytes the other side has not taken yet (request: plus, while
                                replayable, the first `sent` bytes already sent) */
    size_t sent;         /* replayable request: bytes of q handed to the current attempt */
    size_t acked;        /* bytes at the head of q already given back to the sender */
    size_t wire_unacked; /* -text request: base64 bytes received, not given back */
    uint64_t received;   /* bytes received from the sender, as on the wire */
    uint64_t given_back; /* bytes given back to the sender's window */
    uint32_t window;     /* response: the upstream stream's window now (starts small, grows; counted in
                            the connection's resp_windows) */
    size_t taken;        /* response: bytes the client took since the window last grew */
    bool parked;         /* the taking side's data provider waits for a resume */
    bool replay;         /* request: kept for a retry (bytes sent stay in q) */
    bool text;           /* request: the wire carries base64 (gRPC-Web -text) */
};

static inline void flow_init(struct flow *f, bool replay)
{
    buf_init(&f->q);
    f->replay = replay;
}
static inline uint64_t flow_unacked(const struct flow *f) { return f->received - f->given_back; }
/* Of n bytes taken (or dropped), those not given back yet: what is due now. */
static inline size_t flow_due(const struct flow *f, size_t n)
{
    uint64_t u = flow_unacked(f);
    return n < u ? n : (size_t)u;
}
/* Queues len decoded bytes that came as wire bytes on the wire (-text:
 * base64; counted in received by the caller as they arrive). */
int flow_queue(struct flow *f, struct chunk_pool *cp, const uint8_t *data, size_t len, size_t wire);
/* Copies up to len bytes for the taking side into out. Replayable: from
 * the `sent` cursor, keeping them; past keep_max kept bytes (0: keep none,
 * as when no retry can use them) the replay copy is dropped. Otherwise
 * drained. *due: bytes whose credit may now go back to the sender. */
size_t flow_pull(struct flow *f, struct chunk_pool *cp, uint8_t *out, size_t len, size_t keep_max, size_t *due);
/* The same into dst, a connection's write buffer, without a flat copy in
 * between: drained chunks are relinked (buf_move), kept ones copied from
 * (buf_append_from). Returns the count, or GR_ERR_NOMEM (negative). */
long flow_pull_buf(struct flow *f, struct chunk_pool *cp, struct buf *dst, size_t len, size_t keep_max, size_t *due);
/* Bytes the taking side could pull now. */
static inline size_t flow_ready(const struct flow *f) { return f->replay ? f->q.len - f->sent : f->q.len; }
/* Of the bytes received, those taken (or dropped) but not given back yet:
 * credit owed to the sender (response: withheld while the connection holds
 * more than its connection_buffer). */
static inline uint64_t flow_owed(const struct flow *f)
{
    uint64_t u = flow_unacked(f);
    return u > f->q.len ? u - f->q.len : 0;
}
/* BDP-style growth of the sender's window: n more bytes were taken; once
 * the taker has taken a whole window since the last growth, the window
 * doubles, up to max. Returns the new window, or 0 when it stays. */
static inline uint32_t flow_grow(struct flow *f, size_t n, uint32_t max)
{
    f->taken += n;
    if (f->window >= max || f->taken < f->window)
        return 0;
    f->taken = 0;
    f->window = f->window > max / 2 ? max : f->window * 2;
    return f->window;
}
/* The body is complete: everything queued is taken and the sender ended. */
static inline bool flow_drained(const struct flow *f) { return f->q.len == f->sent; }
/* The request is no longer replayable: drop what was kept for a retry. */
void flow_drop_replay(struct flow *f, struct chunk_pool *cp);
/* A new attempt starts: sending begins again at the head of q. */
static inline void flow_rewind(struct flow *f)
{
    f->sent = 0;
    f->parked = false;
}

#endif
