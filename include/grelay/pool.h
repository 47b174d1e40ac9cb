/* Upstream HTTP/2 connections to one endpoint, per worker, and the bounded
 * line of streams waiting for a free stream slot. Owns its upconns. */
#ifndef GRELAY_POOL_H
#define GRELAY_POOL_H

#include "grelay/cluster.h"
#include "grelay/common.h"
#include "grelay/config.h"

struct worker;
struct wcluster;
struct stream;

struct pool {
    struct worker *w;
    struct wcluster *wc;                /* the cluster it belongs to */
    size_t index;                       /* its place in wc->pools (and the balancer), unless retired */
    const struct endpoint *ep;          /* the endpoint: &own */
    struct endpoint own;                /* a copy: endpoint sets come and go */
    bool retired;                       /* no longer in the cluster's set: drains, then is freed */
    struct gr_list retired_link;        /* in wc->retired */
    struct gr_list conns;               /* upconns, open or connecting */
    uint32_t n_conns;
    struct gr_list waiting;             /* streams waiting for a slot, oldest first */
    uint32_t n_waiting;
    bool failing;                       /* last connection attempt failed (logged once) */
    uint32_t connect_failures;          /* in a row; reset by a connection that works */
    uint64_t ejected_until_us;          /* picks avoid it until then (gr_now_us clock) */
};

/* Passive health: an endpoint whose connects fail is avoided for 1 s,
 * doubling per failure up to 30 s, unless nothing else is left. */
static inline bool pool_ejected(const struct pool *p, uint64_t now_us) { return p->ejected_until_us > now_us; }
void pool_connect_failed(struct pool *p);
void pool_connect_worked(struct pool *p);

struct pool *pool_new(struct worker *w, struct wcluster *wc, size_t index, const struct endpoint *ep);
/* Closes every connection (their streams fail) and empties the line. */
void pool_shutdown(struct pool *p);
void pool_free(struct pool *p);
/* The endpoint left the cluster's set: no new streams; calls in flight
 * finish; the pool frees itself when its last connection closes. */
void pool_retire(struct pool *p);
/* Frees a retired pool that has nothing left. */
void pool_release_if_idle(struct pool *p);
/* Gives s a stream slot on a connection to this endpoint, opening one if
 * allowed, or puts s in line. Returns 0, or GR_ERR_LIMIT when the line is
 * full, or GR_ERR_IO when no connection could be started (s untouched). */
int pool_acquire(struct pool *p, struct stream *s);
/* A slot freed or a connection closed: serve the line. */
void pool_dispatch(struct pool *p);
/* Takes s out of the line. */
void pool_leave(struct pool *p, struct stream *s);

#endif
