/* The worker threads: building, running, feeding and stopping them (see
 * include/grelay/proxy.h). */
#include "grelay/proxy.h"
#include "grelay/access_log.h"
#include "grelay/conn.h"
#include "grelay/downstream.h"
#include "grelay/h2_client.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/sniff.h"
#include "grelay/stats.h"
#include "grelay/stream.h"
#include "grelay/upgrade.h"
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
    struct gr_config *cfg;            /* the snapshot every worker runs (a reference) */
    struct worker **workers;          /* cfg->workers of them */
    size_t n_workers;                 /* workers created (all of them unless proxy_new failed) */
    size_t n_started;                 /* workers whose thread runs */
    struct worker_conn_count *counts; /* per listener slot: its client connections, all workers together */
    _Atomic uint32_t *holders;        /* per cluster slot: workers that still have a cluster in it */
    int *new_fds;                     /* [slot * n_workers + worker]: sockets a reload bound for new listeners */
    size_t n_fds;                     /* entries of new_fds */
    _Atomic size_t acks;              /* workers that adopted the snapshot proxy_reload published */
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
            stats_limit_hit(wl->w->stats, wl->cfg, LIMIT_MAX_CONNECTIONS);
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

static void close_listener(struct wlistener *wl)
{
    if (wl->fd >= 0) {
        ev_io_stop(wl->w->loop, &wl->io);
        ev_timer_stop(wl->w->loop, &wl->sleep);
        ev_async_stop(wl->w->loop, &wl->wake);
        close(wl->fd);
        wl->fd = -1;
    }
}

static void close_listeners(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        close_listener(&w->listeners[i]);
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
    for (size_t i = 0; i < w->n_clusters; i++)
        if (w->clusters[i] != NULL)
            wcluster_shutdown(w->clusters[i]);
    struct gr_list *it;
    for (it = w->dying.next; it != &w->dying; it = it->next)
        wcluster_shutdown(container_of(it, struct wcluster, dying_link));
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
    ev_timer_stop(loop, &w->drain.removed);
    close_everything(w);
    ev_break(loop, EVBREAK_ALL);
}

static void on_update(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, update);
    for (size_t i = 0; i < w->n_clusters; i++) {
        if (w->clusters[i] == NULL)
            continue; /* a set for a cluster of a snapshot not adopted yet waits for it */
        struct endpoint_set *set = atomic_exchange(&w->pending[i], NULL);
        if (set != NULL) {
            if (wcluster_adopt(w->clusters[i], set) != GR_OK)
                log_error("cluster %s: out of memory adopting a new endpoint set", w->clusters[i]->cfg->name);
            cluster_set_unref(set);
        }
    }
}

/* A listening socket for l (SO_REUSEPORT: one per worker), or -1 with a
 * message in err. On the main thread at start and at a reload. */
static int listen_on(const struct gr_listener_cfg *l, char *err, size_t errlen)
{
    const struct gr_addr *a = &l->address;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listener %s: socket: %s", l->name, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "listener %s: cannot listen on %s: %s", l->name, a->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* wl serves l on fd from now on. */
static void watch_listener(struct wlistener *wl, const struct gr_listener_cfg *l, int fd)
{
    wl->fd = fd;
    wl->cfg = l;
    wl->full = false;
    ev_io_set(&wl->io, fd, EV_READ);
}

static int bind_listeners(struct worker *w, char *err, size_t errlen)
{
    const struct gr_config *cfg = w->cfg;
    w->listeners = calloc(WORKER_LISTENER_SLOTS, sizeof(*w->listeners));
    if (w->listeners == NULL) {
        snprintf(err, errlen, "out of memory");
        return GR_ERR_NOMEM;
    }
    w->n_listeners = WORKER_LISTENER_SLOTS;
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct wlistener *wl = &w->listeners[i];
        wl->fd = -1;
        wl->w = w;
        ev_io_init(&wl->io, on_accept, -1, EV_READ);
        ev_timer_init(&wl->sleep, on_accept_sleep, ACCEPT_SLEEP_S, 0.0);
        ev_async_init(&wl->wake, on_wake);
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        /* A socket handed over by the process this one upgrades (its
         * accept queue goes on), or a new one. */
        int fd = upgrade_take(cfg->listeners[i].name, &cfg->listeners[i].address);
        if (fd < 0 && (fd = listen_on(&cfg->listeners[i], err, errlen)) < 0)
            return GR_ERR_IO;
        watch_listener(&w->listeners[cfg->listeners[i].slot], &cfg->listeners[i], fd);
    }
    return GR_OK;
}

