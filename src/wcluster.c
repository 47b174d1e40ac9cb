/* A worker's view of one cluster (see include/grelay/wcluster.h). */
#include "grelay/wcluster.h"
#include "grelay/log.h"
#include "grelay/h2_client.h"
#include "grelay/pool.h"
#include "grelay/stats.h"
#include "grelay/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool same_endpoint(const struct endpoint *a, const struct endpoint *b)
{
    return a->address.len == b->address.len && memcmp(&a->address.ss, &b->address.ss, a->address.len) == 0 &&
           strcmp(a->host, b->host) == 0;
}

/* The pool of wc that serves ep, if any not taken yet (kept[]). */
static size_t find_pool(const struct wcluster *wc, const bool *kept, const struct endpoint *ep)
{
    for (size_t j = 0; j < wc->n_pools; j++)
        if (!kept[j] && same_endpoint(wc->pools[j]->ep, ep))
            return j;
    return SIZE_MAX;
}

/* Out of memory half way: frees the new pools of np[0..n), keeps the old. */
static void undo(struct wcluster *wc, struct pool **np, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        bool old = false;
        for (size_t j = 0; j < wc->n_pools; j++)
            old |= wc->pools[j] == np[k];
        if (!old)
            pool_free(np[k]);
    }
    for (size_t j = 0; j < wc->n_pools; j++)
        wc->pools[j]->index = j;
}

int wcluster_adopt(struct wcluster *wc, const struct endpoint_set *set)
{
    size_t n = set->n;
    struct pool **np = calloc(n ? n : 1, sizeof(*np));
    uint32_t *weights = calloc(n ? n : 1, sizeof(*weights));
    uint64_t *ids = calloc(n ? n : 1, sizeof(*ids));
    bool *kept = calloc(wc->n_pools ? wc->n_pools : 1, sizeof(*kept));
    struct balancer nb;
    int rc = GR_ERR_NOMEM;
    if (np == NULL || weights == NULL || ids == NULL || kept == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        weights[i] = set->eps[i].weight;
        ids[i] = balancer_endpoint_id(set->eps[i].text, set->eps[i].host);
    }
    if (balancer_init(&nb, wc->cfg->lb_policy, weights, n, gr_rand(&wc->w->rng)) != GR_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        size_t j = find_pool(wc, kept, &set->eps[i]);
        if (j != SIZE_MAX) {
            kept[j] = true;
            np[i] = wc->pools[j];
            nb.active[i] = wc->lb.active[j];
            np[i]->index = i;
            np[i]->own.weight = set->eps[i].weight;
            np[i]->own.unhealthy = set->eps[i].unhealthy;
        } else if ((np[i] = pool_new(wc->w, wc->cfg, &wc->lb, i, &set->eps[i])) == NULL) {
            undo(wc, np, i);
            balancer_destroy(&nb);
            goto out;
        }
    }
    /* last, as it may take the old ring or table: nothing fails after it */
    if (balancer_hash_build(&nb, ids, &wc->lb) != GR_OK) {
        undo(wc, np, n);
        balancer_destroy(&nb);
        goto out;
    }
    for (size_t j = 0; j < wc->n_pools; j++) {
        if (!kept[j]) {
            log_info("cluster %s: endpoint %s left the set", wc->cfg->name, wc->pools[j]->ep->text);
            gr_list_insert_tail(&wc->retired, &wc->pools[j]->retired_link);
            pool_retire(wc->pools[j]);
        }
    }
    balancer_destroy(&wc->lb);
    wc->lb = nb;
    free(wc->pools);
    wc->pools = np;
    np = NULL;
    wc->n_pools = n;
    wc->n_unhealthy = 0;
    for (size_t i = 0; i < n; i++)
        wc->n_unhealthy += set->eps[i].unhealthy;
    /* the main thread decided the same from the same set (health.c) */
    wc->panic = wc->n_unhealthy > 0 && (n - wc->n_unhealthy) * 100 < (size_t)wc->cfg->panic_threshold * n;
    snprintf(wc->why_empty, sizeof(wc->why_empty), "%s", set->why_empty);
    rc = GR_OK;
out:
    free(np);
    free(weights);
    free(ids);
    free(kept);
    return rc;
}

int wcluster_init(struct wcluster *wc, struct worker *w, const struct gr_cluster_cfg *cl)
{
    wc->cfg = cl;
    wc->w = w;
    gr_list_init(&wc->retired);
    gr_list_init(&wc->dying_link);
    struct endpoint_set *set = cluster_static_set(cl);
    if (set == NULL)
        return GR_ERR_NOMEM;
    if (set->n == 0)
        snprintf(set->why_empty, sizeof(set->why_empty), "cluster %s has no endpoint yet: %s has not been resolved",
                 cl->name, cl->endpoints[0].text);
    int rc = wcluster_adopt(wc, set);
    cluster_set_unref(set);
    return rc;
}

/* What makes an endpoint a bad pick for one attempt. */
struct pick_ctx {
    struct wcluster *wc;  /* the cluster */
    uint64_t now;         /* ejections end on this clock */
    bool avoid_unhealthy; /* unhealthy endpoints are skipped (some are, and no panic) */
    bool retry;           /* a retry: last failed */
    size_t last;          /* the endpoint of the attempt before */
};

/* Ejected, unhealthy (outside panic) or, on a retry, the one that failed. */
static bool bad_at(void *ctx, size_t i)
{
    const struct pick_ctx *pc = ctx;
    return pool_ejected(pc->wc->pools[i], pc->now) || (pc->avoid_unhealthy && pc->wc->pools[i]->own.unhealthy) ||
           (pc->retry && i == pc->last);
}

