/* The fuzz driver's adapter: every call into grelay's internals (and every
 * field of struct worker it reads) is in this file, so that renaming parts
 * of worker/conn/pool means adapting only here. driver.c sees only
 * driver.h. What is used:
 *   config_load_buffer                  the YAML string
 *   stats_init                          metrics, as main.c sets them up
 *   proxy_new, proxy_workers            the worker, without its thread
 *   worker_start_watchers               its end-of-iteration flush and reap
 *   log_threshold                       quiet unless GRELAY_FUZZ_DEBUG
 *   h1_server_accept, sniff_accept      the front ends
 *   w->n_streams, w->dconns, w->sniffing, w->dirty, w->reap, w->chunks.n_out,
 *   worker_cluster()->pools[]->n_conns/n_waiting, wc->retired   the census
 *   worker_cache_trim, chunk_pool_trim, mem_pool_trim, h2_server_worker_trim
 *                                       emptying the caches between inputs */
#include "driver.h"

#include "grelay/config.h"
#include "grelay/h1_server.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/pool.h"
#include "grelay/proxy.h"
#include "grelay/sniff.h"
#include "grelay/stats.h"
#include "grelay/wcluster.h"
#include "grelay/worker.h"

#include <string.h>

static struct gr_config *cfg; /* lives for the whole process */
static struct proxy *proxy;   /* likewise: one worker, never started as a thread */
static struct worker *w;

int gp_start(const char *yaml, bool debug_log, char *err, size_t errlen)
{
    cfg = config_load_buffer("fuzz.yaml", yaml, strlen(yaml), err, errlen);
    if (cfg == NULL)
        return -1;
    log_threshold = debug_log ? LOG_DEBUG : LOG_ERROR; /* main.c sets it from log_level */
    if (stats_init(cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    proxy = proxy_new(cfg, err, errlen);
    if (proxy == NULL)
        return -1;
    size_t n;
    w = proxy_workers(proxy, &n)[0];
    /* proxy_start() would start these (and the async watchers) and a
     * thread. We run the loop ourselves and need only the end-of-iteration
     * flush and reap. The listener socket proxy_new() bound stays unused:
     * sockets are handed to the front end directly. */
    worker_start_watchers(w);
    return 0;
}

struct ev_loop *gp_loop(void) { return w->loop; }

void gp_accept(enum fuzz_front front, int fd)
{
    const struct gr_listener_cfg *l = &cfg->listeners[0];
    (void)worker_conn_take(w, l); /* what the listener does before accept(); destroying the connection gives it back */
    if (front == FUZZ_FRONT_H1)
        h1_server_accept(w, l, fd, NULL, NULL, 0, 0);
    else
        sniff_accept(w, l, fd); /* what a grpc_web listener does; sees the preface, calls h2_server_accept */
}

static size_t list_len(const struct gr_list *head)
{
    size_t n = 0;
    for (const struct gr_list *it = head->next; it != head; it = it->next)
        n++;
    return n;
}

void gp_census(struct gp_census *c)
{
    memset(c, 0, sizeof(*c));
    c->streams = w->n_streams;
    c->downstream_conns = list_len(&w->dconns);
    c->sniffing = list_len(&w->sniffing);
    c->dirty = list_len(&w->dirty);
    c->reap = list_len(&w->reap);
    c->chunks_out = w->chunks.big.n_out + w->chunks.small.n_out;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct wcluster *wc = worker_cluster(w, &cfg->clusters[i]);
        for (size_t e = 0; e < wc->n_pools; e++) {
            c->upstream_conns += wc->pools[e]->n_conns;
            c->waiting += wc->pools[e]->n_waiting;
        }
        for (const struct gr_list *it = wc->retired.next; it != &wc->retired; it = it->next) {
            const struct pool *p = container_of(it, struct pool, retired_link);
            c->upstream_conns += p->n_conns;
            c->waiting += p->n_waiting;
        }
    }
}

void gp_trim(void)
{
    worker_cache_trim(&w->streams, true);
    w->chunks.big.n_free_low = w->chunks.big.n_free; /* buf_pool_trim frees that many */
    w->chunks.small.n_free_low = w->chunks.small.n_free;
    buf_pool_trim(&w->chunks, 0);
    mem_pool_trim(&w->h2mem, 0);
    h2_server_worker_trim(w); /* no connection is alive between inputs */
}