/* ---- A reload, on the worker (proxy_reload publishes; see docs/reload.md). ---- */

/* How often a worker looks whether the pools of removed clusters are gone. */
#define DYING_CHECK_S 0.5

/* Frees wc and gives its slot back to the main thread. */
static void free_cluster(struct worker *w, struct wcluster *wc)
{
    if (wc == NULL)
        return;
    size_t slot = wc->cfg != NULL ? wc->cfg->index : SIZE_MAX;
    struct proxy *p = w->proxy;
    wcluster_destroy(wc);
    free(wc);
    if (p != NULL && slot < WORKER_CLUSTER_SLOTS)
        atomic_fetch_sub(&p->holders[slot], 1);
}

static void on_dying_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = container_of(t, struct worker, dying_timer);
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &w->dying) {
        struct wcluster *wc = container_of(it, struct wcluster, dying_link);
        if (wcluster_gone(wc)) {
            log_debug("cluster %s: its last pool is gone", wc->cfg->name);
            free_cluster(w, wc);
        }
    }
    if (gr_list_empty(&w->dying))
        ev_timer_stop(loop, t);
}

/* worker->snap_unused: the last connection and call of an old snapshot are
 * gone. The clusters that no newer snapshot names retire (no call can pick
 * them any more: their connections are idle), then the snapshot goes. */
static void on_snap_unused(struct worker *w, struct worker_snap *s)
{
    for (size_t i = 0; i < s->cfg->n_clusters; i++) {
        size_t slot = s->cfg->clusters[i].index;
        struct wcluster *wc = w->clusters[slot];
        if (wc == NULL || --wc->snaps > 0)
            continue;
        w->clusters[slot] = NULL;
        cluster_set_unref(atomic_exchange(&w->pending[slot], NULL));
        wcluster_retire(wc);
        gr_list_insert_tail(&w->dying, &wc->dying_link);
        if (!ev_is_active(&w->dying_timer))
            ev_timer_again(w->loop, &w->dying_timer);
    }
    worker_snap_free(s);
}

/* The clusters of cfg, a snapshot the worker is about to run: those it has
 * (same slot, the same name) take the new settings, new ones start. */
static int adopt_clusters(struct worker *w, struct gr_config *cfg)
{
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        const struct gr_cluster_cfg *cl = &cfg->clusters[i];
        struct wcluster *wc = w->clusters[cl->index];
        if (wc != NULL) {
            if (wcluster_migrate(wc, cl, cfg) != GR_OK)
                log_error("cluster %s: out of memory matching its endpoints: it keeps the previous ones", cl->name);
            wc->snaps++;
            continue;
        }
        if ((wc = calloc(1, sizeof(*wc))) == NULL)
            return GR_ERR_NOMEM;
        if (wcluster_init(wc, w, cl) != GR_OK) {
            wcluster_destroy(wc);
            free(wc);
            return GR_ERR_NOMEM;
        }
        wc->snap = config_ref(cfg);
        wc->snaps = 1;
        w->clusters[cl->index] = wc;
    }
    return GR_OK;
}

/* What the calls of a reload-removed listener read when they are cut. */
#define REMOVED_CUT_MESSAGE "grelay's listener was removed by a reload"

/* Cuts the calls of reload-removed listeners whose drain_timeout is over,
 * and sets the timer for the next ones. */
static void on_removed_cut(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = container_of(t, struct worker, drain.removed);
    ev_tstamp now = ev_now(loop), next = 0;
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &w->dconns) {
        struct downstream *d = container_of(it, struct downstream, link);
        if (d->cut_at <= 0)
            continue;
        if (d->cut_at <= now) {
            d->cut_at = 0;
            (void)d->ops->drain(d, REMOVED_CUT_MESSAGE);
        } else if (next == 0 || d->cut_at < next) {
            next = d->cut_at;
        }
    }
    if (next > 0) {
        ev_timer_set(t, next - now, 0.0);
        ev_timer_start(loop, t);
    }
}

