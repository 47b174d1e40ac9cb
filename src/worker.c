/* Worker threads: loop, listeners, and the end-of-iteration work (flush
 * dirty connections in one batch, then free closed ones). */
#include "grelay/worker.h"
#include "grelay/h2_client.h"
#include "grelay/downstream.h"
#include "grelay/h2_hibernate.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/pool.h"
#include "grelay/sniff.h"
#include "grelay/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct wlistener *wl = container_of(io, struct wlistener, io);
    for (int i = 0; i < 64; i++) {
        int fd = accept4(wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("listener %s: accept: %s", wl->cfg->name, strerror(errno));
            return;
        }
        if (wl->cfg->grpc_web || wl->cfg->tls.set)
            sniff_accept(wl->w, wl->cfg, fd);
        else
            dconn_accept(wl->w, wl->cfg, fd, NULL, NULL, 0);
    }
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(p, struct worker, prepare);
    while (!gr_list_empty(&w->dirty)) {
        struct conn *c = container_of(w->dirty.next, struct conn, dirty_link);
        conn_flush(c);
    }
    while (!gr_list_empty(&w->reap)) {
        struct conn *c = container_of(w->reap.next, struct conn, reap_link);
        gr_list_remove(&c->reap_link);
        c->ops->destroy(c);
    }
}

static void close_everything(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i].fd >= 0) {
            ev_io_stop(w->loop, &w->listeners[i].io);
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
    }
    while (!gr_list_empty(&w->dconns)) {
        struct downstream *d = container_of(w->dconns.next, struct downstream, link);
        conn_close(&d->io, GR_OK, "shutting down");
    }
    sniff_close_all(w);
    for (size_t i = 0; i < w->cfg->n_clusters; i++) {
        struct wcluster *wc = &w->clusters[i];
        for (size_t e = 0; e < wc->n_pools; e++)
            pool_shutdown(wc->pools[e]);
        struct gr_list *it, *tmp;
        gr_list_for_each_safe(it, tmp, &wc->retired)
        {
            pool_shutdown(container_of(it, struct pool, retired_link));
        }
    }
    on_prepare(w->loop, &w->prepare, 0);
}

static void on_hibernate(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    h2_hibernate_sweep(container_of(t, struct worker, hibernate), ev_now(loop));
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct worker *w = container_of(a, struct worker, stop);
    w->stopping = true;
    ev_timer_stop(loop, &w->hibernate);
    close_everything(w);
    ev_break(loop, EVBREAK_ALL);
}

static bool same_endpoint(const struct endpoint *a, const struct endpoint *b)
{
    return a->address.len == b->address.len && memcmp(&a->address.ss, &b->address.ss, a->address.len) == 0 &&
           strcmp(a->host, b->host) == 0;
}

/* Adopts an endpoint set: pools of endpoints that stay keep their
 * connections, new endpoints get new pools, the others retire (their calls
 * finish). The balancer is rebuilt, keeping the counts of calls in flight. */
static int apply_set(struct worker *w, struct wcluster *wc, const struct endpoint_set *set)
{
    size_t n = set->n;
    struct pool **np = calloc(n ? n : 1, sizeof(*np));
    uint32_t *weights = calloc(n ? n : 1, sizeof(*weights));
    bool *kept = calloc(wc->n_pools ? wc->n_pools : 1, sizeof(*kept));
    struct balancer nb;
    int rc = GR_ERR_NOMEM;
    if (np == NULL || weights == NULL || kept == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        weights[i] = set->eps[i].weight;
    if (balancer_init(&nb, wc->cfg->lb_policy, weights, n, gr_rand(&w->rng)) != GR_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < wc->n_pools && np[i] == NULL; j++) {
            if (!kept[j] && same_endpoint(wc->pools[j]->ep, &set->eps[i])) {
                kept[j] = true;
                np[i] = wc->pools[j];
                nb.active[i] = wc->lb.active[j];
                np[i]->index = i;
                np[i]->own.weight = set->eps[i].weight;
            }
        }
        if (np[i] == NULL && (np[i] = pool_new(w, wc, i, &set->eps[i])) == NULL) {
            /* Out of memory: undo, keep the old set. */
            for (size_t k = 0; k < i; k++) {
                bool old = false;
                for (size_t j = 0; j < wc->n_pools; j++)
                    old |= wc->pools[j] == np[k];
                if (!old)
                    pool_free(np[k]);
                else
                    np[k]->index = k; /* restored below */
            }
            for (size_t j = 0; j < wc->n_pools; j++)
                wc->pools[j]->index = j;
            balancer_destroy(&nb);
            goto out;
        }
    }
    for (size_t j = 0; j < wc->n_pools; j++) {
        if (!kept[j]) {
            log_info("cluster %s: endpoint %s left the set", wc->cfg->name, wc->pools[j]->ep->text);
            pool_retire(wc->pools[j]);
        }
    }
    balancer_destroy(&wc->lb);
    wc->lb = nb;
    free(wc->pools);
    wc->pools = np;
    np = NULL;
    wc->n_pools = n;
    snprintf(wc->why_empty, sizeof(wc->why_empty), "%s", set->why_empty);
    rc = GR_OK;
out:
    free(np);
    free(weights);
    free(kept);
    return rc;
}

