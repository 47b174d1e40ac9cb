/* A worker: one thread, one libev loop, its own SO_REUSEPORT listeners, its
 * downstream connections, upstream pools and chunk pool. A call never leaves
 * the worker that accepted it, so nothing here is locked.
 * Ownership: worker -> dconn -> stream; worker -> wcluster -> pool -> upconn. */
#ifndef GRELAY_WORKER_H
#define GRELAY_WORKER_H

#include "grelay/balancer.h"
#include "grelay/buf.h"
#include "grelay/cluster.h"
#include "grelay/common.h"
#include "grelay/config.h"
#include "grelay/mem.h"
#include "grelay/slab.h"

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>

struct worker;
struct pool;

/* One listening socket of one worker. */
struct wlistener {
    int fd;                             /* bound, listening, non-blocking */
    ev_io io;                           /* readable = connections to accept */
    struct worker *w;
    const struct gr_listener_cfg *cfg;
};

/* A cluster as this worker sees it: balancer state and one pool per endpoint
 * of its current endpoint set. */
struct wcluster {
    const struct gr_cluster_cfg *cfg;
    struct balancer lb;            /* picks the endpoint of each stream */
    struct pool **pools;           /* one per endpoint of the current set, in its order */
    size_t n_pools;
    struct gr_list retired;        /* pools whose endpoint left the set, draining */
    char why_empty[200];           /* told to callers while there is no endpoint */
    _Atomic(struct endpoint_set *) pending; /* a newer set, from the DNS thread */
};

#define WORKER_READ_BUF (64 * 1024)

struct worker {
    uint32_t id;
    pthread_t thread;
    struct ev_loop *loop;
    const struct gr_config *cfg;
    struct wlistener *listeners;  /* one per configured listener */
    size_t n_listeners;
    struct wcluster *clusters;    /* one per configured cluster */
    struct gr_list dconns;        /* open downstream connections */
    struct gr_list h2_lru;        /* HTTP/2 client connections that may hibernate, least recently busy first */
    ev_timer hibernate;           /* the periodic pass over h2_lru */
    size_t slept_untrimmed;       /* hibernations since the last malloc_trim */
    ev_tstamp hibernate_min;      /* the shortest hibernate_after of the listeners (0: none hibernate) */
    struct gr_list sniffing;      /* accepted, protocol not chosen yet (TLS handshake, first bytes) */
    struct gr_list dirty;         /* connections to flush before the loop sleeps */
    struct gr_list reap;          /* closed connections to free before the loop sleeps */
    ev_prepare prepare;           /* runs the flushes and frees */
    ev_async stop;                /* main thread asks the worker to stop */
    ev_async update;              /* main thread published endpoint sets */
    struct chunk_pool chunks;     /* payload chunks of this worker */
    struct mem_pool h2mem;        /* nghttp2's small objects, on this thread */
    struct slab_pool dconn_slab;  /* HTTP/2 client connections (struct dconn), packed */
    nghttp2_session_callbacks *server_cbs; /* downstream session callbacks */
    nghttp2_session_callbacks *client_cbs; /* upstream session callbacks */
    nghttp2_option *server_opt;
    nghttp2_option *client_opt;
    bool stopping;                /* no new connections or streams */
    uint64_t rng;                 /* jitter for retry backoff */
    size_t n_streams;             /* calls in flight */
    uint64_t streams_begun;       /* calls begun, ever */
    uint64_t streams_begun_swept; /* streams_begun at the last hibernation pass */
    struct stream *free_streams;  /* freed streams kept for reuse */
    size_t n_free_streams;
    size_t free_streams_low;      /* fewest cached since the last trim */
    uint8_t rbuf[WORKER_READ_BUF]; /* socket reads land here */
    uint8_t scratch[WORKER_READ_BUF]; /* gRPC-Web request decoding */
    uint8_t outbuf[CHUNK_SIZE + 64];  /* HTTP/1.1 output being framed */
};

/* Creates the worker and binds its listeners (SO_REUSEPORT). Returns NULL
 * with a message in err when a socket cannot be set up. */
struct worker *worker_new(uint32_t id, const struct gr_config *cfg, char *err, size_t errlen);
/* Hands a new endpoint set of cluster i to the worker (any thread; the
 * worker adopts it between events). Takes a reference of its own. */
void worker_publish(struct worker *w, size_t i, struct endpoint_set *set);
/* Runs the worker on its own thread. Returns 0 or GR_ERR_IO. */
int worker_start(struct worker *w);
/* Asks the worker to stop (any thread) and waits for it. */
void worker_stop_and_join(struct worker *w);
void worker_free(struct worker *w);

#endif
