/* The per-thread part of a worker: loop, deferred work, caches and the
 * housekeeping pass (see include/grelay/worker.h). */
#include "grelay/worker.h"
#include "grelay/log.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/random.h>
#include <string.h>
#include <time.h>

/* Free chunks and nghttp2 blocks of each size class kept through a pass
 * that gives memory back (the rest goes to malloc, then to the kernel). */
#define KEEP_FREE_CHUNKS 32
#define KEEP_FREE_PER_CLASS 64
/* Workers whose last housekeeping pass found them busy, process-wide.
 * malloc_trim locks every malloc arena in turn, the busy workers' too
 * (measured on glibc 2.36: 0.2-0.45 ms per trim, up to 7.5 ms, for a
 * worker on another arena; the whole trim, 10-89 ms, on a shared one), so
 * it runs only when every worker is quiet. */
static atomic_uint busy_workers;
/* Every worker of the process (worker_init to worker_destroy), for the
 * overload guard's sum; the lock is taken at start, stop, and by one pass
 * every WORKER_HOUSEKEEPING_S. */
static struct gr_list all_workers = {&all_workers, &all_workers};
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
atomic_bool worker_overload;
/* Sessions freed (~25 KiB each) before a busy worker gives nghttp2's free
 * blocks back to malloc. */
#define TRIM_AFTER_SESSIONS 256
/* Streams a worker keeps for reuse: with hundreds of calls in flight a
 * flush can end more at once than a small cache holds (~2 MiB at most). */
#define MAX_FREE_STREAMS 1024

static struct worker_conn_count *conn_count(struct worker *w, const struct gr_listener_cfg *l)
{
    return w->conn_counts != NULL ? &w->conn_counts[l->slot] : NULL;
}

bool worker_conn_take(struct worker *w, const struct gr_listener_cfg *l)
{
    struct worker_conn_count *cc = conn_count(w, l);
    if (cc == NULL) {
        worker_snap_hold(worker_snap_of(w, l));
        return true;
    }
    uint32_t before = atomic_fetch_add_explicit(&cc->n, 1, memory_order_relaxed);
    uint32_t max = atomic_load_explicit(&cc->max, memory_order_relaxed);
    if (max == 0 || before < max) {
        worker_snap_hold(worker_snap_of(w, l));
        return true;
    }
    /* Full: give the slot back without waking anyone (that would wake the
     * others into the same refusal, forever). A release that raced with it
     * saw the count at or above max, and woke the listeners itself. */
    atomic_fetch_sub_explicit(&cc->n, 1, memory_order_relaxed);
    return false;
}

void worker_conn_release(struct worker *w, const struct gr_listener_cfg *l)
{
    struct worker_conn_count *cc = conn_count(w, l);
    struct worker_snap *s = worker_snap_of(w, l);
    if (cc != NULL) {
        uint32_t before = atomic_fetch_sub_explicit(&cc->n, 1, memory_order_relaxed);
        uint32_t max = atomic_load_explicit(&cc->max, memory_order_relaxed);
        if (max != 0 && before >= max && cc->released != NULL)
            cc->released(cc);
    }
    worker_snap_drop(w, s); /* l may be freed (at the end of the iteration) */
}

/* ---- Config snapshots (see worker.h, struct worker_snap). ---- */

struct worker_snap *worker_snap_of(struct worker *w, const struct gr_listener_cfg *l)
{
    struct gr_list *it;
    for (it = w->snaps.next; it != &w->snaps; it = it->next) {
        struct worker_snap *s = container_of(it, struct worker_snap, link);
        const struct gr_config *c = s->cfg;
        if (l >= c->listeners && l < c->listeners + c->n_listeners)
            return s;
    }
    return NULL;
}

/* The last user of an old snapshot is gone: proxy.c frees it (and the
 * clusters only it used), or, without proxy.c, the snapshot goes. */
static void on_snap_unused(struct gr_task *t)
{
    struct worker_snap *s = container_of(t, struct worker_snap, unused);
    if (s->users > 0 || s == s->w->snap)
        return; /* used again (a connection accepted in the meantime cannot be: it is not current) */
    if (s->w->snap_unused != NULL)
        s->w->snap_unused(s->w, s);
    else
        worker_snap_free(s);
}

