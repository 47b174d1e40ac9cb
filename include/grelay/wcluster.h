/* A cluster as one worker sees it: the balancer and one pool per endpoint
 * of its current endpoint set, the pools that left the set and drain, and
 * the choice of the endpoint for each attempt. Owned by its worker (the
 * array w->clusters, built by proxy.c); owns its pools. */
#ifndef GRELAY_WCLUSTER_H
#define GRELAY_WCLUSTER_H

#include "grelay/balancer.h"
#include "grelay/cluster.h"
#include "grelay/common.h"
#include "grelay/config.h"

struct pool;
struct worker;

struct wcluster {
    const struct gr_cluster_cfg *cfg; /* the cluster's configuration */
    struct worker *w;                 /* the worker it belongs to */
    struct balancer lb;               /* picks the endpoint of each attempt; counts calls in flight */
    struct pool **pools;              /* one per endpoint of the current set, in its order */
    size_t n_pools;                   /* entries of pools (0: the set is empty) */
    struct gr_list retired;           /* pools whose endpoint left the set, draining */
    char why_empty[200];              /* told to calls while there is no endpoint */
};

/* Sets up wc with the cluster's static endpoints (those written as IP
 * addresses; DNS clusters get theirs later). GR_OK or GR_ERR_NOMEM. */
int wcluster_init(struct wcluster *wc, struct worker *w, const struct gr_cluster_cfg *cl);
/* Adopts an endpoint set: pools of endpoints that stay keep their
 * connections, new endpoints get new pools, the others retire (their calls
 * finish). The balancer is rebuilt, keeping the counts of calls in flight.
 * On GR_ERR_NOMEM the old set stays. */
int wcluster_adopt(struct wcluster *wc, const struct endpoint_set *set);
/* Endpoints in the current set (0: none yet, or DNS found none). */
static inline size_t wcluster_size(const struct wcluster *wc) { return wc->n_pools; }
/* Why the set is empty, for the calls that find it so. */
static inline const char *wcluster_why_empty(const struct wcluster *wc) { return wc->why_empty; }

/* The endpoint for an attempt (wc->n_pools > 0): the balancer's pick,
 * unless it is ejected or (on a retry) the one that just failed (last),
 * when another will do. Its index goes to *idx. */
struct pool *wcluster_pick(struct wcluster *wc, bool retry, size_t last, size_t *idx);
/* Closes every connection of every pool, retired ones too (shutdown). */
void wcluster_shutdown(struct wcluster *wc);
void wcluster_destroy(struct wcluster *wc);

#endif
