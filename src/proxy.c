/* The worker threads: building, running, feeding and stopping them (see
 * include/grelay/proxy.h). */
#include "grelay/proxy.h"
#include "grelay/conn.h"
#include "grelay/downstream.h"
#include "grelay/h2_client.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/sniff.h"
#include "grelay/stream.h"
#include "grelay/wcluster.h"
#include "grelay/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a listener stops accepting when the process is out of file
 * descriptors (or memory): pending connections wait in the backlog instead
 * of waking the loop in a busy cycle (nghttpx's sleep_acceptor). */
#define ACCEPT_SLEEP_S 0.1

/* A listener at its max_connections looks again this often even if no
 * wake-up comes (the wake-up is what resumes it; this is the backstop). */
#define ACCEPT_FULL_RECHECK_S 1.0

/* One listening socket of one worker. */
struct wlistener {
    int fd;                            /* bound, listening, non-blocking; -1 once closed */
    ev_io io;                          /* readable = connections to accept */
    ev_timer sleep;                    /* accepting paused (out of fds, or full) until it fires */
    ev_async wake;                     /* a slot of max_connections came back (sent by any worker) */
    uint64_t pauses;                   /* times accepting was paused (logged at warn once a second at most) */
    ev_tstamp logged_at;               /* when a pause was last logged */
    bool full;                         /* not accepting: max_connections reached (until a slot is taken again) */
    uint64_t fulls;                    /* times this socket found the listener full */
    ev_tstamp full_logged_at;          /* when that was last logged */
    struct worker *w;                  /* the worker that accepts on it */
    const struct gr_listener_cfg *cfg; /* what it serves */
};

struct proxy {
    const struct gr_config *cfg;      /* the configuration every worker runs */
    struct worker **workers;          /* cfg->workers of them */
    size_t n_workers;                 /* workers created (all of them unless proxy_new failed) */
    size_t n_started;                 /* workers whose thread runs */
    struct worker_conn_count *counts; /* per listener: its client connections, all workers together */
};

static void on_accept_sleep(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct wlistener *wl = container_of(t, struct wlistener, sleep);
    if (wl->fd >= 0)
        ev_io_start(loop, &wl->io);
}

/* Stops watching the listener for `seconds` (on_accept_sleep starts it
 * again); the timer is stopped first, as libev forbids setting an active one. */
static void sleep_for(struct wlistener *wl, ev_tstamp seconds)
{
    ev_io_stop(wl->w->loop, &wl->io);
    ev_timer_stop(wl->w->loop, &wl->sleep);
    ev_timer_set(&wl->sleep, seconds, 0.0);
    ev_timer_start(wl->w->loop, &wl->sleep);
}

/* accept failed for want of resources: stop watching the listener for a
 * while (a level-triggered watcher would fire again at once, forever). */
static void pause_accepting(struct wlistener *wl, int err)
{
    struct ev_loop *loop = wl->w->loop;
    wl->pauses++;
    if (ev_now(loop) - wl->logged_at >= 1.0) {
        wl->logged_at = ev_now(loop);
        log_warn("listener %s: accept: %s: not accepting for %.0f ms (paused %llu times so far; connections hold "
                 "the file descriptors: raise the limit or lower the load)",
                 wl->cfg->name, strerror(err), ACCEPT_SLEEP_S * 1000, (unsigned long long)wl->pauses);
    }
    sleep_for(wl, ACCEPT_SLEEP_S);
}

/* The overload guard is on: new connections wait in the backlog; the
 * listener looks again after ACCEPT_SLEEP_S (worker.h, worker_overloaded). */
static void wait_overload(struct wlistener *wl) { sleep_for(wl, ACCEPT_SLEEP_S); }

/* The listener has max_connections client connections, all workers
 * together: stop accepting, so that new clients wait in the kernel's
 * backlog (not refused) until a connection closes and wakes us. */
static void pause_full(struct wlistener *wl)
{
    struct ev_loop *loop = wl->w->loop;
    if (!wl->full) {
        wl->full = true;
        wl->fulls++;
        if (ev_now(loop) - wl->full_logged_at >= 1.0) {
            wl->full_logged_at = ev_now(loop);
            log_warn("listener %s: max_connections (%u) reached: new connections wait in the backlog until one "
                     "closes (reached %llu times so far)",
                     wl->cfg->name, wl->cfg->max_connections, (unsigned long long)wl->fulls);
        }
    }
    sleep_for(wl, ACCEPT_FULL_RECHECK_S);
}

/* A slot came back somewhere: a full listener looks again. */
static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct wlistener *wl = container_of(a, struct wlistener, wake);
    if (wl->fd < 0 || !wl->full)
        return;
    ev_timer_stop(loop, &wl->sleep);
    ev_io_start(loop, &wl->io);
}