struct pool *wcluster_pick(struct wcluster *wc, bool retry, size_t last, struct lb_key key, size_t *idx_out)
{
    size_t n = wc->n_pools;
    /* Unhealthy endpoints get no new calls, unless too few are healthy
     * (panic: every endpoint is balanced over, and it is counted). */
    struct pick_ctx pc = {wc, gr_now_us(), wc->n_unhealthy > 0 && !wc->panic, retry, last};
    /* A hashing policy walks deterministically from the key's place past
     * bad endpoints (balancer_hash_pick); a call without key picks at random. */
    bool hashed = key.has && balancer_hashing(&wc->lb);
    if (!key.has && balancer_hashing(&wc->lb))
        stats_add(stats_block(wc->w->stats, wc->cfg->stats), C_HASH_NO_KEY, 1);
    size_t idx = hashed ? balancer_hash_pick(&wc->lb, key.hash, bad_at, &pc) : balancer_pick(&wc->lb);
    if (wc->panic)
        stats_add(stats_block(wc->w->stats, wc->cfg->stats), C_PANIC, 1);
    if (n > 1) {
#define BAD(i) bad_at(&pc, (i))
        for (size_t tries = 1; !hashed && tries < 2 * n && BAD(idx); tries++)
            idx = balancer_pick(&wc->lb);
        for (size_t k = 0; k < n && BAD(idx); k++)
            idx = (idx + 1) % n;
        if (retry && idx == last)
            idx = (idx + 1) % n; /* everything is ejected: at least try another */
#undef BAD
    }
    *idx_out = idx;
    return wc->pools[idx];
}

/* The pool and its connections use cl from now on. */
static void pool_switch(struct pool *p, const struct gr_cluster_cfg *cl)
{
    p->cl = cl;
    struct gr_list *it;
    for (it = p->conns.next; it != &p->conns; it = it->next)
        container_of(it, struct upconn, link)->cl = cl;
}

static bool same_names(const struct gr_cluster_cfg *a, const struct gr_cluster_cfg *b)
{
    if (a->n_endpoints != b->n_endpoints)
        return false;
    for (size_t i = 0; i < a->n_endpoints; i++)
        if (strcmp(a->endpoints[i].text, b->endpoints[i].text) != 0 || a->endpoints[i].weight != b->endpoints[i].weight)
            return false;
    return true;
}

/* The endpoints the pools serve now, as a set (a DNS cluster's last answer). */
static struct endpoint_set *current_set(const struct wcluster *wc)
{
    struct endpoint_set *set = cluster_set_new(wc->n_pools);
    if (set == NULL)
        return NULL;
    for (size_t i = 0; i < wc->n_pools; i++) {
        set->eps[i] = wc->pools[i]->own;
        set->eps[i].address.text = set->eps[i].text;
    }
    snprintf(set->why_empty, sizeof(set->why_empty), "%s", wc->why_empty);
    return set;
}

/* The verdicts of the endpoints that stay go on (health checks run on;
 * the main thread publishes again after a reload); without health checks
 * every endpoint is healthy. */
static void carry_health(const struct wcluster *wc, struct endpoint_set *set, bool checked)
{
    for (size_t i = 0; i < set->n; i++) {
        set->eps[i].unhealthy = false;
        for (size_t j = 0; checked && j < wc->n_pools; j++)
            if (same_endpoint(&wc->pools[j]->own, &set->eps[i]))
                set->eps[i].unhealthy = wc->pools[j]->own.unhealthy;
    }
}

int wcluster_migrate(struct wcluster *wc, const struct gr_cluster_cfg *cl, struct gr_config *snap)
{
    const struct gr_cluster_cfg *old = wc->cfg;
    bool keep = old->discovery != DISCOVERY_STATIC && cl->discovery != DISCOVERY_STATIC && same_names(old, cl);
    wc->cfg = cl;
    for (size_t j = 0; j < wc->n_pools; j++)
        pool_switch(wc->pools[j], cl);
    struct gr_list *it;
    for (it = wc->retired.next; it != &wc->retired; it = it->next)
        pool_switch(container_of(it, struct pool, retired_link), cl);
    config_ref(snap);
    config_unref(wc->snap); /* old settings are no longer read: every pointer moved to cl */
    wc->snap = snap;
    struct endpoint_set *set = keep ? current_set(wc) : cluster_static_set(cl);
    if (set == NULL)
        return GR_ERR_NOMEM;
    if (set->n == 0 && !keep)
        snprintf(set->why_empty, sizeof(set->why_empty), "cluster %s has no endpoint yet: %s has not been resolved",
                 cl->name, cl->endpoints[0].text);
    carry_health(wc, set, cl->health_check.set);
    int rc = wcluster_adopt(wc, set);
    cluster_set_unref(set);
    return rc;
}

void wcluster_retire(struct wcluster *wc)
{
    for (size_t e = 0; e < wc->n_pools; e++) {
        gr_list_insert_tail(&wc->retired, &wc->pools[e]->retired_link);
        pool_retire(wc->pools[e]);
    }
    wc->n_pools = 0;
}

void wcluster_shutdown(struct wcluster *wc)
{
    for (size_t e = 0; e < wc->n_pools; e++)
        pool_shutdown(wc->pools[e]);
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &wc->retired) {
        pool_shutdown(container_of(it, struct pool, retired_link));
    }
}

void wcluster_destroy(struct wcluster *wc)
{
    if (wc->cfg == NULL)
        return;
    balancer_destroy(&wc->lb);
    for (size_t e = 0; e < wc->n_pools; e++)
        pool_free(wc->pools[e]);
    free(wc->pools);
    wc->pools = NULL;
    while (!gr_list_empty(&wc->retired))
        pool_free(container_of(wc->retired.next, struct pool, retired_link));
    gr_list_remove(&wc->dying_link);
    config_unref(wc->snap);
    wc->snap = NULL;
}
