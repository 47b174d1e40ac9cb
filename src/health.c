/* Active health checks on the main thread (health.h). */
#include "grelay/health.h"
#include "grelay/health_probe.h"
#include "grelay/log.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct health_cluster;

/* One endpoint of a checked cluster and its verdicts. */
struct health_ep {
    struct health_cluster *hc;     /* its cluster */
    struct endpoint ep;            /* the endpoint (a copy of the set's) */
    const struct stats_key *stats; /* its series (cluster, address), shared with the workers' pools */
    bool healthy;                  /* the verdict the workers get */
    bool checked;                  /* some check ended: a new endpoint's first failure is at once */
    bool unimplemented_logged;     /* the "no health service" line was logged (again after a SERVING) */
    uint32_t fails;                /* failed checks in a row */
    uint32_t oks;                  /* good checks in a row */
    enum health_result last_fail;  /* the result of the last failed check */
    ev_timer next;                 /* the next check */
    struct health_probe *probe;    /* the check in flight, or NULL (one at a time) */
};

/* A cluster with a health_check (or without: its sets pass through). */
struct health_cluster {
    struct health *h;                 /* the checker */
    const struct gr_cluster_cfg *cfg; /* its settings (the snapshot outlives the checker) */
    struct endpoint_set *base;        /* the last set DNS gave (or the static one), a reference; NULL: none yet */
    struct health_ep **eps;           /* per endpoint of base, in its order (health_check clusters only) */
    size_t n_eps;                     /* entries in eps */
    bool panic;                       /* fewer than panic_threshold of eps are healthy: workers use all */
};

struct health {
    struct ev_loop *loop;            /* the main thread's */
    struct worker **workers;         /* each marked set goes to every one; not owned */
    size_t n_workers;                /* entries in workers */
    struct health_cluster *clusters; /* one per cluster of the snapshot, in its order */
    size_t n_clusters;               /* entries in clusters */
    uint64_t rng;                    /* xorshift state: interval jitter */
};

void health_why(char *buf, size_t len, unsigned result, uint64_t fails)
{
    const char *s = fails == 1 ? "" : "s";
    unsigned long long n = (unsigned long long)fails;
    switch (result) {
    case HC_NOT_SERVING: snprintf(buf, len, "NOT_SERVING from grpc.health.v1 (%llu check%s)", n, s); break;
    case HC_SERVICE_UNKNOWN: snprintf(buf, len, "SERVICE_UNKNOWN from grpc.health.v1 (%llu check%s)", n, s); break;
    case HC_TIMEOUT: snprintf(buf, len, "health checks timed out (%llu check%s)", n, s); break;
    case HC_CONNECT: snprintf(buf, len, "health checks could not connect (%llu check%s)", n, s); break;
    default: snprintf(buf, len, "health checks failed: error status or bad answer (%llu check%s)", n, s); break;
    }
}

static uint64_t rnd(struct health *h)
{
    h->rng ^= h->rng << 13;
    h->rng ^= h->rng >> 7;
    h->rng ^= h->rng << 17;
    return h->rng;
}

/* ms +-10%: a fleet does not check in step. */
static uint64_t jitter(struct health *h, uint64_t ms) { return ms - ms / 10 + rnd(h) % (ms / 5 + 1); }

static void schedule(struct health_ep *e, uint64_t ms)
{
    struct ev_loop *loop = e->hc->h->loop;
    ev_timer_stop(loop, &e->next);
    ev_timer_set(&e->next, (double)ms / 1e3, 0.0);
    ev_timer_start(loop, &e->next);
}

static void ep_stats(const struct health_ep *e)
{
    uint64_t *b = stats_block(stats_main_shard(), e->stats);
    stats_set(b, E_HC_STATE, e->healthy ? 1 : 2);
    stats_set(b, E_HC_WHY, e->last_fail);
    stats_set(b, E_HC_FAILS, e->fails);
}

