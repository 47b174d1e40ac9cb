/* The interface between a call and the upstream stream that carries one
 * attempt of it, mirroring downstream.h on the client side.
 *
 * - upstream_ops: what the call asks of its upstream stream (submit the
 *   request, resume its body, give response bytes back, let go). h2_client.c
 *   implements them over an nghttp2 client session.
 * - upstream_events: what the pool and the upstream session tell the call
 *   (a slot is granted or refused, response headers, data, the end, a
 *   reset, a lost connection) and what they pull from it (the request
 *   body and trailers). stream.c implements them.
 *
 * Neither side includes the other: the call owns a struct up_slot, the
 * pool and the connection reach the call only through slot->ev. */
#ifndef GRELAY_UPSTREAM_H
#define GRELAY_UPSTREAM_H

#include "grelay/common.h"
#include "grelay/h2_check.h"

#include <nghttp2/nghttp2.h>

struct buf;
struct up_slot;
struct upconn;
struct pool;

struct upstream_ops {
    /* Sends the request headers (nva[0..n)) as a new stream on sl->conn.
     * With body the request body follows, pulled with ev->pull. Sets sl->id.
     * Returns GR_OK, or GR_ERR_PROTO when the connection cannot take it.
     * Returns GR_ERR_LIMIT, sending nothing, when the headers (32 + name +
     * value each) exceed the peer's SETTINGS_MAX_HEADER_LIST_SIZE: the call
     * is answered locally and the shared connection is left alone.
     * Returns GR_ERR_AGAIN, sending nothing, when the connection has not
     * heard the peer's SETTINGS yet and the headers are larger than a peer
     * is sure to take before them: sl stays attached and hears ev->granted
     * once the SETTINGS arrive (submit again then), or ev->lost. */
    int (*submit)(struct up_slot *sl, const nghttp2_nv *nva, size_t n, bool body);
    /* More of the request body (or its end) can be pulled. */
    void (*resume)(struct up_slot *sl);
    /* n response bytes were taken downstream: the backend may send more on
     * this stream (the connection's window came back as they arrived). */
    void (*consume)(struct up_slot *sl, size_t n);
    /* Lets go of the stream. reset: it may still be open, so it is reset
     * with RST_STREAM(CANCEL) and forgets the call; without, the stream is
     * known to be closed already. Unlinks sl (sl->conn NULL). */
    void (*detach)(struct up_slot *sl, bool reset);
    /* The stream's receive window becomes window bytes (it only grows:
     * the client keeps taking what the backend sends). */
    void (*grow)(struct up_slot *sl, uint32_t window);
};

/* The window an upstream stream starts with (SETTINGS_INITIAL_WINDOW_SIZE
 * toward the backend): half a default stream_buffer, so a call that is
 * not read holds 32 KiB, not the whole stream_buffer; it grows toward
 * stream_buffer while the client takes the bytes (stream.c). */
#define UPSTREAM_WINDOW_START (32u * 1024u)
static inline uint32_t upstream_window_start(uint32_t stream_buffer)
{
    return stream_buffer < UPSTREAM_WINDOW_START ? stream_buffer : UPSTREAM_WINDOW_START;
}

struct upstream_events {
    /* The pool has a stream slot for sl (sl->conn, sl->ops set): submit. */
    void (*granted)(struct up_slot *sl);
    /* The pool cannot give sl a slot (sl->pool is already NULL). */
    void (*refused)(struct up_slot *sl, const char *why);
    /* A response header field (final headers, 1xx or trailers: the call
     * knows which). Returns GR_OK, or an error to reset the stream. */
    int (*header)(struct up_slot *sl, const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
    /* A HEADERS frame of the response is complete. */
    void (*headers_done)(struct up_slot *sl, bool end_stream);
    /* Response body bytes (DATA payload). */
    void (*data)(struct up_slot *sl, const uint8_t *data, size_t len);
    /* END_STREAM on DATA. */
    void (*end)(struct up_slot *sl);
    /* The request HEADERS left for the backend. */
    void (*sent)(struct up_slot *sl);
    /* The upstream stream closed (h2_error from RST_STREAM, or NO_ERROR). */
    void (*closed)(struct up_slot *sl, uint32_t h2_error);
    /* The connection is gone (sl already unlinked, sl->conn NULL); why names
     * the cause; never_ready: it never finished its handshake. Also told
     * to a call that left the pool's line because the connection it waited
     * for never came up (sl->pool still set, nothing sent). */
    void (*lost)(struct up_slot *sl, const char *why, bool never_ready);
    /* The request body: as stream_pull_resp() on the other side. */
    size_t (*pull)(struct up_slot *sl, uint8_t *out, size_t len, bool *eof);
    /* The same without a flat copy, as stream_peek_resp()/stream_move_resp()
     * on the other side: how many of len bytes could go now (0: pull
     * instead), then move them into out (the connection's write buffer). */
    size_t (*peek)(struct up_slot *sl, size_t len, bool *eof);
    int (*move)(struct up_slot *sl, struct buf *out, size_t n);
    /* Request trailers to end the body with: NULL with *n = 0 when none,
     * NULL with *n > 0 when they could not be built (see h2_common.h). */
    nghttp2_nv *(*trailers)(struct up_slot *sl, size_t *n);
};

/* What a call holds of its current attempt. Embedded in struct stream. */
struct up_slot {
    const struct upstream_events *ev; /* the call's handlers (set once) */
    struct pool *pool;                /* the pool accounting for the attempt (queued or attached), or NULL */
    const struct upstream_ops *ops;   /* the connection's operations, while attached */
    struct upconn *conn;              /* the connection carrying the attempt, or NULL */
    int32_t id;                       /* upstream stream id, 0 before submit */
    bool queued;                      /* in the pool's line (link is in pool->waiting) */
    bool waits_settings;              /* attached, its submit put off until the peer's SETTINGS (GR_ERR_AGAIN) */
    double queued_at;                 /* when it joined the line (ev_now clock): max_pending_time */
    struct gr_list link;              /* in the pool's line, or in the connection's streams */
    struct h2_check check;            /* h2_client's checks of the response (its HTTP messaging) */
};

#endif