void worker_snap_free(struct worker_snap *s)
{
    gr_list_remove(&s->link);
    gr_list_remove(&s->unused.link);
    config_unref(s->cfg);
    free(s->now);
    free(s);
}

void worker_snap_drop(struct worker *w, struct worker_snap *s)
{
    if (s != NULL && --s->users == 0 && s != w->snap)
        worker_defer(w, &s->unused, true);
}

/* Points every snapshot's listeners at their namesakes in the current one. */
static void map_listeners(struct worker *w)
{
    const struct gr_listener_cfg *by_slot[WORKER_LISTENER_SLOTS] = {0};
    const struct gr_config *cur = w->snap->cfg;
    for (size_t i = 0; i < cur->n_listeners; i++)
        if (cur->listeners[i].slot < WORKER_LISTENER_SLOTS)
            by_slot[cur->listeners[i].slot] = &cur->listeners[i];
    struct gr_list *it;
    for (it = w->snaps.next; it != &w->snaps; it = it->next) {
        struct worker_snap *s = container_of(it, struct worker_snap, link);
        for (size_t i = 0; i < s->cfg->n_listeners; i++) {
            size_t slot = s->cfg->listeners[i].slot;
            s->now[i] = slot < WORKER_LISTENER_SLOTS ? by_slot[slot] : NULL;
        }
    }
}

struct worker_snap *worker_snap_adopt(struct worker *w, struct gr_config *cfg)
{
    struct worker_snap *s = calloc(1, sizeof(*s));
    if (s != NULL && (s->now = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*s->now))) == NULL) {
        free(s);
        s = NULL;
    }
    if (s == NULL) {
        config_unref(cfg);
        return NULL;
    }
    s->cfg = cfg;
    s->w = w;
    gr_list_init(&s->unused.link);
    s->unused.run = on_snap_unused;
    gr_list_insert_tail(&w->snaps, &s->link);
    struct worker_snap *old = w->snap;
    w->snap = s;
    w->cfg = cfg;
    map_listeners(w);
    if (old != NULL && old->users == 0)
        worker_defer(w, &old->unused, true);
    return s;
}

void worker_snap_free_all(struct worker *w)
{
    w->snap = NULL;
    while (!gr_list_empty(&w->snaps))
        worker_snap_free(container_of(w->snaps.next, struct worker_snap, link));
}

void worker_cache_init(struct worker_cache *c, size_t size, size_t max)
{
    memset(c, 0, sizeof(*c));
    c->size = size;
    c->max = max;
}

void *worker_cache_get(struct worker_cache *c)
{
    void *obj = c->head;
    if (obj == NULL)
        return NULL;
    GR_UNPOISON(obj, c->size);
    c->head = *(void **)obj;
    if (c->head != NULL)
        GR_UNPOISON(c->head, sizeof(void *)); /* only the next one's link, to read later */
    if (--c->n < c->low)
        c->low = c->n;
    return obj;
}

void worker_cache_put(struct worker_cache *c, void *obj)
{
    if (c->n >= c->max) {
        free(obj);
        return;
    }
    if (c->head != NULL)
        GR_POISON(c->head, sizeof(void *)); /* no longer the head: all of it is off limits */
    *(void **)obj = c->head;
    c->head = obj;
    c->n++;
    /* All but the head's link word is off limits (a stream's first field,
     * its downstream, too). */
    GR_POISON((char *)obj + sizeof(void *), c->size - sizeof(void *));
}

static void *cache_pop(struct worker_cache *c)
{
    void *obj = c->head;
    c->head = *(void **)obj;
    if (c->head != NULL)
        GR_UNPOISON(c->head, sizeof(void *));
    c->n--;
    GR_UNPOISON(obj, c->size);
    return obj;
}

size_t worker_cache_trim(struct worker_cache *c, bool all)
{
    size_t n = all ? c->n : c->low;
    for (size_t i = 0; i < n; i++)
        free(cache_pop(c));
    c->low = c->n;
    return n;
}

void worker_cache_destroy(struct worker_cache *c) { worker_cache_trim(c, true); }

void worker_run_deferred(struct worker *w)
{
    while (!gr_list_empty(&w->dirty)) {
        struct gr_task *t = container_of(w->dirty.next, struct gr_task, link);
        gr_list_remove(&t->link);
        t->run(t);
    }
    while (!gr_list_empty(&w->reap)) {
        struct gr_task *t = container_of(w->reap.next, struct gr_task, link);
        gr_list_remove(&t->link);
        t->run(t);
    }
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)revents;
    worker_run_deferred(container_of(p, struct worker, prepare));
}

