/* Upstream HTTP/2 connections to one endpoint, per worker, and the bounded
 * line of calls waiting for a free stream slot. Owns its upconns; accounts
 * the calls it carries to its cluster's balancer. Calls reach it as
 * struct up_slot and hear back through slot->ev (upstream.h): the pool never
 * sees a call. A pool is freed at the end of a loop iteration, never inside
 * a connection's callback. */
#ifndef GRELAY_POOL_H
#define GRELAY_POOL_H

#include "grelay/balancer.h"
#include "grelay/cluster.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/outlier.h"
#include "grelay/upstream.h"
#include "grelay/worker.h"

struct pool {
    struct worker *w;                /* the worker it runs on */
    const struct gr_cluster_cfg *cl; /* its cluster's configuration */
    struct balancer *lb;             /* its cluster's balancer (calls in flight per endpoint) */
    size_t index;                    /* its place in the cluster's pools and the balancer, unless retired */
    const struct endpoint *ep;       /* the endpoint: &own */
    struct endpoint own;             /* a copy: endpoint sets come and go */
    bool retired;                    /* no longer in the cluster's set: drains, then is freed */
    struct gr_list retired_link;     /* in the cluster's retired list */
    struct gr_list conns;            /* upconns, open or connecting */
    uint32_t n_conns;                /* entries of conns: a retired pool is freed when it reaches 0 */
    struct gr_list waiting;          /* up_slots waiting for a stream slot, oldest first */
    uint32_t n_waiting;              /* entries of waiting, at most cl->max_pending */
    ev_timer wait_timer;             /* the oldest call in line reaches max_pending_time (one timer, FIFO line) */
    ev_timer drain_timer;            /* retired: drain_timeout passed, the calls left are cut */
    bool dispatching;                /* pool_dispatch is running (it is not re-entered) */
    bool failing;                    /* last connection attempt failed (logged once) */
    uint32_t connect_failures;       /* in a row; reset by a connection that works */
    uint64_t connect_until_us;       /* ejected for failed connects until then; 0: not */
    uint64_t ejected_until_us;       /* picks avoid it until then (gr_now_us clock): the later of
                                        connect_until_us and outlier.until_us */
    struct outlier outlier;          /* its calls' run of failures and ejections (outlier_detection) */
    ev_timer outlier_timer;          /* an ejection by failed calls ends (pool_eject.c): the return is logged */
    struct gr_task free_task;        /* the deferred free of a retired pool (worker->reap) */
    const struct stats_key *stats;   /* its endpoint's series (cluster, address): stats.h */
};

/* Passive health: an endpoint whose connects fail is avoided for 1 s,
 * doubling per failure up to 30 s; with the cluster's outlier_detection,
 * one whose calls fail consecutive_failures times in a row is avoided for
 * base_ejection_time, doubling (outlier.h). Either way unless nothing else
 * is left (wcluster_pick). */
static inline bool pool_ejected(const struct pool *p, uint64_t now_us) { return p->ejected_until_us > now_us; }

struct pool *pool_new(struct worker *w, const struct gr_cluster_cfg *cl, struct balancer *lb, size_t index,
                      const struct endpoint *ep);
/* Closes every connection (their calls fail) and refuses the line. */
void pool_shutdown(struct pool *p);
void pool_free(struct pool *p);
/* The endpoint left the cluster's set: the line is refused, no new
 * streams; calls in flight finish, for cl->drain_timeout at most (then
 * they end with UNAVAILABLE "endpoint removed ..." and the connections
 * close); the pool is freed (deferred) once its last connection closes. */
void pool_retire(struct pool *p);
/* Takes the attempt sl: grants it a stream slot at once (sl->conn and
 * sl->ops set: the caller submits), or puts it in line (sl->queued; it
 * hears back through sl->ev->granted or ->refused). Either way sl->pool is
 * p until pool_release. Returns GR_OK, GR_ERR_LIMIT when the line is full
 * or GR_ERR_IO when no connection could be started (sl untouched). */
int pool_acquire(struct pool *p, struct up_slot *sl);
/* The attempt is over (its stream detached, or it leaves the line): the
 * balancer counts it finished and the line is served. Idempotent. */
void pool_release(struct up_slot *sl);
/* ejected_until_us becomes the later of the two ejections (and its
 * gauge says so). */
void pool_set_ejected_until(struct pool *p);
/* The endpoint's address, for messages and the :authority fallback. */
static inline const char *pool_address(const struct pool *p) { return p->ep->address.text; }

#endif