void worker_publish(struct worker *w, size_t i, struct endpoint_set *set)
{
    endpoint_set_ref(set);
    struct endpoint_set *old = atomic_exchange(&w->clusters[i].pending, set);
    endpoint_set_unref(old);
    ev_async_send(w->loop, &w->update);
}

static void on_update(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, update);
    for (size_t i = 0; i < w->cfg->n_clusters; i++) {
        struct endpoint_set *set = atomic_exchange(&w->clusters[i].pending, NULL);
        if (set != NULL) {
            if (apply_set(w, &w->clusters[i], set) != GR_OK)
                log_error("cluster %s: out of memory adopting a new endpoint set", w->clusters[i].cfg->name);
            endpoint_set_unref(set);
        }
    }
}

static int bind_listener(struct wlistener *wl, char *err, size_t errlen)
{
    const struct gr_addr *a = &wl->cfg->address;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listener %s: socket: %s", wl->cfg->name, strerror(errno));
        return GR_ERR_IO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "listener %s: cannot listen on %s: %s", wl->cfg->name, a->text, strerror(errno));
        close(fd);
        return GR_ERR_IO;
    }
    wl->fd = fd;
    ev_io_init(&wl->io, on_accept, fd, EV_READ);
    return GR_OK;
}

struct worker *worker_new(uint32_t id, const struct gr_config *cfg, char *err, size_t errlen)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->id = id;
    w->cfg = cfg;
    gr_list_init(&w->dconns);
    gr_list_init(&w->h2_lru);
    gr_list_init(&w->sniffing);
    gr_list_init(&w->dirty);
    gr_list_init(&w->reap);
    chunk_pool_init(&w->chunks, 1024);
    mem_pool_init(&w->h2mem);
    slab_pool_init(&w->dconn_slab, sizeof(struct dconn), 64);
    w->loop = ev_loop_new(EVFLAG_AUTO);
    if (w->loop == NULL || h2_server_setup(&w->server_cbs, &w->server_opt) != GR_OK ||
        h2_client_setup(&w->client_cbs, &w->client_opt) != GR_OK) {
        snprintf(err, errlen, "out of memory");
        worker_free(w);
        return NULL;
    }
    w->clusters = calloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*w->clusters));
    if (w->clusters == NULL) {
        snprintf(err, errlen, "out of memory");
        worker_free(w);
        return NULL;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 16) ^ ((uint64_t)(id + 1) * 0xbf58476d1ce4e5b9ull) ^ 0x94d049bb133111ebull;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        struct wcluster *wc = &w->clusters[i];
        const struct gr_cluster_cfg *cl = &cfg->clusters[i];
        wc->cfg = cl;
        gr_list_init(&wc->retired);
        atomic_init(&wc->pending, NULL);
        struct endpoint_set *set = cluster_static_set(cl);
        if (set != NULL && set->n == 0)
            snprintf(set->why_empty, sizeof(set->why_empty),
                     "cluster %s has no endpoint yet: %s has not been resolved", cl->name, cl->endpoints[0].text);
        if (set == NULL || apply_set(w, wc, set) != GR_OK) {
            endpoint_set_unref(set);
            snprintf(err, errlen, "out of memory");
            worker_free(w);
            return NULL;
        }
        endpoint_set_unref(set);
    }
    w->listeners = calloc(cfg->n_listeners, sizeof(*w->listeners));
    if (w->listeners == NULL) {
        snprintf(err, errlen, "out of memory");
        worker_free(w);
        return NULL;
    }
    w->n_listeners = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        w->listeners[i].fd = -1;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct wlistener *wl = &w->listeners[i];
        wl->w = w;
        wl->cfg = &cfg->listeners[i];
        if (bind_listener(wl, err, errlen) != GR_OK) {
            worker_free(w);
            return NULL;
        }
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        ev_tstamp after = (ev_tstamp)cfg->listeners[i].hibernate_after_ms / 1000.0;
        if (after > 0 && (w->hibernate_min == 0 || after < w->hibernate_min))
            w->hibernate_min = after;
    }
    /* Twice per shortest hibernate_after: a connection sleeps within 1.5x of it
     * (one pass asks the client to empty its HPACK table, the next one lets go). */
    ev_timer_init(&w->hibernate, on_hibernate, w->hibernate_min / 2, w->hibernate_min / 2);
    ev_prepare_init(&w->prepare, on_prepare);
    ev_async_init(&w->stop, on_stop);
    ev_async_init(&w->update, on_update);
    return w;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "w%u", w->id);
    log_set_thread_name(name);
    for (size_t i = 0; i < w->n_listeners; i++)
        ev_io_start(w->loop, &w->listeners[i].io);
    ev_run(w->loop, 0);
    return NULL;
}