/* Every worker gets base marked with the verdicts; the panic is decided. */
static void publish_marked(struct health_cluster *hc)
{
    const struct gr_cluster_cfg *cl = hc->cfg;
    if (hc->base == NULL)
        return;
    struct endpoint_set *set = cluster_set_new(hc->base->n);
    if (set == NULL) {
        log_error("health: cluster %s: out of memory; the workers keep the previous verdicts", cl->name);
        return;
    }
    size_t healthy = 0;
    for (size_t i = 0; i < set->n; i++) {
        set->eps[i] = hc->base->eps[i];
        set->eps[i].address.text = set->eps[i].text;
        set->eps[i].unhealthy = i < hc->n_eps && !hc->eps[i]->healthy;
        healthy += !set->eps[i].unhealthy;
    }
    memcpy(set->why_empty, hc->base->why_empty, sizeof(set->why_empty));
    bool panic = set->n > 0 && healthy * 100 < (size_t)cl->panic_threshold * set->n;
    if (panic != hc->panic)
        log_warn("health: cluster %s: %zu of %zu endpoints healthy, %s panic_threshold %u%%: %s", cl->name, healthy,
                 set->n, panic ? "below" : "back at or above", cl->panic_threshold,
                 panic ? "balancing over all of them (panic)" : "unhealthy endpoints get no calls again");
    hc->panic = panic;
    stats_set(stats_block(stats_main_shard(), cl->stats), C_PANIC_NOW, panic);
    for (size_t i = 0; i < hc->h->n_workers; i++)
        worker_publish(hc->h->workers[i], cl->index, set);
    cluster_set_unref(set);
}

/* A check ended: the thresholds decide the verdict. */
static void on_verdict(void *ctx, enum health_result r, const char *detail)
{
    struct health_ep *e = ctx;
    struct health_cluster *hc = e->hc;
    const struct gr_health_check_cfg *hcfg = &hc->cfg->health_check;
    e->probe = NULL;
    stats_add(stats_block(stats_main_shard(), e->stats), E_HC + r, 1);
    bool changed = false;
    if (r == HC_SERVING || r == HC_UNIMPLEMENTED) {
        if (r == HC_UNIMPLEMENTED && !e->unimplemented_logged)
            log_warn("health: cluster %s: endpoint %s has no grpc.health.v1 service (%s): it stays healthy; serve "
                     "the health service or remove health_check",
                     hc->cfg->name, e->ep.text, detail);
        e->unimplemented_logged = r == HC_UNIMPLEMENTED;
        e->fails = 0;
        e->oks++;
        if (!e->healthy && e->oks >= hcfg->healthy_threshold) {
            e->healthy = changed = true;
            log_info("health: cluster %s: endpoint %s is healthy again (%u good checks)", hc->cfg->name, e->ep.text,
                     e->oks);
        }
    } else {
        e->oks = 0;
        e->fails++;
        e->last_fail = r;
        bool at_once = r == HC_NOT_SERVING || r == HC_SERVICE_UNKNOWN || !e->checked;
        if (e->healthy && (at_once || e->fails >= hcfg->unhealthy_threshold)) {
            e->healthy = false;
            changed = true;
            char why[128];
            health_why(why, sizeof(why), r, e->fails);
            log_warn("health: cluster %s: endpoint %s is unhealthy: %s%s%s", hc->cfg->name, e->ep.text, why,
                     detail[0] ? ": " : "", detail);
        }
    }
    e->checked = true;
    ep_stats(e);
    if (changed)
        publish_marked(hc);
    schedule(e, jitter(hc->h, hcfg->interval_ms));
}

static void on_next(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct health_ep *e = container_of(t, struct health_ep, next);
    if (e->probe != NULL)
        return;
    e->probe = health_probe_start(loop, e->hc->cfg, &e->ep, on_verdict, e);
    if (e->probe == NULL)
        schedule(e, jitter(e->hc->h, e->hc->cfg->health_check.interval_ms));
}

