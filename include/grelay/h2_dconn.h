/* One downstream HTTP/2 connection, as the two files that run it see it:
 * h2_server.c (the session's callbacks, reads and deadlines) and
 * h2_goaway.c (how it ends: the drain, GOAWAYs, refusals and holds).
 * Private to them: everything else knows a client connection as a struct
 * downstream (downstream.h). */
#ifndef GRELAY_H2_DCONN_H
#define GRELAY_H2_DCONN_H

#include "grelay/downstream.h"
#include "grelay/h2_common.h"
#include "grelay/h2_hibernate.h"
#include "grelay/slab.h"
#include "grelay/worker.h"

#include <nghttp2/nghttp2.h>

/* One HTTP/2 client connection. */
struct dconn {
    struct downstream base;      /* transport, listener, streams; first member */
    nghttp2_session *h2;         /* server session; NULL while hibernating */
    struct gr_list lru_link;     /* in the hibernation list (least recently busy first) if it may hibernate */
    ev_tstamp busy_at;           /* when a call last began or ended */
    struct h2_sleep sleep;       /* what hibernating and waking up need */
    struct h2_guard guard;       /* abuse budgets and closed-stream memory (h2_common.h) */
    uint32_t rst_ahead;          /* provoked resets charged when nghttp2 decided them, not yet sent (on_frame_send) */
    int32_t start_from;          /* the lowest stream whose call waits for the end of this read to start (0: none) */
    int32_t hdr_wait;            /* what CONN_TIMER_HEADER waits for: -1 the client's preface and SETTINGS, a stream id
                              * the end of its request header block, 0 nothing */
    int32_t block_id;            /* the stream whose request header block is being read (0: none) */
    struct stream *block_stream; /* its call, looked up once a block (on_begin_headers), not once a field */
    bool goaway;                 /* a GOAWAY that ends the connection is queued: it closes once that is written */
    bool held;                   /* ended by an abuse (h2_goaway_hold): held open until the GOAWAY grace ends, and past
                              * HOLD_DROP bytes dropped not read (its writes block), not closed to reconnect */
    uint32_t dropped;            /* bytes read and dropped since it was held */
    bool asleep;                 /* hibernating: counted in its listener's grelay_hibernated_connections */
    uint8_t drain;               /* enum dconn_drain: where a drain (SIGTERM, max_connection_age) stands */
    struct gr_task final_goaway; /* DRAIN_ACKED: in worker->dirty, builds the final GOAWAY (h2_goaway.c); left there
                                  * by a close, it finds the connection closed: the dirty tasks run before the frees */
};

/* Where the drain of a connection stands (a SIGTERM, its max_connection_age). */
enum dconn_drain {
    DRAIN_NONE,   /* serving */
    DRAIN_NOTICE, /* GOAWAY 2^31-1 and a PING sent: streams the client opens meanwhile are served */
    DRAIN_ACKED,  /* the PING's ACK came (or its bound passed): the final GOAWAY is built before the loop sleeps
                   * (final_goaway), so the streams read behind the ACK are in its last stream id */
    DRAIN_FINAL,  /* the final GOAWAY (the last stream id) is queued: it closes once its calls end */
};

/* The worker's share of downstream HTTP/2. */
struct h2_server_state {
    nghttp2_session_callbacks *cbs; /* server session callbacks */
    nghttp2_option *opt;            /* server session options (h2_common_options) */
    struct slab_pool slab;          /* struct dconn, packed (idle ones free their session) */
    struct gr_list lru;             /* dconns that may hibernate, least recently busy first */
    ev_timer hibernate;             /* the periodic pass over lru */
    ev_tstamp hibernate_min;        /* the shortest hibernate_after of the listeners (0: none hibernate) */
};

static inline struct dconn *dconn_of(struct conn *c) { return container_of(c, struct dconn, base.io); }
static inline struct dconn *dconn_from(struct downstream *d) { return container_of(d, struct dconn, base); }

/* The wrapping millisecond clock of the abuse budgets. */
static inline uint32_t dconn_now_ms(const struct dconn *d)
{
    return (uint32_t)(uint64_t)(ev_now(d->base.io.w->loop) * 1000.0);
}

/* The reset budget's size: H2_RESET_BURST, or max_concurrent_streams when
 * smaller (at least 100). Only premature resets spend it (a call younger
 * than H2_PREMATURE_RESET_S, as Envoy counts them), so a client whose
 * calls time out together after a backend stalled does not lose its
 * connection. With the burst at 1024, 32 rapid-reset connections held one
 * worker at 100% and a legitimate call's median at 385 ms; at 200, 1.0 s
 * of CPU over 3 s and 1.55 ms (bench/abuse, docs/security.md). */
static inline uint32_t dconn_reset_burst(const struct dconn *d)
{
    uint32_t n = d->base.cfg->max_concurrent_streams;
    return n < 100 ? 100 : n > H2_RESET_BURST ? H2_RESET_BURST : n;
}

/* Past a GOAWAY, a client that does not take it is cut off after this. */
#define GOAWAY_GRACE_S 1.0
#define HOLD_DROP (256 * 1024) /* what a held connection (h2_goaway_hold) reads and drops, then no more */
/* How it ends (h2_goaway.c). */
/* The drain PING's opaque data, by which its ACK is known. */
extern const uint8_t h2_goaway_drain_ping[8];
/* The first phase of a drain: GOAWAY 2^31-1 and a PING. */
void h2_goaway_drain_notice(struct dconn *d, const char *why);
/* The second, on the PING's ACK or its bound (CONN_TIMER_DRAIN): the final
 * GOAWAY with the last stream id, built before the loop sleeps, once every
 * frame read with the ACK is in (DRAIN_ACKED). */
void h2_goaway_drain_final(struct dconn *d);
/* downstream_ops.drain. */
size_t h2_goaway_drain(struct downstream *base, const char *cut);
/* Ends the connection with a GOAWAY of code. */
void h2_goaway_send(struct dconn *d, uint32_t code, const char *why);
/* The client broke the protocol or spent a budget: GOAWAY code, nothing read any more. */
void h2_goaway_refuse(struct dconn *d, uint32_t code, const char *why);
/* An abuse: GOAWAY ENHANCE_YOUR_CALM naming sid, held open unread for GOAWAY_GRACE_S. */
void h2_goaway_hold(struct dconn *d, int32_t sid, const char *why);
/* nghttp2 gave up on a flooding client: a GOAWAY written by hand, then the close. */
int h2_goaway_flooded(struct dconn *d, int lib_error);
/* A reset that cost us a call: one token of the reset budget. */
void h2_goaway_spend_reset(struct dconn *d, const char *why);

#endif