/* worker_conn_count.released, on any worker's thread: wake every worker's
 * socket of that listener (ev_async_send is thread-safe; the loops live
 * until proxy_free, after every thread has stopped). */
static void on_released(struct worker_conn_count *cc)
{
    struct proxy *p = cc->owner;
    for (size_t i = 0; i < p->n_workers; i++)
        ev_async_send(p->workers[i]->loop, &p->workers[i]->listeners[cc->listener].wake);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct wlistener *wl = container_of(io, struct wlistener, io);
    if (worker_overloaded()) {
        wait_overload(wl);
        return;
    }
    for (int i = 0; i < 64; i++) {
        if (!worker_conn_take(wl->w, wl->cfg)) {
            pause_full(wl);
            return;
        }
        wl->full = false;
        int fd = accept4(wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            worker_conn_release(wl->w, wl->cfg);
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
                pause_accepting(wl, err);
            else if (err != EAGAIN && err != EWOULDBLOCK)
                log_warn("listener %s: accept: %s", wl->cfg->name, strerror(err));
            return;
        }
        /* The slot goes with the socket: whoever closes it gives it back. */
        if (wl->cfg->grpc_web || wl->cfg->tls.set)
            sniff_accept(wl->w, wl->cfg, fd);
        else
            (void)h2_server_accept(wl->w, wl->cfg, fd, NULL, NULL, 0, ev_now(loop));
    }
}

static void close_listeners(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i].fd >= 0) {
            ev_io_stop(w->loop, &w->listeners[i].io);
            ev_timer_stop(w->loop, &w->listeners[i].sleep);
            ev_async_stop(w->loop, &w->listeners[i].wake);
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
    }
}

/* Shutdown: every connection closes (calls are cancelled upstream), then
 * the deferred frees run. */
static void close_everything(struct worker *w)
{
    close_listeners(w);
    while (!gr_list_empty(&w->dconns)) {
        struct downstream *d = container_of(w->dconns.next, struct downstream, link);
        conn_close(&d->io, GR_OK, "shutting down");
    }
    sniff_close_all(w);
    for (size_t i = 0; i < w->cfg->n_clusters; i++)
        wcluster_shutdown(&w->clusters[i]);
    worker_run_deferred(w);
}

/* ---- Drain (SIGTERM): the workers' side; drain.c says when. ---- */

/* How often a draining worker looks whether its client connections are gone. */
#define DRAIN_CHECK_S 0.02
/* What calls cut by a drain read in grpc-message. */
#define DRAIN_CUT_MESSAGE "grelay is shutting down"

/* Publishes the calls drained so far: those that ended since the drain
 * began; after the cut, every call not cut (the rest only wait for their
 * client to read them). */
static void drain_publish(struct worker *w)
{
    struct worker_drain *dr = &w->drain;
    uint64_t all = dr->in_flight + (w->streams_begun - dr->begun);
    uint64_t cut = atomic_load(&dr->cut_calls);
    uint64_t drained = dr->cut_done ? all - cut : all - w->n_streams;
    atomic_store(&dr->drained, drained);
}