static void ep_free(struct health_ep *e)
{
    if (e == NULL)
        return;
    ev_timer_stop(e->hc->h->loop, &e->next);
    health_probe_cancel(e->probe);
    free(e);
}

static bool same_endpoint(const struct endpoint *a, const struct endpoint *b)
{
    return a->address.len == b->address.len && memcmp(&a->address.ss, &b->address.ss, a->address.len) == 0 &&
           strcmp(a->host, b->host) == 0;
}

static struct health_ep *ep_new(struct health_cluster *hc, const struct endpoint *ep)
{
    struct health_ep *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->hc = hc;
    e->ep = *ep;
    e->ep.address.text = e->ep.text;
    e->ep.unhealthy = false;
    e->healthy = true; /* until its first check fails (docs/health.md) */
    e->stats = stats_endpoint_key(hc->cfg->name, ep->text);
    ev_timer_init(&e->next, on_next, 0.0, 0.0);
    schedule(e, rnd(hc->h) % (hc->cfg->health_check.interval_ms / 10 + 1)); /* at once, spread over 10% */
    ep_stats(e);
    return e;
}

/* The checked endpoints follow set: those that stay keep their verdicts,
 * new ones start healthy, the others stop. GR_ERR_NOMEM keeps the old. */
static int sync_eps(struct health_cluster *hc, struct endpoint_set *set)
{
    struct health_ep **neps = calloc(set->n ? set->n : 1, sizeof(*neps));
    if (neps == NULL)
        return GR_ERR_NOMEM;
    for (size_t i = 0; i < set->n; i++) {
        for (size_t j = 0; j < hc->n_eps && neps[i] == NULL; j++)
            if (hc->eps[j] != NULL && same_endpoint(&hc->eps[j]->ep, &set->eps[i])) {
                neps[i] = hc->eps[j];
                hc->eps[j] = NULL;
            }
        if (neps[i] == NULL && (neps[i] = ep_new(hc, &set->eps[i])) == NULL) {
            for (size_t k = 0; k < set->n; k++)
                ep_free(neps[k]);
            free(neps);
            return GR_ERR_NOMEM;
        }
    }
    for (size_t j = 0; j < hc->n_eps; j++) {
        if (hc->eps[j] != NULL)
            stats_set(stats_block(stats_main_shard(), hc->eps[j]->stats), E_HC_STATE, 0);
        ep_free(hc->eps[j]);
    }
    free(hc->eps);
    hc->eps = neps;
    hc->n_eps = set->n;
    cluster_set_ref(set);
    cluster_set_unref(hc->base);
    hc->base = set;
    return GR_OK;
}

void health_publish(void *hv, size_t i, struct endpoint_set *set)
{
    struct health *h = hv;
    struct health_cluster *hc = NULL;
    for (size_t k = 0; k < h->n_clusters && hc == NULL; k++)
        if (h->clusters[k].cfg->index == i)
            hc = &h->clusters[k];
    if (hc == NULL || !hc->cfg->health_check.set || sync_eps(hc, set) != GR_OK) {
        for (size_t w = 0; w < h->n_workers; w++)
            worker_publish(h->workers[w], i, set);
        return;
    }
    publish_marked(hc);
}

/* The verdicts old had for the endpoints of hc's cluster (same name). */
static void carry_over(struct health_cluster *hc, const struct health *old)
{
    for (size_t k = 0; old != NULL && k < old->n_clusters; k++) {
        const struct health_cluster *oc = &old->clusters[k];
        if (strcmp(oc->cfg->name, hc->cfg->name) != 0 || !oc->cfg->health_check.set)
            continue;
        for (size_t i = 0; i < hc->n_eps; i++)
            for (size_t j = 0; j < oc->n_eps; j++) {
                const struct health_ep *o = oc->eps[j];
                struct health_ep *e = hc->eps[i];
                if (!same_endpoint(&o->ep, &e->ep))
                    continue;
                e->healthy = o->healthy;
                e->checked = o->checked;
                e->unimplemented_logged = o->unimplemented_logged;
                e->fails = o->fails;
                e->oks = o->oks;
                e->last_fail = o->last_fail;
            }
        hc->panic = oc->panic;
    }
}

