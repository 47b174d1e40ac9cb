/* The fuzz driver's adapter: every call into grelay's internals (and every
 * field of struct worker it reads) is in this file, so that renaming parts
 * of worker/conn/pool means adapting only here. driver.c sees only
 * driver.h. What is used:
 *   config_load_buffer                  the YAML string
 *   worker_new, w->loop, w->prepare     the worker, without its thread
 *   log_threshold                       quiet unless GRELAY_FUZZ_DEBUG
 *   h1_accept, sniff_accept             the front ends
 *   w->n_streams, w->dconns, w->sniffing, w->dirty, w->reap, w->chunks.n_out,
 *   w->clusters[].pools[]->n_conns/n_waiting, wc->retired   the census
 *   stream_cache_trim, chunk_pool_trim, mem_pool_trim, slab_pool_destroy/init
 *                                       emptying the caches between inputs
 *   arena_init, hdr_list_init, grpcweb_build_trailer, arena_free
 *                                       the probe for a spared allocation */
#include "driver.h"

#include "grelay/arena.h"
#include "grelay/config.h"
#include "grelay/grpcweb.h"
#include "grelay/headers.h"
#include "grelay/h1_server.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/pool.h"
#include "grelay/sniff.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <string.h>

static struct gr_config *cfg; /* lives for the whole process */
static struct worker *w;

int gp_start(const char *yaml, bool debug_log, char *err, size_t errlen)
{
    cfg = config_load_buffer("fuzz.yaml", yaml, strlen(yaml), err, errlen);
    if (cfg == NULL)
        return -1;
    log_threshold = debug_log ? LOG_DEBUG : LOG_ERROR; /* main.c sets it from log_level */
    w = worker_new(0, cfg, err, errlen);
    if (w == NULL)
        return -1;
    /* worker_start() would start this (and the async watchers) and a thread.
     * We run the loop ourselves and need only the end-of-iteration flush and
     * reap. The listener socket worker_new() bound stays unused: sockets are
     * handed to the front end directly. */
    ev_prepare_start(w->loop, &w->prepare);
    return 0;
}

struct ev_loop *gp_loop(void) { return w->loop; }

void gp_accept(enum fuzz_front front, int fd)
{
    const struct gr_listener_cfg *l = &cfg->listeners[0];
    if (front == FUZZ_FRONT_H1)
        h1_accept(w, l, fd, NULL, NULL, 0);
    else
        sniff_accept(w, l, fd); /* what a grpc_web listener does; sees the preface, calls dconn_accept */
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
    c->chunks_out = w->chunks.n_out;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct wcluster *wc = &w->clusters[i];
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
    w->free_streams_low = w->n_free_streams; /* stream_cache_trim frees that many */
    stream_cache_trim(w);
    w->chunks.n_free_low = w->chunks.n_free; /* likewise for chunks */
    chunk_pool_trim(&w->chunks, 0);
    mem_pool_trim(&w->h2mem, 0);
    /* No dconn is alive between inputs, so the slab can go and come back. */
    size_t per_slab = w->dconn_slab.per_slab;
    slab_pool_destroy(&w->dconn_slab);
    slab_pool_init(&w->dconn_slab, sizeof(struct dconn), per_slab);
}

void gp_probe_trailer_alloc(void)
{
    struct arena a;
    struct hdr_list l;
    struct grpcweb web;
    memset(&web, 0, sizeof(web));
    arena_init(&a, 64); /* empty: the frame is its first malloc */
    hdr_list_init(&l);  /* no trailers: the frame is all the probe allocates */
    grpcweb_build_trailer(&web, &a, &l);
    arena_free(&a);
}
