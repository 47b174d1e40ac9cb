/* A worker: one thread's event loop and what every object on that thread
 * shares: its allocators, the work deferred to the end of each loop
 * iteration (flushes, then frees), scratch buffers, and the housekeeping
 * timer that gives idle memory back. A call never leaves the worker that
 * accepted it, so nothing here is locked.
 *
 * This is the bottom of the module graph: every module that runs on a
 * worker may include it, and it includes none of them. Module state that
 * is per worker sits behind an opaque pointer the module owns (h2s, h2c,
 * clusters) or in a generic container (the caches). The worker's thread,
 * listeners and clusters are built, run and stopped by proxy.c, at the top.
 *
 * Ownership: worker -> downstream conn -> stream; worker -> wcluster ->
 * pool -> upconn. */
#ifndef GRELAY_WORKER_H
#define GRELAY_WORKER_H

#include "grelay/buf.h"
#include "grelay/cluster.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/mem.h"

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>

struct wcluster;
struct wlistener;
struct h2_server_state;
struct h2_client_state;
struct stats_shard;
struct access_log_shard;

/* Work deferred to the end of the loop iteration, before the loop sleeps:
 * a flush (worker->dirty) or a free (worker->reap). Embedded in its owner. */
struct gr_task {
    struct gr_list link;            /* in worker->dirty or worker->reap while due */
    void (*run)(struct gr_task *t); /* what to do; the task is unlinked first */
};

/* Freed objects of one size kept for reuse (no calloc per call). The
 * housekeeping pass frees those nobody took since the previous pass. */
struct worker_cache {
    void *head;  /* free objects, linked through their first word */
    size_t n;    /* objects cached */
    size_t low;  /* fewest cached since the last trim */
    size_t max;  /* beyond this, objects go back to free() */
    size_t size; /* object size (poisoned under AddressSanitizer while cached) */
};

/* Client connections of one listener, counted across every worker for its
 * max_connections. proxy.c owns one per listener, shared by the workers:
 * a slot is taken before accept() and given back when the connection is
 * destroyed (or the accept failed). */
struct worker_conn_count {
    _Atomic uint32_t n;   /* slots taken: client connections accepted and not yet destroyed */
    _Atomic uint32_t max; /* the listener's max_connections; 0: no limit (a reload may change it) */
    size_t listener;      /* the listener's slot (gr_listener_cfg.slot) */
    void *owner;          /* the proxy, for released */
    /* A slot came back while the listener was at its limit: every worker
     * may resume accepting on it (proxy.c; any thread). */
    void (*released)(struct worker_conn_count *cc);
};

/* Slots of the arrays a worker indexes by listener (gr_listener_cfg.slot)
 * and by cluster (gr_cluster_cfg.index). A reload keeps the slot of what
 * stays and gives what is new a slot no worker uses any more, so live and
 * retiring objects of every snapshot fit side by side. */
#define WORKER_LISTENER_SLOTS 256
#define WORKER_CLUSTER_SLOTS 1024

/* One config snapshot as one worker uses it. The worker counts its own
 * users (client connections and calls) without atomics; the snapshot's
 * reference (config_ref) is one per worker, given back when the last user
 * is gone and a newer snapshot is current. */
struct worker_snap {
    struct gr_config *cfg;              /* the snapshot; this worker holds one reference */
    struct worker *w;                   /* the worker */
    size_t users;                       /* client connections (from accept to destroy) and calls using it */
    const struct gr_listener_cfg **now; /* per listener of cfg: the same listener in the current snapshot
                                           (routes for new calls), or NULL: removed or changed */
    struct gr_list link;                /* in worker->snaps */
    struct gr_task unused;              /* users reached 0 while not current: worker->snap_unused (reap) */
};

#define WORKER_READ_BUF (64 * 1024)

/* A worker's part of a drain (SIGTERM; proxy.c runs it, drain.c decides
 * when): its listeners close, every client connection is told to drain,
 * and the worker says when it has none left. */
