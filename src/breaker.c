/* Circuit breakers and the retry budget (breaker.h). */
#include "grelay/breaker.h"
#include "grelay/log.h"
#include "grelay/stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One cluster name's counters. */
struct breaker {
    _Atomic uint32_t requests; /* calls in flight, all workers */
    _Atomic uint32_t pending;  /* calls in the pools' lines */
    _Atomic uint32_t retries;  /* configured retries in flight */
    char pad[52];              /* the counters alone on their cache line */
    uint32_t refs;             /* snapshots naming it (under registry_lock) */
    struct breaker *next;      /* in the registry */
    char name[];               /* the cluster's name */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct breaker *registry; /* every breaker a snapshot names (under registry_lock) */

const char *const breaker_limit_names[BREAKER_LIMITS] = {
    [BREAKER_MAX_REQUESTS] = "max_requests",
    [BREAKER_MAX_PENDING] = "max_pending",
    [BREAKER_MAX_RETRIES] = "max_retries",
    [BREAKER_RETRY_BUDGET] = "retry_budget",
};

static struct breaker *find_locked(const char *name)
{
    for (struct breaker *b = registry; b != NULL; b = b->next)
        if (strcmp(b->name, name) == 0)
            return b;
    return NULL;
}

int breaker_bind(struct gr_config *cfg)
{
    int rc = GR_OK;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < cfg->n_clusters && rc == GR_OK; i++) {
        struct gr_cluster_cfg *cl = &cfg->clusters[i];
        struct breaker *b = find_locked(cl->name);
        if (b == NULL) {
            size_t len = strlen(cl->name);
            /* on a cache line of its own: the counters are what workers share */
            size_t size = (sizeof(*b) + len + 1 + 63) / 64 * 64;
            b = aligned_alloc(64, size);
            if (b != NULL)
                memset(b, 0, size);
            if (b == NULL) {
                rc = GR_ERR_NOMEM;
                break;
            }
            memcpy(b->name, cl->name, len + 1);
            b->next = registry;
            registry = b;
        }
        b->refs++;
        cl->breaker = b;
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

void breaker_unbind(struct gr_config *cfg)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct breaker *b = cfg->clusters[i].breaker;
        cfg->clusters[i].breaker = NULL;
        if (b == NULL || --b->refs > 0)
            continue;
        for (struct breaker **pp = &registry; *pp != NULL; pp = &(*pp)->next)
            if (*pp == b) {
                *pp = b->next;
                break;
            }
        free(b);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* One more in n, unless it holds max already. */
static bool take(_Atomic uint32_t *n, uint32_t max)
{
    uint32_t v = atomic_load_explicit(n, memory_order_relaxed);
    do {
        if (v >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(n, &v, v + 1, memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* One less in n; never below 0 (a release without its take would be a bug,
 * and must not open the breaker for ever). */
static void give(_Atomic uint32_t *n)
{
    uint32_t v = atomic_load_explicit(n, memory_order_relaxed);
    while (v > 0 && !atomic_compare_exchange_weak_explicit(n, &v, v - 1, memory_order_relaxed, memory_order_relaxed))
        ;
}

enum breaker_limit breaker_call_begin(const struct gr_cluster_cfg *cl)
{
    struct breaker *b = cl->breaker;
    if (b == NULL)
        return BREAKER_OK;
    uint32_t max = cl->circuit_breakers.set ? cl->circuit_breakers.max_requests : UINT32_MAX;
    return take(&b->requests, max) ? BREAKER_OK : BREAKER_MAX_REQUESTS;
}

void breaker_call_end(const struct gr_cluster_cfg *cl)
{
    if (cl->breaker != NULL)
        give(&cl->breaker->requests);
}

enum breaker_limit breaker_pending_join(const struct gr_cluster_cfg *cl)
{
    struct breaker *b = cl->breaker;
    if (b == NULL)
        return BREAKER_OK;
    uint32_t max = cl->circuit_breakers.set ? cl->circuit_breakers.max_pending : UINT32_MAX;
    return take(&b->pending, max) ? BREAKER_OK : BREAKER_MAX_PENDING;
}

void breaker_pending_leave(const struct gr_cluster_cfg *cl)
{
    if (cl->breaker != NULL)
        give(&cl->breaker->pending);
}

uint32_t breaker_budget_cap(uint32_t percent, uint32_t min_concurrent, uint32_t requests)
{
    uint64_t share = (uint64_t)requests * percent / 100;
    return share > min_concurrent ? (uint32_t)share : min_concurrent;
}

enum breaker_limit breaker_retry_begin(const struct gr_cluster_cfg *cl)
{
    struct breaker *b = cl->breaker;
    if (b == NULL)
        return BREAKER_OK;
    if (cl->retry_budget.set) {
        uint32_t requests = atomic_load_explicit(&b->requests, memory_order_relaxed);
        uint32_t cap = breaker_budget_cap(cl->retry_budget.percent, cl->retry_budget.min_concurrent, requests);
        return take(&b->retries, cap) ? BREAKER_OK : BREAKER_RETRY_BUDGET;
    }
    uint32_t max = cl->circuit_breakers.set ? cl->circuit_breakers.max_retries : UINT32_MAX;
    return take(&b->retries, max) ? BREAKER_OK : BREAKER_MAX_RETRIES;
}

void breaker_retry_end(const struct gr_cluster_cfg *cl)
{
    if (cl->breaker != NULL)
        give(&cl->breaker->retries);
}

void breaker_message(char *buf, size_t len, const struct gr_cluster_cfg *cl, enum breaker_limit lim)
{
    const struct gr_breaker_cfg *cb = &cl->circuit_breakers;
    const struct gr_retry_budget_cfg *rb = &cl->retry_budget;
    switch (lim) {
    case BREAKER_MAX_REQUESTS:
        snprintf(buf, len, "cluster %s: max_requests %u reached", cl->name, (unsigned)cb->max_requests);
        break;
    case BREAKER_MAX_PENDING:
        snprintf(buf, len, "cluster %s: max_pending %u reached", cl->name, (unsigned)cb->max_pending);
        break;
    case BREAKER_MAX_RETRIES:
        snprintf(buf, len, "cluster %s: max_retries %u reached", cl->name, (unsigned)cb->max_retries);
        break;
    default:
        snprintf(buf, len, "cluster %s: retry_budget (%u%% of calls in flight, at least %u) reached", cl->name,
                 (unsigned)rb->percent, (unsigned)rb->min_concurrent);
        break;
    }
}

void breaker_tripped(struct stats_shard *sh, const struct gr_cluster_cfg *cl, enum breaker_limit lim, int32_t stream)
{
    char msg[160];
    breaker_message(msg, sizeof(msg), cl, lim);
    log_debug("stream %d: %s", stream, msg);
    stats_add(stats_block(sh, cl->stats), (unsigned)(C_BRK_TRIPS + lim), 1);
}

void breaker_json(struct gr_sbuf *out, const struct breaker_counts *now, const uint64_t *trips)
{
    sbuf_printf(out, "\"requests\":%u,\"pending\":%u,\"retries\":%u,\"trips\":{", (unsigned)now->requests,
                (unsigned)now->pending, (unsigned)now->retries);
    for (unsigned j = 0; j < BREAKER_LIMITS; j++)
        sbuf_printf(out, "%s\"%s\":%llu", j ? "," : "", breaker_limit_names[j], (unsigned long long)trips[j]);
    sbuf_puts(out, "}");
}

static void counts(const struct breaker *b, struct breaker_counts *out)
{
    out->requests = atomic_load_explicit(&b->requests, memory_order_relaxed);
    out->pending = atomic_load_explicit(&b->pending, memory_order_relaxed);
    out->retries = atomic_load_explicit(&b->retries, memory_order_relaxed);
}

bool breaker_counts_of(const struct gr_cluster_cfg *cl, struct breaker_counts *out)
{
    if (cl->breaker == NULL)
        return false;
    counts(cl->breaker, out);
    return true;
}

bool breaker_counts_by_name(const char *name, struct breaker_counts *out)
{
    pthread_mutex_lock(&registry_lock);
    struct breaker *b = find_locked(name);
    if (b != NULL)
        counts(b, out);
    pthread_mutex_unlock(&registry_lock);
    return b != NULL;
}

_Static_assert(BREAKER_LIMITS == C_SLOTS - C_BRK_TRIPS, "one trip counter per breaker limit");