/* A reload removed the listener of this slot, or changed its address or
 * TLS: its socket is closed (new clients are refused there, or reach the
 * new socket of the same address). Its connections drain as on SIGTERM
 * (HTTP/2: the two-phase GOAWAY; HTTP/1.1: Connection: close), on the
 * snapshot they began with; calls still open after the new snapshot's
 * drain_timeout are cut with UNAVAILABLE. Connections still sniffing close. */
static void listener_removed(struct worker *w, size_t slot, const struct gr_config *cfg)
{
    ev_tstamp cut_at = ev_now(w->loop) + (ev_tstamp)cfg->drain_timeout_ms / 1e3;
    size_t n = 0;
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &w->dconns) {
        struct downstream *d = container_of(it, struct downstream, link);
        if (d->cfg->slot != slot || d->cut_at > 0)
            continue;
        n++;
        d->cut_at = cfg->drain_timeout_ms > 0 ? cut_at : 0;
        (void)d->ops->drain(d, NULL);
    }
    sniff_close_slot(w, slot);
    if (n > 0 && cfg->drain_timeout_ms > 0 && !ev_is_active(&w->drain.removed)) {
        ev_timer_set(&w->drain.removed, (ev_tstamp)cfg->drain_timeout_ms / 1e3, 0.0);
        ev_timer_start(w->loop, &w->drain.removed);
    }
    log_debug("listener slot %zu closed on this worker; %zu client connection%s drain", slot, n, n == 1 ? "" : "s");
}

/* Kept listeners serve cfg's settings for new connections; new ones start
 * accepting on the socket the main thread bound; removed ones close. */
static void adopt_listeners(struct worker *w, struct proxy *p, const struct gr_config *cfg)
{
    bool in_cfg[WORKER_LISTENER_SLOTS] = {false};
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct gr_listener_cfg *l = &cfg->listeners[i];
        struct wlistener *wl = &w->listeners[l->slot];
        in_cfg[l->slot] = true;
        if (wl->fd >= 0) {
            wl->cfg = l;
            continue;
        }
        int *fd = &p->new_fds[l->slot * p->n_workers + w->id];
        if (*fd < 0)
            continue;
        watch_listener(wl, l, *fd);
        *fd = -1;
        ev_async_start(w->loop, &wl->wake);
        if (!w->stopping)
            ev_io_start(w->loop, &wl->io);
    }
    for (size_t slot = 0; slot < w->n_listeners; slot++) {
        if (w->listeners[slot].fd >= 0 && !in_cfg[slot]) {
            close_listener(&w->listeners[slot]);
            listener_removed(w, slot, cfg);
        }
    }
}

/* The main thread published a snapshot: new calls use it from the next
 * event on; calls in flight keep theirs (stream.c, request.c). */
static void on_reload(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct worker *w = container_of(a, struct worker, reload);
    struct proxy *p = w->proxy;
    struct gr_config *cfg = atomic_exchange(&w->next_cfg, NULL);
    if (cfg == NULL)
        return;
    if (adopt_clusters(w, cfg) != GR_OK || worker_snap_adopt(w, config_ref(cfg)) == NULL) {
        log_error("out of memory: this worker keeps running the previous configuration");
        for (size_t i = 0; i < cfg->n_listeners; i++) {
            int *fd = &p->new_fds[cfg->listeners[i].slot * p->n_workers + w->id];
            if (*fd >= 0)
                close(*fd);
            *fd = -1;
        }
    } else {
        adopt_listeners(w, p, cfg);
        h2_server_worker_reload(w);
        on_update(loop, &w->update, 0); /* sets DNS published for the new clusters */
    }
    config_unref(cfg);
    atomic_fetch_add(&p->acks, 1);
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
        for (size_t i = 0; i < w->n_clusters; i++)
            free_cluster(w, w->clusters[i]);
        while (!gr_list_empty(&w->dying))
            free_cluster(w, container_of(w->dying.next, struct wcluster, dying_link));
        free(w->clusters);
    }
    if (w->loop != NULL)
        ev_timer_stop(w->loop, &w->dying_timer);
    h2_server_worker_destroy(w);
    h2_client_worker_destroy(w);
    worker_destroy(w);
    stats_shard_free(w->stats);
    access_log_shard_free(w->alog);
    free(w);
}