static void on_drain_check(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = container_of(t, struct worker, drain.check);
    drain_publish(w);
    if (!gr_list_empty(&w->dconns) || !gr_list_empty(&w->sniffing))
        return;
    ev_timer_stop(loop, t);
    atomic_store(&w->drain.empty, true);
    ev_async_send(w->drain.notify_loop, w->drain.notify);
}

/* Stops accepting (the listening sockets close: new connections are
 * refused by the kernel, or go to a new process that holds the port),
 * closes the connections whose protocol is not known yet, and tells every
 * client connection to drain. */
static void drain_begin(struct worker *w)
{
    if (w->drain.on)
        return;
    w->drain.on = true;
    w->drain.in_flight = w->n_streams;
    w->drain.begun = w->streams_begun;
    close_listeners(w);
    sniff_close_all(w);
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &w->dconns) {
        struct downstream *d = container_of(it, struct downstream, link);
        (void)d->ops->drain(d, NULL);
    }
    ev_timer_start(w->loop, &w->drain.check);
}

static void on_drain_begin(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    drain_begin(container_of(a, struct worker, drain.begin));
}

static void on_drain_cut(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, drain.cut);
    drain_begin(w);
    if (w->drain.cut_done)
        return;
    w->drain.cut_done = true;
    size_t n = 0;
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &w->dconns) {
        struct downstream *d = container_of(it, struct downstream, link);
        n += d->ops->drain(d, DRAIN_CUT_MESSAGE);
    }
    atomic_fetch_add(&w->drain.cut_calls, n);
    drain_publish(w);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct worker *w = container_of(a, struct worker, stop);
    w->stopping = true;
    ev_timer_stop(loop, &w->drain.check);
    close_everything(w);
    ev_break(loop, EVBREAK_ALL);
}

static void on_update(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, update);
    for (size_t i = 0; i < w->cfg->n_clusters; i++) {
        struct endpoint_set *set = atomic_exchange(&w->pending[i], NULL);
        if (set != NULL) {
            if (wcluster_adopt(&w->clusters[i], set) != GR_OK)
                log_error("cluster %s: out of memory adopting a new endpoint set", w->clusters[i].cfg->name);
            cluster_set_unref(set);
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
    ev_timer_init(&wl->sleep, on_accept_sleep, ACCEPT_SLEEP_S, 0.0);
    ev_async_init(&wl->wake, on_wake);
    return GR_OK;
}

static int bind_listeners(struct worker *w, char *err, size_t errlen)
{
    const struct gr_config *cfg = w->cfg;
    w->listeners = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*w->listeners));
    if (w->listeners == NULL) {
        snprintf(err, errlen, "out of memory");
        return GR_ERR_NOMEM;
    }
    w->n_listeners = cfg->n_listeners;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        w->listeners[i].fd = -1;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct wlistener *wl = &w->listeners[i];
        wl->w = w;
        wl->cfg = &cfg->listeners[i];
        if (bind_listener(wl, err, errlen) != GR_OK)
            return GR_ERR_IO;
    }
    return GR_OK;
}

static void worker_free_all(struct worker *w)
{
    if (w == NULL)
        return;
    if (w->listeners != NULL) {
        close_listeners(w);
        free(w->listeners);
    }
    if (w->clusters != NULL) {
        for (size_t i = 0; i < w->cfg->n_clusters; i++)
            wcluster_destroy(&w->clusters[i]);
        free(w->clusters);
    }
    h2_server_worker_destroy(w);
    h2_client_worker_destroy(w);
    worker_destroy(w);
    free(w);
}

/* One worker with its loop, sessions' callbacks, clusters and listeners. */
static struct worker *worker_build(uint32_t id, const struct gr_config *cfg, char *err, size_t errlen)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL || worker_init(w, id, cfg) != GR_OK || h2_server_worker_init(w) != GR_OK ||
        h2_client_worker_init(w) != GR_OK ||
        (w->clusters = calloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*w->clusters))) == NULL) {
        snprintf(err, errlen, "out of memory");
        worker_free_all(w);
        return NULL;
    }
    stream_cache_init(w);
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        if (wcluster_init(&w->clusters[i], w, &cfg->clusters[i]) != GR_OK) {
            snprintf(err, errlen, "out of memory");
            worker_free_all(w);
            return NULL;
        }
    }
    if (bind_listeners(w, err, errlen) != GR_OK) {
        worker_free_all(w);
        return NULL;
    }
    ev_async_init(&w->stop, on_stop);
    ev_async_init(&w->update, on_update);
    ev_async_init(&w->drain.begin, on_drain_begin);
    ev_async_init(&w->drain.cut, on_drain_cut);
    ev_timer_init(&w->drain.check, on_drain_check, DRAIN_CHECK_S, DRAIN_CHECK_S);
    return w;
}

