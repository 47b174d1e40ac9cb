/* Upstream HTTP/2: one connection to an endpoint and its nghttp2 client
 * session, and the upstream_ops a call uses on the streams it carries.
 * Owned by its pool, which it tells about its life through upconn_events
 * (it never includes pool.h); the calls it carries hear from it through
 * their up_slot's events (it never includes stream.h). */
#ifndef GRELAY_H2_CLIENT_H
#define GRELAY_H2_CLIENT_H

#include "grelay/cluster.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/conn.h"
#include "grelay/upstream.h"

#include <nghttp2/nghttp2.h>

struct upconn;

/* Seconds between two PINGs to a peer that sent no HEADERS or DATA in
 * between: gRPC servers answer PINGs more frequent than 5 minutes (grpc-go's
 * EnforcementPolicy.MinTime, C-core's MIN_RECV_PING_INTERVAL_WITHOUT_DATA)
 * with strikes, and the third strike with GOAWAY ENHANCE_YOUR_CALM
 * "too_many_pings"; a margin covers network jitter. */
#define H2_CLIENT_PING_MIN_INTERVAL 330.0

/* What an upconn tells its owner (the pool). */
struct upconn_events {
    /* The peer's SETTINGS arrived (first: the connection works; later: its
     * stream limit may have changed). first is true the first time. */
    void (*settings)(void *owner, struct upconn *u, bool first);
    /* The connection is closing, before its streams are told (why: the
     * message they get). */
    void (*closing)(void *owner, struct upconn *u, const char *why);
    /* The connection closed and its streams were told. */
    void (*closed)(void *owner, struct upconn *u);
};

struct upconn {
    struct conn io;                  /* transport; first member */
    const struct gr_cluster_cfg *cl; /* its cluster's settings (limits, timeouts, TLS) */
    const struct endpoint *ep;       /* where it goes (owned by the pool) */
    const struct upconn_events *ev;  /* the owner's handlers */
    void *owner;                     /* their first argument (the pool) */
    nghttp2_session *h2;             /* client session; NULL once closed */
    struct gr_list link;             /* in the owner's list of connections */
    struct gr_list streams;          /* up_slots attached to it */
    uint32_t n_streams;              /* entries of streams */
    ev_timer connect_timer;          /* bounds connect + SETTINGS */
    bool ready;                      /* the peer's SETTINGS arrived */
    bool draining;                   /* GOAWAY received or sent, or the pool retired: no new streams */
    bool unresponsive;               /* closed because a PING went unanswered (the pool ejects the endpoint) */
    bool peer_wrote;                 /* HEADERS or DATA came since our last PING (the peer forgave its strikes) */
    uint8_t early_pings;  /* PINGs sent since the peer's last HEADERS or DATA that a gRPC server counts as strikes */
    ev_tstamp last_read;  /* when bytes last came from the peer (ev_now clock) */
    ev_tstamp busy_since; /* when n_streams last went from 0 to 1 */
    ev_tstamp ping_sent;  /* our unanswered PING left then; 0: none outstanding */
    ev_tstamp last_ping;  /* when our last PING left; 0: never */
    uint64_t pulled;      /* bytes handed to the transport since the start (pulled - io.wbuf.len: written) */
    uint64_t write_mark;  /* bytes written when the write deadline last started or moved */
    int32_t block_id;     /* the stream whose header block is being read (0: none) */
    struct up_slot *block_slot; /* its slot (NULL: no call), looked up once a block, not once a field */
};

/* The worker's callbacks and options for client sessions (w->h2c). */
int h2_client_worker_init(struct worker *w);
void h2_client_worker_destroy(struct worker *w);
/* Opens a connection to ep; returns NULL (errno set) on failure. It takes
 * one stream until the peer's SETTINGS arrive (their limits unknown till
 * then); a request whose headers are over 4 KiB waits for them. It has
 * TCP keepalive and TCP_USER_TIMEOUT from cl->keepalive (interval, then
 * probes every timeout/3, aborted after interval + timeout), a write
 * deadline (bytes that wait keepalive.timeout for a peer that reads none
 * end it as lost), and with cl->max_connection_age an age (+-10%) past
 * which it takes no stream and closes once its last one ends. */
struct upconn *h2_client_open(struct worker *w, const struct gr_cluster_cfg *cl, const struct endpoint *ep,
                              const struct upconn_events *ev, void *owner);
/* Streams it may still take. */
uint32_t h2_client_free_slots(const struct upconn *u);
/* Whether nghttp2 would start another stream on it (no GOAWAY, stream ids
 * left: a client has 2^30 of them, hours at 100k calls/s). */
bool h2_client_takes_streams(const struct upconn *u);
/* Attaches sl to u (sl->conn, sl->ops set; linked; counted). Its
 * deadlines: no stream for cl->idle_timeout closes it (GOAWAY first);
 * with streams, nothing read for cl->keepalive.interval sends a PING; while
 * the peer sends no HEADERS or DATA, after one early PING at most one per
 * H2_CLIENT_PING_MIN_INTERVAL (gRPC servers' ping policy); nothing read within
 * cl->keepalive.timeout after it, and the connection is lost. */
void h2_client_attach(struct upconn *u, struct up_slot *sl);
/* No new streams; closes once the last stream is gone (GOAWAY first when
 * it had streams; an idle one closes at once). */
void h2_client_drain(struct upconn *u);
/* Ends the connection now: GOAWAY, what the socket takes of it, the close;
 * its calls are lost with why (retried, or failed with UNAVAILABLE in
 * their trailers once their response started). */
void h2_client_cut(struct upconn *u, const char *why);

#endif