struct worker_drain {
    ev_async begin;              /* the main thread starts the drain */
    ev_async cut;                /* the main thread cuts the calls still open */
    ev_timer check;              /* while draining: are the client connections all gone? */
    bool on;                     /* draining: listeners closed, connections told */
    bool cut_done;               /* the calls left were cut */
    _Atomic bool empty;          /* no client connection left (the main thread reads it) */
    struct ev_loop *notify_loop; /* the main thread's loop, and its watcher to send when empty */
    ev_async *notify;            /* (set before begin is sent) */
    size_t in_flight;            /* calls in flight when the drain began */
    uint64_t begun;              /* streams_begun then */
    _Atomic uint64_t drained;    /* calls that ended since, not cut (published on each check) */
    _Atomic uint64_t cut_calls;  /* calls the cut ended */
    ev_timer removed;            /* the next cut of a reload-removed listener's calls (downstream.cut_at) */
};

struct worker {
    uint32_t id;                 /* 0 .. workers-1: thread name and logs */
    pthread_t thread;            /* its thread (proxy.c) */
    struct ev_loop *loop;        /* this thread's libev loop */
    const struct gr_config *cfg; /* the snapshot new calls use (snap->cfg once proxy.c adopted one) */
    struct worker_snap *snap;    /* the current snapshot; NULL before proxy.c gives one */
    struct gr_list snaps;        /* struct worker_snap: the current one and older ones still used */
    void (*snap_unused)(struct worker *w, struct worker_snap *s); /* frees s and what only it used (proxy.c) */
    struct wlistener *listeners;             /* its listening sockets, by listener slot (proxy.c) */
    size_t n_listeners;                      /* entries of listeners (WORKER_LISTENER_SLOTS) */
    struct worker_conn_count *conn_counts;   /* per listener slot, shared by all workers (proxy.c); or NULL */
    struct wcluster **clusters;              /* by cluster slot (gr_cluster_cfg.index), NULL where none (wcluster.h) */
    size_t n_clusters;                       /* entries of clusters and pending (WORKER_CLUSTER_SLOTS) */
    _Atomic(struct endpoint_set *) *pending; /* per cluster slot: a newer endpoint set from the main thread */
    ev_async stop;                           /* the main thread asks the worker to stop (proxy.c) */
    ev_async update;                         /* the main thread published endpoint sets in pending */
    ev_async reload;                         /* the main thread published a snapshot in next_cfg (proxy.c) */
    _Atomic(struct gr_config *) next_cfg;    /* that snapshot, with a reference for this worker */
    void *proxy;                             /* the proxy running it: reload's sockets and acks (proxy.c) */
    struct gr_list dying;                    /* struct wcluster no snapshot names any more, draining (proxy.c) */
    ev_timer dying_timer;                    /* frees the dying clusters whose pools are gone (proxy.c) */
    struct gr_list dconns;                   /* open downstream connections (struct downstream) */
    struct gr_list sniffing;                 /* accepted, protocol not chosen yet (sniff.c) */
    struct gr_list dirty;                    /* struct gr_task: flushes due before the loop sleeps */
    struct gr_list reap;                     /* struct gr_task: frees due after the flushes */
    ev_prepare prepare;                      /* runs dirty, then reap, once per iteration */
    ev_timer housekeeping;                   /* the periodic memory pass (worker_housekeep) */
    struct h2_server_state *h2s;             /* downstream HTTP/2: callbacks, options, connection slab, hibernation */
    struct h2_client_state *h2c;             /* upstream HTTP/2: callbacks and options */
    struct chunk_pool chunks;                /* payload chunks of this worker */
    struct mem_pool h2mem;                   /* nghttp2's small objects, on this thread */
    struct worker_cache streams;             /* freed struct stream kept for the next calls */
    bool stopping;                           /* no new connections or streams */
    struct worker_drain drain;               /* a drain in progress (proxy.c) */
    uint64_t rng;                            /* xorshift state: retry jitter, balancer seeds */
    size_t n_streams;                        /* calls in flight */
    uint64_t streams_begun;                  /* calls begun, ever */
    uint64_t streams_begun_swept;            /* streams_begun at the last housekeeping pass */
    size_t sessions_freed;                   /* large frees (hibernated sessions) since the last malloc_trim */
    bool busy;                               /* a call began since the last quiet pass (counted process-wide) */
    _Atomic uint64_t heap;                   /* bytes held for calls at the last housekeeping pass (overload guard) */
    struct gr_list all;                      /* in the process's list of workers (the overload guard sums heap) */
    struct stats_shard *stats;               /* this worker's metrics (stats.h) */
    struct access_log_shard *alog;           /* this worker's access log buffer (access_log.h) */
    _Atomic uint64_t beat_us;                /* gr_now_us() at the loop's last housekeeping pass (GET /healthz) */
    ev_async test_stall;                     /* test only: the loop sleeps stall_ms (worker_test_stall) */
    _Atomic uint32_t stall_ms;               /* test only: how long that sleep is */
    uint8_t rbuf[WORKER_READ_BUF];           /* socket reads land here (conn.c) */
    uint8_t scratch[WORKER_READ_BUF];        /* gRPC-Web -text request decoding (grpcweb.c) */
    uint8_t outbuf[CHUNK_SIZE + 64];         /* HTTP/1.1 output being framed (h1_server.c) */
    uint8_t tls_record[16 * 1024];           /* small chunks gathered into one TLS record (conn.c) */
};