struct proxy *proxy_new(const struct gr_config *cfg, char *err, size_t errlen)
{
    struct proxy *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->workers = calloc(cfg->workers ? cfg->workers : 1, sizeof(*p->workers))) == NULL) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    if ((p->counts = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*p->counts))) == NULL) {
        snprintf(err, errlen, "out of memory");
        proxy_free(p);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        p->counts[i].max = cfg->listeners[i].max_connections;
        p->counts[i].listener = i;
        p->counts[i].owner = p;
        p->counts[i].released = on_released;
    }
    for (uint32_t i = 0; i < cfg->workers; i++) {
        if ((p->workers[i] = worker_build(i, cfg, err, errlen)) == NULL) {
            proxy_free(p);
            return NULL;
        }
        p->workers[i]->conn_counts = p->counts;
        p->n_workers++;
    }
    return p;
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

int proxy_start(struct proxy *p)
{
    for (size_t i = 0; i < p->n_workers; i++) {
        struct worker *w = p->workers[i];
        /* Started here, before the thread exists: ev_async_start() forgets any
         * ev_async_send() made before it, and the main thread may publish an
         * endpoint set (or ask to stop) the moment the thread is created. */
        worker_start_watchers(w);
        ev_async_start(w->loop, &w->stop);
        ev_async_start(w->loop, &w->update);
        ev_async_start(w->loop, &w->drain.begin);
        ev_async_start(w->loop, &w->drain.cut);
        for (size_t j = 0; j < w->n_listeners; j++)
            ev_async_start(w->loop, &w->listeners[j].wake);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            log_error("cannot start worker %u", w->id);
            return GR_ERR_IO;
        }
        p->n_started++;
    }
    return GR_OK;
}

struct worker **proxy_workers(struct proxy *p, size_t *n)
{
    *n = p->n_workers;
    return p->workers;
}

void proxy_drain(struct proxy *p, struct ev_loop *loop, ev_async *notify)
{
    for (size_t i = 0; i < p->n_started; i++) {
        struct worker *w = p->workers[i];
        w->drain.notify_loop = loop;
        w->drain.notify = notify;
        ev_async_send(w->loop, &w->drain.begin);
    }
}

void proxy_drain_cut(struct proxy *p)
{
    for (size_t i = 0; i < p->n_started; i++)
        ev_async_send(p->workers[i]->loop, &p->workers[i]->drain.cut);
}

bool proxy_drained(struct proxy *p)
{
    for (size_t i = 0; i < p->n_started; i++)
        if (!atomic_load(&p->workers[i]->drain.empty))
            return false;
    return true;
}

void proxy_drain_counts(struct proxy *p, uint64_t *drained, uint64_t *cut)
{
    *drained = *cut = 0;
    for (size_t i = 0; i < p->n_started; i++) {
        *drained += atomic_load(&p->workers[i]->drain.drained);
        *cut += atomic_load(&p->workers[i]->drain.cut_calls);
    }
}

void proxy_stop(struct proxy *p)
{
    for (size_t i = 0; i < p->n_started; i++) {
        ev_async_send(p->workers[i]->loop, &p->workers[i]->stop);
        pthread_join(p->workers[i]->thread, NULL);
    }
    p->n_started = 0;
}

void proxy_free(struct proxy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_workers; i++)
        worker_free_all(p->workers[i]);
    free(p->workers);
    free(p->counts);
    free(p);
}
