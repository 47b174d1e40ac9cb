/* Per-endpoint upstream connections and the line of waiting streams. */
#include "grelay/pool.h"
#include "grelay/h2_client.h"
#include "grelay/log.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pool *pool_new(struct worker *w, struct wcluster *wc, size_t index, const struct endpoint *ep)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->w = w;
    p->wc = wc;
    p->index = index;
    p->own = *ep;
    p->own.address.text = p->own.text;
    p->ep = &p->own;
    gr_list_init(&p->conns);
    gr_list_init(&p->waiting);
    gr_list_init(&p->retired_link);
    return p;
}

void pool_free(struct pool *p)
{
    gr_list_remove(&p->retired_link);
    free(p);
}

void pool_retire(struct pool *p)
{
    p->retired = true;
    gr_list_insert_tail(&p->wc->retired, &p->retired_link);
    while (p->n_waiting > 0) {
        struct stream *s = container_of(p->waiting.next, struct stream, up_link);
        pool_leave(p, s);
        stream_fail(s, GRPC_UNAVAILABLE, "the upstream left the cluster (DNS) before the call got a connection");
    }
    struct gr_list *it, *tmp;
    gr_list_for_each_safe(it, tmp, &p->conns)
    {
        struct upconn *u = container_of(it, struct upconn, link);
        u->draining = true;        /* streams in flight finish... */
        conn_want_flush(&u->io);   /* ...and idle connections close */
    }
    pool_release_if_idle(p);
}

void pool_release_if_idle(struct pool *p)
{
    if (p->retired && p->n_conns == 0 && p->n_waiting == 0)
        pool_free(p);
}

void pool_connect_failed(struct pool *p)
{
    uint32_t shift = p->connect_failures < 5 ? p->connect_failures : 5;
    uint64_t backoff_us = 1000000ull << shift;
    if (backoff_us > 30000000ull)
        backoff_us = 30000000ull;
    p->connect_failures++;
    p->ejected_until_us = gr_now_us() + backoff_us;
}

void pool_connect_worked(struct pool *p)
{
    p->connect_failures = 0;
    p->ejected_until_us = 0;
}

/* The first connection with a free slot; connections fill in order, so
 * streams pack onto as few connections as the peer allows. Sets *handshaking
 * when a connection still waits for the peer's SETTINGS. */
static struct upconn *find_free(struct pool *p, bool *handshaking)
{
    struct gr_list *it, *tmp;
    *handshaking = false;
    gr_list_for_each_safe(it, tmp, &p->conns)
    {
        struct upconn *u = container_of(it, struct upconn, link);
        if (upconn_free_slots(u) > 0)
            return u;
        if (!u->ready)
            *handshaking = true;
    }
    return NULL;
}

static struct upconn *find_or_open(struct pool *p, int *err)
{
    bool handshaking;
    struct upconn *u = find_free(p, &handshaking);
    *err = GR_OK;
    /* While a connection is still handshaking its real stream limit is
     * unknown (we assume 100): wait for its SETTINGS rather than open more. */
    if (u == NULL && !handshaking && !p->retired && p->n_conns < p->wc->cfg->max_connections && !p->w->stopping) {
        u = upconn_open(p);
        if (u == NULL) {
            log_warn("upstream %s: cannot open a connection: %s", p->ep->address.text, strerror(errno));
            *err = GR_ERR_IO;
        }
    }
    return u;
}

int pool_acquire(struct pool *p, struct stream *s)
{
    int err;
    struct upconn *u = find_or_open(p, &err);
    if (u != NULL)
        return stream_attach_upstream(s, u);
    if (err != GR_OK)
        return err;
    if (p->n_waiting >= p->wc->cfg->max_pending)
        return GR_ERR_LIMIT;
    s->waiting = true;
    gr_list_insert_tail(&p->waiting, &s->up_link);
    p->n_waiting++;
    return GR_OK;
}

void pool_leave(struct pool *p, struct stream *s)
{
    if (!s->waiting)
        return;
    s->waiting = false;
    gr_list_remove(&s->up_link);
    p->n_waiting--;
}

void pool_dispatch(struct pool *p)
{
    /* Bounded: every turn takes one stream out of the line. */
    while (p->n_waiting > 0) {
        int err;
        struct upconn *u = find_or_open(p, &err);
        struct stream *s = container_of(p->waiting.next, struct stream, up_link);
        if (u == NULL && err == GR_OK)
            return; /* all connections busy: wait for the next free slot */
        pool_leave(p, s);
        if (u == NULL) {
            stream_fail(s, GRPC_UNAVAILABLE, "cannot open a connection to the upstream");
            continue;
        }
        if (stream_attach_upstream(s, u) != GR_OK)
            stream_fail(s, GRPC_INTERNAL, "cannot send the request upstream");
    }
}

void pool_shutdown(struct pool *p)
{
    while (p->n_waiting > 0) {
        struct stream *s = container_of(p->waiting.next, struct stream, up_link);
        pool_leave(p, s);
        stream_fail(s, GRPC_UNAVAILABLE, "grelay is shutting down");
    }
    while (!gr_list_empty(&p->conns)) {
        struct upconn *u = container_of(p->conns.next, struct upconn, link);
        conn_close(&u->io, GR_OK, "shutting down");
    }
}