/* Sets up the loop, allocators and timers of w (zeroed by the caller).
 * Returns GR_OK or GR_ERR_NOMEM. */
int worker_init(struct worker *w, uint32_t id, const struct gr_config *cfg);
/* Starts the watchers worker_init made; before the thread runs. */
void worker_start_watchers(struct worker *w);
/* Frees what worker_init made (the loop last). */
void worker_destroy(struct worker *w);

/* Test only (GRELAY_TEST_HOOKS=1: POST /test/stall_worker on the admin
 * port): makes w's loop sleep ms milliseconds at its next turn, as a
 * stuck worker would, so that GET /healthz can be seen to fail. Any
 * thread. */
void worker_test_stall(struct worker *w, uint32_t ms);

/* Queues t to run before the loop sleeps: flushes first (dirty), then
 * frees (reap). Queuing a queued task again does nothing. */
static inline void worker_defer(struct worker *w, struct gr_task *t, bool reap)
{
    if (gr_list_linked(&t->link))
        return;
    gr_list_insert_tail(reap ? &w->reap : &w->dirty, &t->link);
}
/* Queues flush t ahead of the flushes already due. Client connections
 * flush first: a stream their flush resets (nghttp2 closes a stream it
 * resets itself, for a flow-control error say, once that RST_STREAM is
 * sent) cancels its upstream HEADERS while they still wait in the upstream
 * session, so the backend never sees the call (MadeYouReset; see
 * docs/limits.md, HTTP/2 abuse). */
static inline void worker_defer_first(struct worker *w, struct gr_task *t)
{
    if (gr_list_linked(&t->link))
        return;
    gr_list_insert_head(&w->dirty, &t->link);
}
/* Runs every due task: all flushes (tasks a flush queues run too), then
 * all frees. The prepare watcher calls it; shutdown calls it directly. */
void worker_run_deferred(struct worker *w);

/* The cluster a route sends to, as this worker runs it. */
static inline struct wcluster *worker_cluster(const struct worker *w, const struct gr_cluster_cfg *cl)
{
    return w->clusters[cl->index];
}

/* The snapshot listener l belongs to (NULL when the worker has none: unit
 * tests). A short walk: a worker holds one snapshot, two during a reload. */
