/* Outlier ejection applied to a pool (pool_eject.h): the run of failed
 * calls of each endpoint, as its worker sees it, and the ejections and
 * returns it leads to, with their logs and metrics. */
#include "grelay/pool_eject.h"
#include "grelay/log.h"
#include "grelay/outlier.h"
#include "grelay/pool.h"
#include "grelay/stats.h"
#include "grelay/wcluster.h"
#include "grelay/worker.h"

/* An ejection by failed calls is over: picks may take the endpoint again. */
static void on_outlier_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct pool *p = container_of(t, struct pool, outlier_timer);
    outlier_return(&p->outlier, gr_now_us());
    uint64_t *b = stats_block(p->w->stats, p->stats);
    stats_set(b, E_OUTLIER_UNTIL, 0);
    stats_set(b, E_OUTLIER_CODE, 0);
    pool_set_ejected_until(p);
    if (!p->retired)
        log_info("upstream %s of cluster %s returns from its ejection after failed calls", pool_address(p),
                 p->cl->name);
}

/* Endpoints of p's cluster (on this worker) that failed calls eject now. */
static size_t ejected_by_calls(const struct pool *p)
{
    const struct wcluster *wc = worker_cluster(p->w, p->cl);
    size_t n = 0;
    for (size_t i = 0; i < wc->n_pools; i++)
        n += wc->pools[i]->outlier.until_us != 0; /* until its return (on_outlier_timer) */
    return n;
}

/* The run of failures reached consecutive_failures: p is ejected, unless
 * max_ejection_percent of its cluster's endpoints already are (then the
 * next failure asks again). */
static void eject_for_calls(struct pool *p, uint64_t now)
{
    const struct gr_outlier_cfg *cfg = &p->cl->outlier;
    const struct wcluster *wc = worker_cluster(p->w, p->cl);
    size_t max = outlier_max_ejected(cfg, wc->n_pools), already = ejected_by_calls(p);
    if (already >= max) {
        log_debug("upstream %s of cluster %s: %u failed calls in a row, but %zu of %zu endpoints are ejected "
                  "already (max_ejection_percent %u): not ejected",
                  pool_address(p), p->cl->name, cfg->consecutive_failures, already, wc->n_pools,
                  cfg->max_ejection_percent);
        return;
    }
    uint64_t len = outlier_eject(&p->outlier, cfg, now);
    uint64_t *b = stats_block(p->w->stats, p->stats);
    stats_add(b, E_OUTLIER_EJECTIONS, 1);
    stats_set(b, E_OUTLIER_UNTIL, p->outlier.until_us);
    stats_set(b, E_OUTLIER_CODE, outlier_code_slot(p->outlier.last_failure));
    pool_set_ejected_until(p);
    log_info("upstream %s of cluster %s ejected for %.3f s: %u calls in a row failed (consecutive_failures), the "
             "last with %s",
             pool_address(p), p->cl->name, (double)len / 1e6, cfg->consecutive_failures,
             outlier_failure_name(p->outlier.last_failure));
    /* Not active here (pool_attempt_result ignores an ejected pool until its
     * return); stopped first all the same, never re-initialised while libev
     * holds it. Stopped by pool_free (a zeroed watcher stops too). */
    ev_timer_stop(p->w->loop, &p->outlier_timer);
    ev_init(&p->outlier_timer, on_outlier_timer);
    ev_timer_set(&p->outlier_timer, (double)len / 1e6, 0.0);
    ev_timer_start(p->w->loop, &p->outlier_timer);
}

void pool_attempt_result(struct pool *p, int code)
{
    const struct gr_outlier_cfg *cfg = &p->cl->outlier;
    /* Ejected until its timer returns it, even once until_us has passed on
     * gr_now_us: the timer runs on ev_now, and fires at the next iteration. */
    if (!cfg->set || p->retired || p->outlier.until_us != 0)
        return;
    uint64_t now = gr_now_us();
    if (outlier_count(&p->outlier, cfg, outlier_classify(cfg, code), code, now))
        eject_for_calls(p, now);
}
