/* Metrics: counters, gauges and histograms, in per-worker shards written
 * without locks or atomic read-modify-writes on the data path, merged when
 * read (the admin endpoint, on the main thread).
 *
 * A series group is named by a key: its kind and its label values,
 * interned once in a process-wide registry (a mutex, taken off the data
 * path: at config load, when a pool starts, and when a worker meets a
 * (route, method) pair for the first time). A key never goes away, so
 * counters survive reloads: a route that stays keeps its series. Each
 * shard holds a block of 64-bit slots per key it has used, made on first
 * use; the owner thread writes it with relaxed stores, the main thread
 * reads it with relaxed loads. The registry is bounded (STATS_MAX_KEYS;
 * gr_stats_cfg.max_methods for methods): past it, series fall into
 * "other". docs/observability.md lists every metric. */
#ifndef GRELAY_STATS_H
#define GRELAY_STATS_H

#include "grelay/config_types.h"
#include "grelay/sbuf.h"

#include <stdbool.h>
#include <stdint.h>

#define STATS_MAX_KEYS 16384
#define STATS_CODES 17     /* gRPC status codes 0..16 */
#define STATS_HC_RESULTS 7 /* health check results (enum health_result, health.h) */

/* What a key names, and the slots of its block. */
enum stats_kind {
    SK_LISTENER, /* labels: listener */
    SK_ROUTE,    /* labels: listener, route, cluster */
    SK_CALL,     /* labels: listener, route, cluster, grpc_service, grpc_method */
    SK_ENDPOINT, /* labels: cluster, endpoint */
    SK_CLUSTER,  /* labels: cluster */
    SK_KINDS
};

/* The limits a client or backend ran into (grelay_limit_hits_total{listener,limit}). */
enum stats_limit {
    LIMIT_MAX_CONNECTIONS,      /* the listener was full: accept waited */
    LIMIT_HEADERS,              /* a request header block past max_request_headers or _fields */
    LIMIT_CONNECTION_BUFFER,    /* a stream refused: its connection held more than connection_buffer */
    LIMIT_STREAM_WRITE_TIMEOUT, /* a call reset: the client did not read its response */
    LIMIT_GLITCHES,             /* a connection ended for abuse (floods, resets, bad frames) */
    LIMIT_OVERLOAD,             /* a stream refused by the overload guard */
    LIMIT_IDLE_TIMEOUT,         /* a connection closed after idle_timeout */
    LIMIT_HEADERS_TIMEOUT,      /* a connection closed: request headers not complete in time */
    LIMIT_RATE,                 /* a call refused by its route's rate_limit */
    LIMIT_KINDS
};

enum stats_listener_slot {
    L_IN_FLIGHT,      /* gauge: calls in flight */
    L_CONNS_H2,       /* gauge: client connections, HTTP/2 */
    L_CONNS_H1,       /* gauge: client connections, HTTP/1.1 */
    L_CONNS_TOTAL_H2, /* counter */
    L_CONNS_TOTAL_H1, /* counter */
    L_HIBERNATED,     /* gauge: HTTP/2 connections whose session is freed */
    L_HIBERNATIONS,   /* counter */
    L_GRPC_WEB,       /* counter: gRPC-Web calls (binary) */
    L_GRPC_WEB_TEXT,  /* counter: gRPC-Web calls (-text) */
    L_PREFLIGHTS,     /* counter: CORS preflights answered */
    L_DRAINED_CONNS,  /* counter: connections told to drain (age, request count, reload, shutdown) */
    L_LIMITS,         /* counters, LIMIT_KINDS of them */
    L_SLOTS = L_LIMITS + LIMIT_KINDS
};

enum stats_route_slot {
    R_IN_FLIGHT,    /* gauge: calls in flight on the route */
    R_RETRY_TRANS,  /* counter: transparent retries */
    R_RETRY_CONF,   /* counter: retries of the route's retry_policy */
    R_RATE_LIMITED, /* counter: calls refused by the route's rate_limit */
    R_SLOTS
};