struct worker_snap *worker_snap_of(struct worker *w, const struct gr_listener_cfg *l);
/* A client connection or a call starts or stops using s (s may be NULL).
 * The last user of a snapshot that is no longer current queues its free. */
static inline void worker_snap_hold(struct worker_snap *s)
{
    if (s != NULL)
        s->users++;
}
void worker_snap_drop(struct worker *w, struct worker_snap *s);
/* Makes cfg (one reference handed over) the worker's current snapshot and
 * returns it, or NULL when out of memory (the reference is given back).
 * The previous one is freed once unused. On the worker's thread, or before
 * it runs. */
struct worker_snap *worker_snap_adopt(struct worker *w, struct gr_config *cfg);
/* Unlinks s and gives its reference back (snap_unused calls it last). */
void worker_snap_free(struct worker_snap *s);
/* Frees every snapshot (shutdown, after the connections are gone). */
void worker_snap_free_all(struct worker *w);

/* Hands a new endpoint set of cluster i to the worker (any thread; the
 * worker adopts it between events). Takes a reference of its own. */
void worker_publish(struct worker *w, size_t i, struct endpoint_set *set);

/* Takes a slot of listener l's max_connections (before accept): false when
 * the listener is full. Gives one back (the client connection is destroyed,
 * or the accept failed). Both do nothing without conn_counts. The slot
 * also holds l's snapshot (worker_snap_hold), so that a connection's
 * listener config lives as long as the connection. */
bool worker_conn_take(struct worker *w, const struct gr_listener_cfg *l);
void worker_conn_release(struct worker *w, const struct gr_listener_cfg *l);

/* The cache of objects of one size: get returns NULL when empty. */
void worker_cache_init(struct worker_cache *c, size_t size, size_t max);
void *worker_cache_get(struct worker_cache *c);
/* Keeps obj for reuse, or frees it when the cache is full. */
void worker_cache_put(struct worker_cache *c, void *obj);
/* Frees the objects nobody took since the last trim (all with all);
 * returns how many. */
size_t worker_cache_trim(struct worker_cache *c, bool all);
void worker_cache_destroy(struct worker_cache *c);

/* The housekeeping pass: gives back free chunks, cached streams and
 * nghttp2 blocks that went unused since the previous pass (all of them
 * when the worker is quiet), and returns freed memory to the kernel
 * (malloc_trim) when it is worth it and no worker at all is busy. Runs every WORKER_HOUSEKEEPING_S whether or not any
 * listener hibernates; tests may call it directly. */
#define WORKER_HOUSEKEEPING_S 0.5
void worker_housekeep(struct worker *w);
/* A call began on a worker that was quiet: no malloc_trim anywhere until
 * it is quiet again (stream_new calls it; one branch per call). */
void worker_mark_busy(struct worker *w);

/* The overload guard (docs/limits.md, "Overload"). Each worker's pass
 * publishes what it holds for calls: payload chunks, nghttp2's memory
 * (mem.h: HPACK tables, frames, header copies) and streams, free lists
 * included. Worker 0's pass sums every worker's figure and OpenSSL's
 * (mem_count_openssl: TLS records and handshakes), and sets the flag
 * above overload.max_heap, clearing it below WORKER_OVERLOAD_RELEASE of
 * it, and logs each change. While set, new HTTP/2 streams are refused
 * (REFUSED_STREAM), gRPC-Web requests get UNAVAILABLE and listeners stop
 * accepting; calls in flight go on. Read with one relaxed load, no lock. */
#define WORKER_OVERLOAD_RELEASE 0.9
extern atomic_bool worker_overload;
static inline bool worker_overloaded(void) { return atomic_load_explicit(&worker_overload, memory_order_relaxed); }
/* The bytes w holds for calls now (on w's thread; the pass publishes it). */
uint64_t worker_heap(const struct worker *w);
/* The bytes every worker of the process held at its last pass, and what
 * OpenSSL holds now (mem_count_openssl). */
uint64_t worker_heap_total(void);

#endif