int worker_start(struct worker *w)
{
    /* Started here, before the thread exists: ev_async_start() forgets any
     * ev_async_send() made before it, and the main thread may publish an
     * endpoint set (or ask to stop) the moment the thread is created. */
    ev_prepare_start(w->loop, &w->prepare);
    ev_async_start(w->loop, &w->stop);
    ev_async_start(w->loop, &w->update);
    if (w->hibernate_min > 0)
        ev_timer_start(w->loop, &w->hibernate);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return GR_ERR_IO;
    return GR_OK;
}

void worker_stop_and_join(struct worker *w)
{
    ev_async_send(w->loop, &w->stop);
    pthread_join(w->thread, NULL);
}

void worker_free(struct worker *w)
{
    if (w == NULL)
        return;
    if (w->listeners != NULL) {
        for (size_t i = 0; i < w->n_listeners; i++)
            if (w->listeners[i].fd >= 0)
                close(w->listeners[i].fd);
        free(w->listeners);
    }
    if (w->clusters != NULL) {
        for (size_t i = 0; i < w->cfg->n_clusters; i++) {
            struct wcluster *wc = &w->clusters[i];
            if (wc->cfg == NULL)
                continue;
            balancer_destroy(&wc->lb);
            for (size_t e = 0; e < wc->n_pools; e++)
                pool_free(wc->pools[e]);
            free(wc->pools);
            while (!gr_list_empty(&wc->retired))
                pool_free(container_of(wc->retired.next, struct pool, retired_link));
            endpoint_set_unref(atomic_exchange(&wc->pending, NULL));
        }
        free(w->clusters);
    }
    if (w->server_cbs)
        nghttp2_session_callbacks_del(w->server_cbs);
    if (w->client_cbs)
        nghttp2_session_callbacks_del(w->client_cbs);
    if (w->server_opt)
        nghttp2_option_del(w->server_opt);
    if (w->client_opt)
        nghttp2_option_del(w->client_opt);
    chunk_pool_destroy(&w->chunks);
    mem_pool_destroy(&w->h2mem);
    slab_pool_destroy(&w->dconn_slab);
    while (w->free_streams != NULL) {
        void *s = w->free_streams;
        w->free_streams = w->free_streams->next_free;
        free(s);
    }
    if (w->loop)
        ev_loop_destroy(w->loop);
    free(w);
}