enum stats_endpoint_slot {
    E_CODES,                              /* counters: attempts by grpc_code, STATS_CODES of them */
    E_IN_FLIGHT = E_CODES + STATS_CODES,  /* gauge: attempts in flight */
    E_CONNS,                              /* gauge: upstream connections open or connecting */
    E_CONNECT_FAILURES,                   /* counter */
    E_EJECTIONS,                          /* counter: times the endpoint was ejected after failed connects */
    E_EJECTED_UNTIL,                      /* gauge (max over workers): gr_now_us until which picks avoid it (either
                                             reason: failed connects or failed calls) */
    E_MEMBER,                             /* gauge: workers whose current endpoint set has it */
    E_WEIGHT,                             /* gauge (max over workers): its weight */
    E_HC,                                 /* counters: health checks by result, STATS_HC_RESULTS (main thread) */
    E_HC_STATE = E_HC + STATS_HC_RESULTS, /* gauge (main thread): 0 not checked, 1 healthy, 2 unhealthy */
    E_HC_WHY,                             /* gauge (main thread): unhealthy: the result of its last failed check */
    E_HC_FAILS,                           /* gauge (main thread): failed checks in a row */
    E_OUTLIER_EJECTIONS,                  /* counter: times the endpoint was ejected after failed calls */
    E_OUTLIER_UNTIL,                      /* gauge (max over workers): gr_now_us until which failed calls eject it */
    E_OUTLIER_CODE,                       /* gauge (max over workers) while ejected by calls: what its run of
                                             failures ended with (outlier_code_slot), else 0 */
    E_SLOTS
};

enum stats_cluster_slot {
    C_DNS_OK,      /* counter: DNS answers (main thread) */
    C_DNS_FAIL,    /* counter: failed DNS lookups (main thread) */
    C_NO_ENDPOINT, /* counter: calls failed with no endpoint to send to */
    C_PANIC,       /* counter: calls balanced over every endpoint, too few being healthy (workers) */
    C_PANIC_NOW,   /* gauge (main thread): 1 while too few endpoints are healthy (panic_threshold) */
    C_HASH_NO_KEY, /* counter: attempts of a ring_hash or maglev cluster whose call had no key (picked at random) */
    C_BRK_TRIPS,   /* counters: calls and retries a breaker refused, BREAKER_LIMITS of them (breaker.h) */
    C_SLOTS = C_BRK_TRIPS + 4
};

struct stats_shard;
struct stats_key;

/* Fixes the histogram buckets and max_methods from the first snapshot
 * (a reload that changes them is told they wait for a restart). Main
 * thread, before any worker starts; returns GR_OK or GR_ERR_NOMEM. */
int stats_init(const struct gr_config *cfg);
/* Interns the keys of cfg's listeners and routes (gr_listener_cfg.stats,
 * gr_route_cfg.stats): before any worker uses cfg (load and reload). */
void stats_bind(struct gr_config *cfg);
/* A worker's shard (proxy.c gives each worker one), and the main
 * thread's (DNS); freed at exit by stats_shard_free. */
struct stats_shard *stats_shard_new(uint32_t id);
void stats_shard_free(struct stats_shard *sh);
struct stats_shard *stats_main_shard(void);

/* The key of an endpoint (pool_new) or a cluster; any thread, takes the
 * registry's mutex. */
const struct stats_key *stats_endpoint_key(const char *cluster, const char *endpoint);
const struct stats_key *stats_cluster_key(const char *cluster);
/* The "none" route key of a listener's calls that found no route. */
const struct stats_key *stats_no_route_key(const struct gr_listener_cfg *l);

/* The block of key k in shard sh (made on first use; NULL only when out
 * of memory). On sh's thread. */
uint64_t *stats_block_slow(struct stats_shard *sh, const struct stats_key *k);
static inline uint64_t *stats_block(struct stats_shard *sh, const struct stats_key *k);