/* One worker with its loop, sessions' callbacks, clusters and listeners. */
static struct worker *worker_build(struct proxy *p, uint32_t id, struct gr_config *cfg, char *err, size_t errlen)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (w == NULL || worker_init(w, id, cfg) != GR_OK || h2_server_worker_init(w) != GR_OK ||
        h2_client_worker_init(w) != GR_OK || (w->clusters = calloc(w->n_clusters, sizeof(*w->clusters))) == NULL ||
        (w->stats = stats_shard_new(id)) == NULL) {
        snprintf(err, errlen, "out of memory");
        worker_free_all(w);
        return NULL;
    }
    w->proxy = p;
    w->alog = access_log_shard_new(id); /* NULL (out of memory): this worker logs no call, and says so */
    w->snap_unused = on_snap_unused;
    gr_list_init(&w->dying);
    ev_timer_init(&w->dying_timer, on_dying_timer, DYING_CHECK_S, DYING_CHECK_S);
    stream_cache_init(w);
    if (adopt_clusters(w, cfg) != GR_OK || worker_snap_adopt(w, config_ref(cfg)) == NULL) {
        snprintf(err, errlen, "out of memory");
        worker_free_all(w);
        return NULL;
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
    ev_timer_init(&w->drain.removed, on_removed_cut, 0.0, 0.0);
    ev_async_init(&w->reload, on_reload);
    return w;
}

/* A listener slot starts counting the connections of l. */
static void count_listener(struct proxy *p, const struct gr_listener_cfg *l)
{
    struct worker_conn_count *cc = &p->counts[l->slot];
    atomic_store(&cc->max, l->max_connections);
    cc->listener = l->slot;
    cc->owner = p;
    cc->released = on_released;
}

struct proxy *proxy_new(struct gr_config *cfg, char *err, size_t errlen)
{
    if (cfg->n_listeners > WORKER_LISTENER_SLOTS || cfg->n_clusters > WORKER_CLUSTER_SLOTS) {
        snprintf(err, errlen, "%s: at most %d listeners and %d clusters", cfg->path, WORKER_LISTENER_SLOTS,
                 WORKER_CLUSTER_SLOTS);
        return NULL;
    }
    stats_bind(cfg); /* the series of its listeners and routes, before a worker counts in them */
    struct proxy *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->workers = calloc(cfg->workers ? cfg->workers : 1, sizeof(*p->workers))) == NULL) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = config_ref(cfg);
    p->counts = calloc(WORKER_LISTENER_SLOTS, sizeof(*p->counts));
    p->holders = calloc(WORKER_CLUSTER_SLOTS, sizeof(*p->holders));
    p->n_fds = WORKER_LISTENER_SLOTS * (size_t)cfg->workers;
    p->new_fds = malloc(p->n_fds * sizeof(*p->new_fds));
    if (p->counts == NULL || p->holders == NULL || p->new_fds == NULL) {
        snprintf(err, errlen, "out of memory");
        proxy_free(p);
        return NULL;
    }
    for (size_t i = 0; i < p->n_fds; i++)
        p->new_fds[i] = -1;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        count_listener(p, &cfg->listeners[i]);
    for (size_t i = 0; i < cfg->n_clusters; i++)
        atomic_store(&p->holders[cfg->clusters[i].index], cfg->workers);
    for (uint32_t i = 0; i < cfg->workers; i++) {
        if ((p->workers[i] = worker_build(p, i, cfg, err, errlen)) == NULL) {
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
        if (w->listeners[i].fd >= 0)
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
        ev_async_start(w->loop, &w->reload);
        for (size_t j = 0; j < w->n_listeners; j++)
            if (w->listeners[j].fd >= 0)
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

size_t proxy_listen_socks(struct proxy *p, struct upgrade_sock *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n_workers; i++) {
        struct worker *w = p->workers[i];
        for (size_t j = 0; j < w->n_listeners && n < max; j++) {
            if (w->listeners[j].fd >= 0)
                out[n++] = (struct upgrade_sock){.listener = w->listeners[j].cfg->name, .fd = w->listeners[j].fd};
        }
    }
    return n;
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
    for (size_t i = 0; i < p->n_workers; i++) {
        struct worker *w = p->workers[i];
        config_unref(atomic_exchange(&w->next_cfg, NULL));
        worker_free_all(w);
    }
    for (size_t i = 0; p->new_fds != NULL && i < p->n_fds; i++)
        if (p->new_fds[i] >= 0)
            close(p->new_fds[i]);
    free(p->workers);
    free(p->counts);
    free(p->holders);
    free(p->new_fds);
    config_unref(p->cfg);
    free(p);
}

/* ---- A reload, on the main thread (the workers' side is on_reload). ---- */

/* How long proxy_reload waits for every worker to adopt the snapshot. */
#define RELOAD_ACK_WAIT_MS 10000

static const struct gr_listener_cfg *find_listener(const struct gr_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_listeners; i++)
        if (strcmp(c->listeners[i].name, name) == 0)
            return &c->listeners[i];
    return NULL;
}

