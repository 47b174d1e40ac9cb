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
    size_t n_unhealthy;               /* pools whose endpoint failed its health checks (endpoint.unhealthy) */
    bool panic;                       /* too few healthy (cfg->panic_threshold): picks ignore health */
    struct gr_config *snap;           /* the snapshot cfg belongs to: a reference, or NULL (unit tests) */
    uint32_t snaps;                   /* worker snapshots naming this cluster (0: it retires) */
    struct gr_list dying_link;        /* in the worker's list of retiring clusters, once snaps is 0 */
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
 * unless it is ejected, unhealthy (outside panic) or (on a retry) the one
 * that just failed (last), when another will do. Its index goes to *idx.
 * A hashing cluster places a call with a key (affinity.h) by the key: the
 * endpoints that will not do are walked past from its place, the same way
 * every time (docs/affinity.md). */
struct pool *wcluster_pick(struct wcluster *wc, bool retry, size_t last, struct lb_key key, size_t *idx);
/* A reload: the worker's new snapshot names this cluster again, with cl
 * (of snap, a reference taken). Pools and their connections switch to
 * cl's settings (new calls and connections use them); the endpoints are
 * matched again (static ones as written; a DNS cluster whose names did not
 * change keeps its resolved set until DNS publishes the next). A changed
 * lb_policy rebuilds the balancer. GR_OK or GR_ERR_NOMEM (then the old
 * endpoints stay, with the new settings). */
int wcluster_migrate(struct wcluster *wc, const struct gr_cluster_cfg *cl, struct gr_config *snap);
/* No snapshot names the cluster any more (no call can pick it): every pool
 * retires, its idle connections close. wcluster_gone says when the last
 * pool is freed; then wcluster_destroy and free it. */
void wcluster_retire(struct wcluster *wc);
static inline bool wcluster_gone(const struct wcluster *wc) { return wc->n_pools == 0 && gr_list_empty(&wc->retired); }
/* Closes every connection of every pool, retired ones too (shutdown). */
void wcluster_shutdown(struct wcluster *wc);
/* Frees the pools and gives the snapshot reference back. */
void wcluster_destroy(struct wcluster *wc);

#endif