/* Adds n to a slot of a block of the caller's shard (n may wrap: gauges
 * go down by adding -1). NULL blocks are ignored. */
static inline void stats_add(uint64_t *block, unsigned slot, uint64_t n)
{
    if (block != NULL)
        __atomic_store_n(&block[slot], __atomic_load_n(&block[slot], __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
static inline void stats_set(uint64_t *block, unsigned slot, uint64_t v)
{
    if (block != NULL)
        __atomic_store_n(&block[slot], v, __ATOMIC_RELAXED);
}

/* A client of listener l ran into limit k. */
static inline void stats_limit_hit(struct stats_shard *sh, const struct gr_listener_cfg *l, enum stats_limit k)
{
    stats_add(stats_block(sh, l->stats), (unsigned)(L_LIMITS + k), 1);
}

/* A call ended (stream.c): grelay_requests_total and
 * grelay_request_duration_seconds. route: the route key (or a listener's
 * no-route key); path: the :path (service and method come from it); code:
 * what the client got. */
void stats_call_done(struct stats_shard *sh, const struct stats_key *route, const uint8_t *path, size_t path_len,
                     int code, uint64_t duration_us);

/* A reload ended (reload.c): grelay_config_reloads_total{result}. */
void stats_reload_result(bool ok);

/* Every metric of every shard, merged, in the Prometheus text format
 * 0.0.4 (without the process_* metrics: the admin endpoint adds those). */
void stats_render_prometheus(struct gr_sbuf *out);
/* The same as JSON for the live view (docs/observability.md, /stats.json);
 * ready: the process takes new work (drain_ready), given by the caller. */
void stats_render_json(struct gr_sbuf *out, bool ready);
/* The slots of key kind/labels summed over every shard into out (at most
 * n); false when no such key exists. For /clusters. */
bool stats_sum(enum stats_kind kind, const char *const *labels, uint64_t *out, size_t n);

/* For stats_render.c: the keys interned so far (ids 0..n-1), the shards,
 * the buckets (upper bounds in seconds; +Inf follows), the slots of a
 * kind's block, and a key's slots summed over every shard. */
uint32_t stats_key_count(void);
const struct stats_key *stats_key_at(uint32_t id);
struct stats_shard *const *stats_shards(size_t *n);
const double *stats_buckets(size_t *n);
size_t stats_slots(enum stats_kind kind);
void stats_sum_key(const struct stats_key *k, uint64_t *out, size_t n);
/* SK_CALL blocks: the STATS_CODES code counters, then one counter per
 * bucket and +Inf (not cumulative), then the sum of durations in us. */
#define STATS_CALL_BUCKETS STATS_CODES
static inline size_t stats_call_sum_slot(size_t n_buckets) { return STATS_CALL_BUCKETS + n_buckets + 1; }
extern _Atomic uint64_t stats_reloads[2]; /* grelay_config_reloads_total: failure, success */
extern double stats_start_time;           /* process start, seconds since the epoch */

/* ---- inline parts ---- */
struct stats_shard {
    uint64_t *blocks[STATS_MAX_KEYS]; /* by key id: this shard's block, or NULL (published with release) */
    struct stats_calls *calls;        /* the owner's (route, path) -> block table (stats.c) */
    uint32_t id;                      /* worker id, or the main thread's */
};
struct stats_key {
    uint32_t id;                  /* index of its blocks */
    enum stats_kind kind;         /* what it names */
    const char *labels[5];        /* label values, interned (never freed) */
    const struct stats_key *none; /* SK_LISTENER: its "none" route key */
    struct stats_key *next;       /* in the registry's hash chain */
};

static inline uint64_t *stats_block(struct stats_shard *sh, const struct stats_key *k)
{
    if (sh == NULL || k == NULL)
        return NULL;
    uint64_t *b = sh->blocks[k->id];
    return gr_likely(b != NULL) ? b : stats_block_slow(sh, k);
}

#endif