static const struct gr_cluster_cfg *find_cluster(const struct gr_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_clusters; i++)
        if (strcmp(c->clusters[i].name, name) == 0)
            return &c->clusters[i];
    return NULL;
}

/* Kept: the same name, address and TLS on or off; it keeps its sockets. */
static bool listener_kept(const struct gr_listener_cfg *o, const struct gr_listener_cfg *l)
{
    return o != NULL && o->address.len == l->address.len &&
           memcmp(&o->address.ss, &l->address.ss, l->address.len) == 0 && o->tls.set == l->tls.set;
}

/* The first slot from *at on that used[] does not mark: *at is set to it
 * and it is marked. False when all n are used. */
static bool take_slot(bool *used, size_t n, size_t *at)
{
    while (*at < n && used[*at])
        (*at)++;
    if (*at == n)
        return false;
    used[*at] = true;
    return true;
}

/* Gives every listener and cluster of next its slot: the old one when kept,
 * else one that nothing running uses. GR_ERR_LIMIT when none is left. */
static int assign_slots(struct proxy *p, struct gr_config *next, char *err, size_t errlen)
{
    bool used[WORKER_LISTENER_SLOTS] = {false};
    for (size_t i = 0; i < p->cfg->n_listeners; i++)
        used[p->cfg->listeners[i].slot] = true;
    for (size_t i = 0; i < WORKER_LISTENER_SLOTS; i++)
        used[i] |= atomic_load(&p->counts[i].n) > 0; /* connections of a removed listener still count there */
    size_t free_l = 0;
    for (size_t i = 0; i < next->n_listeners; i++) {
        struct gr_listener_cfg *l = &next->listeners[i];
        const struct gr_listener_cfg *o = find_listener(p->cfg, l->name);
        if (listener_kept(o, l)) {
            l->slot = o->slot;
            continue;
        }
        if (!take_slot(used, WORKER_LISTENER_SLOTS, &free_l)) {
            snprintf(err, errlen, "no free listener slot (%d in use): restart grelay", WORKER_LISTENER_SLOTS);
            return GR_ERR_LIMIT;
        }
        l->slot = free_l;
    }
    static bool taken[WORKER_CLUSTER_SLOTS]; /* main thread only */
    for (size_t i = 0; i < WORKER_CLUSTER_SLOTS; i++)
        taken[i] = atomic_load(&p->holders[i]) > 0;
    size_t free_c = 0;
    for (size_t i = 0; i < next->n_clusters; i++) {
        struct gr_cluster_cfg *cl = &next->clusters[i];
        const struct gr_cluster_cfg *o = find_cluster(p->cfg, cl->name);
        if (o != NULL) {
            cl->index = o->index;
            continue;
        }
        if (!take_slot(taken, WORKER_CLUSTER_SLOTS, &free_c)) {
            snprintf(err, errlen, "no free cluster slot (%d in use): restart grelay", WORKER_CLUSTER_SLOTS);
            return GR_ERR_LIMIT;
        }
        cl->index = free_c;
    }
    return GR_OK;
}

/* Binds one socket per worker for each listener of next that is not kept. */
static int bind_new(struct proxy *p, const struct gr_config *next, char *err, size_t errlen)
{
    for (size_t i = 0; i < next->n_listeners; i++) {
        const struct gr_listener_cfg *l = &next->listeners[i];
        if (listener_kept(find_listener(p->cfg, l->name), l))
            continue;
        for (size_t k = 0; k < p->n_workers; k++) {
            int fd = listen_on(l, err, errlen);
            if (fd < 0)
                return GR_ERR_IO;
            p->new_fds[l->slot * p->n_workers + k] = fd;
        }
    }
    return GR_OK;
}