/* A DNS cluster's last set in old (same name, same endpoints written). */
static struct endpoint_set *old_base(const struct gr_cluster_cfg *cl, const struct health *old)
{
    for (size_t k = 0; old != NULL && k < old->n_clusters; k++) {
        const struct health_cluster *oc = &old->clusters[k];
        if (strcmp(oc->cfg->name, cl->name) != 0 || oc->base == NULL || oc->cfg->n_endpoints != cl->n_endpoints)
            continue;
        for (size_t i = 0; i < cl->n_endpoints; i++)
            if (strcmp(oc->cfg->endpoints[i].text, cl->endpoints[i].text) != 0)
                return NULL;
        cluster_set_ref(oc->base);
        return oc->base;
    }
    return NULL;
}

static struct health *start(const struct gr_config *cfg, struct worker **workers, size_t n_workers,
                            struct ev_loop *loop, const struct health *old)
{
    struct health *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->clusters = calloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*h->clusters))) == NULL) {
        free(h);
        return NULL;
    }
    h->loop = loop;
    h->workers = workers;
    h->n_workers = n_workers;
    h->rng = (uint64_t)(ev_now(loop) * 1e6) | 1;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct health_cluster *hc = &h->clusters[h->n_clusters++];
        hc->h = h;
        hc->cfg = &cfg->clusters[i];
        if (!hc->cfg->health_check.set)
            continue;
        struct endpoint_set *set = hc->cfg->discovery == DISCOVERY_STATIC ? NULL : old_base(hc->cfg, old);
        if (set == NULL)
            set = cluster_static_set(hc->cfg);
        if (set != NULL && sync_eps(hc, set) == GR_OK)
            carry_over(hc, old);
        cluster_set_unref(set);
    }
    return h;
}

struct health *health_start(const struct gr_config *cfg, struct worker **workers, size_t n_workers,
                            struct ev_loop *loop)
{
    return start(cfg, workers, n_workers, loop, NULL);
}

struct health *health_restart(struct health *old, const struct gr_config *cfg, struct worker **workers,
                              size_t n_workers, struct ev_loop *loop)
{
    struct health *h = start(cfg, workers, n_workers, loop, old);
    health_stop(old);
    for (size_t k = 0; h != NULL && k < h->n_clusters; k++) {
        struct health_cluster *hc = &h->clusters[k];
        for (size_t i = 0; i < hc->n_eps; i++)
            ep_stats(hc->eps[i]);
        stats_set(stats_block(stats_main_shard(), hc->cfg->stats), C_PANIC_NOW, hc->panic);
        /* The workers' static sets get the verdicts again (a DNS cluster's
         * come with dns_restart's next publish, through health_publish). */
        if (hc->cfg->health_check.set && hc->cfg->discovery == DISCOVERY_STATIC)
            publish_marked(hc);
    }
    return h;
}

void health_stop(struct health *h)
{
    if (h == NULL)
        return;
    for (size_t k = 0; k < h->n_clusters; k++) {
        struct health_cluster *hc = &h->clusters[k];
        for (size_t i = 0; i < hc->n_eps; i++) {
            stats_set(stats_block(stats_main_shard(), hc->eps[i]->stats), E_HC_STATE, 0);
            ep_free(hc->eps[i]);
        }
        stats_set(stats_block(stats_main_shard(), hc->cfg->stats), C_PANIC_NOW, 0);
        free(hc->eps);
        cluster_set_unref(hc->base);
    }
    free(h->clusters);
    free(h);
}
