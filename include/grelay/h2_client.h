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
};

/* The worker's callbacks and options for client sessions (w->h2c). */
int h2_client_worker_init(struct worker *w);
void h2_client_worker_destroy(struct worker *w);
/* Opens a connection to ep; returns NULL (errno set) on failure. */
struct upconn *h2_client_open(struct worker *w, const struct gr_cluster_cfg *cl, const struct endpoint *ep,
                              const struct upconn_events *ev, void *owner);
/* Streams it may still take. */
uint32_t h2_client_free_slots(const struct upconn *u);
/* Whether nghttp2 would start another stream on it (no GOAWAY, stream ids
 * left: a client has 2^30 of them, hours at 100k calls/s). */
bool h2_client_takes_streams(const struct upconn *u);
/* Attaches sl to u (sl->conn, sl->ops set; linked; counted). */
void h2_client_attach(struct upconn *u, struct up_slot *sl);
/* No new streams; closes once the last stream is gone. */
void h2_client_drain(struct upconn *u);

#endif