static void close_new(struct proxy *p)
{
    for (size_t i = 0; i < p->n_fds; i++) {
        if (p->new_fds[i] >= 0)
            close(p->new_fds[i]);
        p->new_fds[i] = -1;
    }
}

/* Says what the reload changes, one line per listener and cluster. */
static void log_changes(const struct gr_config *old, const struct gr_config *next)
{
    for (size_t i = 0; i < next->n_listeners; i++) {
        const struct gr_listener_cfg *l = &next->listeners[i], *o = find_listener(old, l->name);
        log_info("reload: listener %s on %s %s", l->name, l->address.text,
                 listener_kept(o, l) ? "kept (its connections stay; new calls take the new routes)"
                 : o != NULL         ? "replaced (address or TLS changed): new socket, the old one closes"
                                     : "added");
    }
    for (size_t i = 0; i < old->n_listeners; i++)
        if (find_listener(next, old->listeners[i].name) == NULL)
            log_info("reload: listener %s on %s removed: it stops accepting, its connections finish",
                     old->listeners[i].name, old->listeners[i].address.text);
    for (size_t i = 0; i < next->n_clusters; i++)
        log_info("reload: cluster %s %s", next->clusters[i].name,
                 find_cluster(old, next->clusters[i].name) ? "kept (endpoints that stay keep their connections)"
                                                           : "added");
    for (size_t i = 0; i < old->n_clusters; i++)
        if (find_cluster(next, old->clusters[i].name) == NULL)
            log_info("reload: cluster %s removed: its pools close once its calls end", old->clusters[i].name);
    if (next->workers != old->workers)
        log_warn("reload: workers stays %u (%u asked): changing it needs a restart", old->workers, next->workers);
}

/* Hands next to every worker and waits until each has adopted it; false
 * when one did not within RELOAD_ACK_WAIT_MS (it still will). */
static bool publish(struct proxy *p, struct gr_config *next)
{
    atomic_store(&p->acks, 0);
    for (size_t i = 0; i < p->n_workers; i++) {
        struct gr_config *was = atomic_exchange(&p->workers[i]->next_cfg, config_ref(next));
        config_unref(was); /* cannot happen: every reload waits for the previous one */
        ev_async_send(p->workers[i]->loop, &p->workers[i]->reload);
    }
    for (int t = 0; t < RELOAD_ACK_WAIT_MS && atomic_load(&p->acks) < p->n_started; t++)
        usleep(1000);
    if (atomic_load(&p->acks) >= p->n_started)
        return true;
    log_error("reload: %zu of %zu workers did not take the new configuration within %d ms",
              p->n_started - atomic_load(&p->acks), p->n_started, RELOAD_ACK_WAIT_MS);
    return false;
}

int proxy_reload(struct proxy *p, struct gr_config *next, char *err, size_t errlen)
{
    if (next->n_listeners > WORKER_LISTENER_SLOTS || next->n_clusters > WORKER_CLUSTER_SLOTS) {
        snprintf(err, errlen, "at most %d listeners and %d clusters", WORKER_LISTENER_SLOTS, WORKER_CLUSTER_SLOTS);
        return GR_ERR_LIMIT;
    }
    stats_bind(next);
    int rc = assign_slots(p, next, err, errlen);
    if (rc == GR_OK)
        rc = bind_new(p, next, err, errlen);
    if (rc != GR_OK) {
        close_new(p);
        return rc;
    }
    log_changes(p->cfg, next);
    for (size_t i = 0; i < next->n_listeners; i++)
        count_listener(p, &next->listeners[i]);
    for (size_t i = 0; i < next->n_clusters; i++)
        if (find_cluster(p->cfg, next->clusters[i].name) == NULL)
            atomic_store(&p->holders[next->clusters[i].index], (uint32_t)p->n_workers);
    if (publish(p, next))
        close_new(p); /* sockets a worker did not take (it ran out of memory); a late worker takes its own */
    config_unref(p->cfg);
    p->cfg = config_ref(next);
    return GR_OK;
}

struct gr_config *proxy_config(struct proxy *p) { return p->cfg; }
