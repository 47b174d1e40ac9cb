/* One timer per connection that carries all of its deadlines (idle,
 * request headers, a write that does not drain, keepalive), as DESIGN.md
 * and STYLE.md rule 7 ask: libev sees a single ev_timer armed for the
 * earliest one. Moving a deadline later costs no libev call at all (the
 * timer fires early, finds nothing due and re-arms: nghttpx's
 * again_rt/expired_rt), so a deadline pushed back on every read is cheap;
 * only an earlier deadline re-arms, with ev_timer_again. Embedded in
 * struct conn; the hardening and lifecycle work arms its deadlines. */
#ifndef GRELAY_CONN_TIMER_H
#define GRELAY_CONN_TIMER_H

#include "grelay/common.h"

#include <ev.h>

/* The deadlines a connection may have. */
enum conn_timer_kind {
    CONN_TIMER_IDLE,      /* no call in flight for too long */
    CONN_TIMER_HEADER,    /* a request's headers are not complete in time */
    CONN_TIMER_WRITE,     /* bytes wait for a peer that does not read */
    CONN_TIMER_KEEPALIVE, /* time to PING (or its ACK is overdue) */
    CONN_TIMER_AGE,       /* max_connection_age reached (client: then its grace is over) */
    CONN_TIMER_DRAIN,     /* a drain's PING is not acknowledged in time: the final GOAWAY goes anyway */
    CONN_TIMER_NAP,       /* a client connection with no call yet may hibernate (h2_server.c) */
    CONN_TIMER_KINDS,
};

struct conn_timer;
/* A deadline passed. The handler may set or clear deadlines, stop the
 * timer, or close the connection (which stops it). */
typedef void (*conn_timer_cb)(struct conn_timer *ct, enum conn_timer_kind kind);

struct conn_timer {
    ev_timer t;                     /* the one libev timer, armed for `armed` */
    struct ev_loop *loop;           /* the loop it runs on */
    conn_timer_cb expired;          /* the owner's handler */
    ev_tstamp at[CONN_TIMER_KINDS]; /* each deadline, on ev_now's clock; 0 = none */
    ev_tstamp armed;                /* when t fires; 0 = stopped */
    bool firing;                    /* inside conn_timer_fire: it re-arms at the end */
};

void conn_timer_init(struct conn_timer *ct, struct ev_loop *loop, conn_timer_cb expired);
/* Sets deadline kind to after seconds from now (ev_now), or to the
 * absolute time at. */
void conn_timer_set(struct conn_timer *ct, enum conn_timer_kind kind, ev_tstamp after);
void conn_timer_set_at(struct conn_timer *ct, enum conn_timer_kind kind, ev_tstamp at);
void conn_timer_clear(struct conn_timer *ct, enum conn_timer_kind kind);
/* Clears every deadline and stops the libev timer. */
void conn_timer_stop(struct conn_timer *ct);
/* The earliest deadline, or 0 when none is set. */
ev_tstamp conn_timer_next(const struct conn_timer *ct);
/* Runs the handler for every deadline due at now, earliest first, then
 * arms the timer for what is left. The libev callback calls it with
 * ev_now; tests call it with a time of their own. */
void conn_timer_fire(struct conn_timer *ct, ev_tstamp now);

#endif
