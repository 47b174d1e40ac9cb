/* Circuit breakers and the retry budget of a cluster (issue 15): calls in
 * flight, calls waiting in the pools' lines and configured retries in
 * flight, counted for the whole process (every worker) in one struct
 * breaker per cluster name, with lock-free atomics; the bounds come from
 * the caller's snapshot (gr_breaker_cfg, gr_retry_budget_cfg).
 *
 * Shared, not split per worker: a client connection lives on one worker,
 * so a share per worker would refuse one busy connection's calls while
 * the other workers' shares sit unused.
 *
 * The breakers live in a registry keyed by cluster name, filled on the
 * main thread at config load (breaker_bind) and shared by every snapshot
 * that names the cluster, so calls in flight across a reload count on the
 * same counters as the new calls; a breaker is freed when the last
 * snapshot naming it goes (the registry's mutex, never on the data path).
 * Every cluster gets one, written or not, so a reload that adds a
 * circuit_breakers: block finds the calls already in flight counted. */
#ifndef GRELAY_BREAKER_H
#define GRELAY_BREAKER_H

#include "grelay/config_types.h"
#include "grelay/grpc.h"
#include "grelay/sbuf.h"

#include <stdbool.h>
#include <stdint.h>

struct stats_shard;

/* What refused something (the limit label of grelay_circuit_breaker_trips_total). */
enum breaker_limit {
    BREAKER_MAX_REQUESTS, /* a call: max_requests calls of the cluster in flight */
    BREAKER_MAX_PENDING,  /* a call: max_pending calls of the cluster in line */
    BREAKER_MAX_RETRIES,  /* a configured retry: max_retries in flight */
    BREAKER_RETRY_BUDGET, /* a configured retry: past the retry_budget */
    BREAKER_LIMITS,
    BREAKER_OK = BREAKER_LIMITS /* nothing refused */
};
extern const char *const breaker_limit_names[BREAKER_LIMITS];

/* pool_acquire's answer when the cluster's max_pending breaker is full
 * (beside GR_ERR_*: the caller names the breaker in its message). */
#define BREAKER_ERR_PENDING (-64)

/* What a breaker counts now, all workers together. */
struct breaker_counts {
    uint32_t requests; /* calls in flight */
    uint32_t pending;  /* calls in the pools' lines */
    uint32_t retries;  /* configured retries in flight */
};

/* Gives every cluster of cfg its breaker (found by name, or made).
 * Main thread; GR_OK or GR_ERR_NOMEM. */
int breaker_bind(struct gr_config *cfg);
/* cfg lets go of its breakers (config_free; any thread). */
void breaker_unbind(struct gr_config *cfg);

/* A call of cl begins: BREAKER_OK (counted: breaker_call_end later), or
 * BREAKER_MAX_REQUESTS (not counted). */
enum breaker_limit breaker_call_begin(const struct gr_cluster_cfg *cl);
void breaker_call_end(const struct gr_cluster_cfg *cl);
/* A call of cl joins a pool's line: BREAKER_OK (counted:
 * breaker_pending_leave when it leaves the line) or BREAKER_MAX_PENDING. */
enum breaker_limit breaker_pending_join(const struct gr_cluster_cfg *cl);
void breaker_pending_leave(const struct gr_cluster_cfg *cl);
/* A configured retry of a call of cl: BREAKER_OK (counted until
 * breaker_retry_end), BREAKER_MAX_RETRIES or BREAKER_RETRY_BUDGET. */
enum breaker_limit breaker_retry_begin(const struct gr_cluster_cfg *cl);
void breaker_retry_end(const struct gr_cluster_cfg *cl);

/* The retry budget's arithmetic: configured retries allowed in flight
 * when requests calls are: max(min_concurrent, percent% of requests),
 * the share rounded down. */
uint32_t breaker_budget_cap(uint32_t percent, uint32_t min_concurrent, uint32_t requests);

/* Writes "cluster NAME: max_requests 10000 reached" (the limit's name and
 * its bound in cl) into buf. */
void breaker_message(char *buf, size_t len, const struct gr_cluster_cfg *cl, enum breaker_limit lim);
/* Counts a trip of lim in cl's series of shard sh, and logs it at debug. */
void breaker_tripped(struct stats_shard *sh, const struct gr_cluster_cfg *cl, enum breaker_limit lim, int32_t stream);

/* Writes "requests":N,"pending":N,"retries":N,"trips":{"max_requests":N,...}
 * (no braces around) for /clusters and /stats.json; trips: the cluster's
 * C_BRK_TRIPS slots, summed. */
void breaker_json(struct gr_sbuf *out, const struct breaker_counts *now, const uint64_t *trips);

/* cl's counts now; false when it has no breaker (unit tests). */
bool breaker_counts_of(const struct gr_cluster_cfg *cl, struct breaker_counts *out);
/* The counts of the cluster named name, if a snapshot still names it
 * (the registry's mutex: off the data path). */
bool breaker_counts_by_name(const char *name, struct breaker_counts *out);

#endif