uint64_t worker_heap(const struct worker *w)
{
    size_t streams = w->n_streams + w->streams.n;
    return buf_pool_bytes(&w->chunks) + w->h2mem.bytes + (uint64_t)streams * w->streams.size;
}

uint64_t worker_heap_total(void)
{
    uint64_t total = mem_openssl_bytes();
    pthread_mutex_lock(&all_lock);
    for (struct gr_list *e = all_workers.next; e != &all_workers; e = e->next)
        total += atomic_load_explicit(&container_of(e, struct worker, all)->heap, memory_order_relaxed);
    pthread_mutex_unlock(&all_lock);
    return total;
}

/* Worker 0's share of the pass: the overload guard's decision. */
static void overload_check(const struct worker *w)
{
    uint64_t max = w->cfg->overload.max_heap;
    if (max == 0 || w->id != 0)
        return;
    uint64_t heap = worker_heap_total();
    static uint64_t logged; /* the figure last logged (worker 0 only) */
    if (heap > logged + max / 64 || heap + max / 64 < logged) {
        logged = heap;
        log_debug("overload: calls and TLS hold %llu KiB (overload.max_heap %llu KiB)",
                  (unsigned long long)(heap >> 10), (unsigned long long)(max >> 10));
    }
    bool on = atomic_load_explicit(&worker_overload, memory_order_relaxed);
    uint64_t release = (uint64_t)((double)max * WORKER_OVERLOAD_RELEASE);
    if (!on && heap > max) {
        atomic_store_explicit(&worker_overload, true, memory_order_relaxed);
        log_warn("overload: engaged: calls and TLS hold %llu KiB, above overload.max_heap (%llu KiB): "
                 "new streams are refused (REFUSED_STREAM) and new connections wait until it falls below %llu KiB; "
                 "calls in flight go on",
                 (unsigned long long)(heap >> 10), (unsigned long long)(max >> 10),
                 (unsigned long long)(release >> 10));
    } else if (on && heap < release) {
        atomic_store_explicit(&worker_overload, false, memory_order_relaxed);
        log_warn("overload: released: calls and TLS hold %llu KiB, below %llu KiB: "
                 "new streams and connections are taken again",
                 (unsigned long long)(heap >> 10), (unsigned long long)(release >> 10));
    }
}

void worker_housekeep(struct worker *w)
{
    /* Quiet: no call in flight and none began since the last pass. (No call
     * in flight at one instant says little: under load every call of a
     * burst may have ended just before the next burst arrives.) */
    bool quiet = w->n_streams == 0 && w->streams_begun == w->streams_begun_swept;
    w->streams_begun_swept = w->streams_begun;
    if (quiet && w->busy) {
        w->busy = false; /* busy again at its next call (worker_mark_busy) */
        atomic_fetch_sub(&busy_workers, 1);
    }
    /* What a burst left in the free lists goes back: what no call took
     * since the last pass, or, when quiet, all of it. */
    if (quiet)
        buf_pool_mark_unused(&w->chunks);
    size_t freed = buf_pool_trim(&w->chunks, KEEP_FREE_CHUNKS) + worker_cache_trim(&w->streams, quiet);
    /* Give the freed memory back to the system, not just to free lists.
     * malloc_trim walks the whole heap under every arena's lock (tens of ms
     * under load: a stall for every call in flight, on every worker), so it
     * runs only when no worker is busy. Until then freed memory stays in
     * malloc's free lists, where the next calls take it. */
    if (quiet && w->sessions_freed + freed > 0 && atomic_load(&busy_workers) == 0) {
        mem_pool_trim(&w->h2mem, KEEP_FREE_PER_CLASS);
        malloc_trim(0);
        w->sessions_freed = 0;
    } else if (w->sessions_freed >= TRIM_AFTER_SESSIONS) {
        /* Under load, many sessions freed: their blocks go back to malloc
         * (which takes no other worker's lock), where calls reuse them. */
        mem_pool_trim(&w->h2mem, KEEP_FREE_PER_CLASS);
        w->sessions_freed = 0;
    }
    atomic_store_explicit(&w->heap, worker_heap(w), memory_order_relaxed);
    overload_check(w);
}

void worker_mark_busy(struct worker *w)
{
    w->busy = true;
    atomic_fetch_add(&busy_workers, 1);
}

static void on_housekeeping(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(t, struct worker, housekeeping);
    atomic_store_explicit(&w->beat_us, gr_now_us(), memory_order_relaxed); /* the loop turns (GET /healthz) */
    worker_housekeep(w);
}

/* Test only: the sleep worker_test_stall asked for. */
static void on_test_stall(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, test_stall);
    uint32_t ms = atomic_exchange(&w->stall_ms, 0);
    if (ms == 0)
        return;
    log_warn("test hook: worker %u sleeps %u ms", w->id, ms);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void worker_test_stall(struct worker *w, uint32_t ms)
{
    atomic_store(&w->stall_ms, ms);
    ev_async_send(w->loop, &w->test_stall);
}

int worker_init(struct worker *w, uint32_t id, const struct gr_config *cfg)
{
    w->id = id;
    w->cfg = cfg;
    gr_list_init(&w->snaps);
    gr_list_init(&w->dconns);
    gr_list_init(&w->sniffing);
    gr_list_init(&w->dirty);
    gr_list_init(&w->reap);
    buf_pool_init(&w->chunks, 1024);
    mem_pool_init(&w->h2mem);
    worker_cache_init(&w->streams, 0, MAX_FREE_STREAMS);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 16) ^ ((uint64_t)(id + 1) * 0xbf58476d1ce4e5b9ull) ^ 0x94d049bb133111ebull;
    uint64_t seed = 0; /* and the kernel's randomness: generated request ids must not repeat across processes */
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        w->rng ^= seed;
    if (w->rng == 0)
        w->rng = 0x9e3779b97f4a7c15ull; /* xorshift never leaves 0 */
    w->pending = calloc(WORKER_CLUSTER_SLOTS, sizeof(*w->pending));
    w->loop = ev_loop_new(EVFLAG_AUTO);
    if (w->pending == NULL || w->loop == NULL)
        return GR_ERR_NOMEM;
    w->n_clusters = WORKER_CLUSTER_SLOTS;
    atomic_init(&w->beat_us, gr_now_us());
    for (size_t i = 0; i < w->n_clusters; i++)
        atomic_init(&w->pending[i], NULL);
    atomic_init(&w->stall_ms, 0);
    ev_async_init(&w->test_stall, on_test_stall);
    ev_prepare_init(&w->prepare, on_prepare);
    ev_timer_init(&w->housekeeping, on_housekeeping, WORKER_HOUSEKEEPING_S, WORKER_HOUSEKEEPING_S);
    pthread_mutex_lock(&all_lock);
    gr_list_insert_tail(&all_workers, &w->all);
    pthread_mutex_unlock(&all_lock);
    return GR_OK;
}

void worker_start_watchers(struct worker *w)
{
    ev_prepare_start(w->loop, &w->prepare);
    ev_timer_start(w->loop, &w->housekeeping);
    ev_async_start(w->loop, &w->test_stall);
}

void worker_publish(struct worker *w, size_t i, struct endpoint_set *set)
{
    cluster_set_ref(set);
    struct endpoint_set *old = atomic_exchange(&w->pending[i], set);
    cluster_set_unref(old);
    ev_async_send(w->loop, &w->update);
}

void worker_destroy(struct worker *w)
{
    if (gr_list_linked(&w->all)) {
        pthread_mutex_lock(&all_lock);
        gr_list_remove(&w->all);
        pthread_mutex_unlock(&all_lock);
    }
    if (w->busy)
        atomic_fetch_sub(&busy_workers, 1);
    w->busy = false;
    worker_snap_free_all(w);
    if (w->pending != NULL) {
        for (size_t i = 0; i < w->n_clusters; i++)
            cluster_set_unref(atomic_exchange(&w->pending[i], NULL));
        free(w->pending);
        w->pending = NULL;
    }
    buf_pool_destroy(&w->chunks);
    mem_pool_destroy(&w->h2mem);
    worker_cache_destroy(&w->streams);
    if (w->loop != NULL) {
        ev_timer_stop(w->loop, &w->housekeeping);
        ev_prepare_stop(w->loop, &w->prepare);
        ev_async_stop(w->loop, &w->test_stall);
        ev_loop_destroy(w->loop);
        w->loop = NULL;
    }
}
