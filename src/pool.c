/* Per-endpoint upstream connections and the line of waiting calls. */
#include "grelay/pool.h"
#include "grelay/breaker.h"
#include "grelay/h2_client.h"
#include "grelay/log.h"
#include "grelay/stats.h"
#include "grelay/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void pool_dispatch(struct pool *p);

static void free_task(struct gr_task *t) { pool_free(container_of(t, struct pool, free_task)); }
static void on_wait_timer(struct ev_loop *loop, ev_timer *t, int revents);
static void on_drain_timer(struct ev_loop *loop, ev_timer *t, int revents);

struct pool *pool_new(struct worker *w, const struct gr_cluster_cfg *cl, struct balancer *lb, size_t index,
                      const struct endpoint *ep)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->w = w;
    p->cl = cl;
    p->lb = lb;
    p->index = index;
    p->own = *ep;
    p->own.address.text = p->own.text;
    p->ep = &p->own;
    p->stats = stats_endpoint_key(cl->name, p->own.text);
    uint64_t *b = stats_block(w->stats, p->stats);
    stats_add(b, E_MEMBER, 1);
    stats_set(b, E_WEIGHT, ep->weight);
    gr_list_init(&p->conns);
    gr_list_init(&p->waiting);
    gr_list_init(&p->retired_link);
    gr_list_init(&p->free_task.link);
    p->free_task.run = free_task;
    ev_init(&p->wait_timer, on_wait_timer);
    ev_init(&p->drain_timer, on_drain_timer);
    return p;
}

void pool_free(struct pool *p)
{
    if (!p->retired)
        stats_add(stats_block(p->w->stats, p->stats), E_MEMBER, (uint64_t)-1);
    gr_list_remove(&p->retired_link);
    gr_list_remove(&p->free_task.link);
    ev_timer_stop(p->w->loop, &p->wait_timer);
    ev_timer_stop(p->w->loop, &p->drain_timer);
    if (p->outlier.until_us != 0) { /* a pool of the same endpoint may follow: it is not ejected */
        uint64_t *b = stats_block(p->w->stats, p->stats);
        stats_set(b, E_OUTLIER_UNTIL, 0);
        stats_set(b, E_OUTLIER_CODE, 0);
    }
    ev_timer_stop(p->w->loop, &p->outlier_timer);
    free(p);
}

/* A retired pool with nothing left is freed at the end of the iteration:
 * never under the feet of the connection callback that emptied it. */
static void release_if_idle(struct pool *p)
{
    if (p->retired && p->n_conns == 0 && p->n_waiting == 0)
        worker_defer(p->w, &p->free_task, true);
}

/* Takes the oldest call out of the line. */
static struct up_slot *leave_line(struct pool *p)
{
    struct up_slot *sl = container_of(p->waiting.next, struct up_slot, link);
    sl->queued = false;
    gr_list_remove(&sl->link);
    p->n_waiting--;
    breaker_pending_leave(p->cl);
    return sl;
}

/* Tells a call in line that it gets no slot; the pool lets go of it first. */
static void refuse(struct pool *p, struct up_slot *sl, const char *why)
{
    if (!p->retired)
        balancer_finished(p->lb, p->index);
    sl->pool = NULL;
    sl->ev->refused(sl, why);
}

static void refuse_line(struct pool *p, const char *why)
{
    while (p->n_waiting > 0)
        refuse(p, leave_line(p), why);
}

void pool_retire(struct pool *p)
{
    if (!p->retired)
        stats_add(stats_block(p->w->stats, p->stats), E_MEMBER, (uint64_t)-1);
    p->retired = true;
    refuse_line(p, "the upstream left the cluster (DNS) before the call got a connection");
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &p->conns) {
        h2_client_drain(container_of(it, struct upconn, link)); /* calls in flight finish, idle ones close */
    }
    if (p->cl->drain_timeout_ms > 0 && p->n_conns > 0) {
        ev_timer_set(&p->drain_timer, (double)p->cl->drain_timeout_ms / 1e3, 0.0);
        ev_timer_start(p->w->loop, &p->drain_timer);
    }
    release_if_idle(p);
}

/* drain_timeout after the endpoint left the set: the calls it still
 * carries end as on a lost connection (UNAVAILABLE, in trailers when their
 * response has started: clients retry, on the endpoints that remain), and
 * its connections close. */
static void on_drain_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct pool *p = container_of(t, struct pool, drain_timer);
    char why[200];
    snprintf(why, sizeof(why), "endpoint removed from cluster %s, its calls cut after drain_timeout (%llums)",
             p->cl->name, (unsigned long long)p->cl->drain_timeout_ms);
    log_info("upstream %s: %s: %u connection%s closed", p->ep->address.text, why, p->n_conns,
             p->n_conns == 1 ? "" : "s");
    /* Bounded: every turn closes one connection, which leaves the list. */
    while (!gr_list_empty(&p->conns))
        h2_client_cut(container_of(p->conns.next, struct upconn, link), why);
}

void pool_set_ejected_until(struct pool *p)
{
    uint64_t o = p->outlier.until_us;
    p->ejected_until_us = p->connect_until_us > o ? p->connect_until_us : o;
    stats_set(stats_block(p->w->stats, p->stats), E_EJECTED_UNTIL, p->ejected_until_us);
}

static void connect_failed(struct pool *p)
{
    uint32_t shift = p->connect_failures < 5 ? p->connect_failures : 5;
    uint64_t backoff_us = 1000000ull << shift;
    if (backoff_us > 30000000ull)
        backoff_us = 30000000ull;
    p->connect_failures++;
    p->connect_until_us = gr_now_us() + backoff_us;
    uint64_t *b = stats_block(p->w->stats, p->stats);
    stats_add(b, E_CONNECT_FAILURES, 1);
    stats_add(b, E_EJECTIONS, 1);
    pool_set_ejected_until(p);
}

static void on_settings(void *owner, struct upconn *u, bool first)
{
    struct pool *p = owner;
    (void)u;
    if (first) {
        p->connect_failures = 0;
        p->connect_until_us = 0;
        pool_set_ejected_until(p); /* an ejection by failed calls stays */
        if (p->failing) {
            p->failing = false;
            log_info("upstream %s is reachable again", p->ep->address.text);
        }
    }
    pool_dispatch(p); /* the peer's stream limit may have grown */
}

/* Whether a connection of p has heard its peer's SETTINGS. */
static bool any_ready(const struct pool *p)
{
    struct gr_list *it, *tmp;
    gr_list_for_each_safe (it, tmp, &p->conns) {
        if (container_of(it, struct upconn, link)->ready)
            return true;
    }
    return false;
}

/* A connection that never came up closed and none of p's is up: the calls
 * in line waited for it (it took one stream before its SETTINGS), so they
 * are lost with it, as if they had ridden it: nothing of theirs was sent,
 * and they are retried transparently (elsewhere, the endpoint being
 * ejected) rather than left to max_pending_time. */
static void lose_line(struct pool *p, const char *why)
{
    bool was = p->dispatching;
    p->dispatching = true; /* their releases do not serve the line meanwhile */
    /* Bounded: the calls in line now, one each turn (a retry that joins the
     * line again is not taken twice). */
    for (uint32_t n = p->n_waiting; n > 0 && p->n_waiting > 0; n--) {
        struct up_slot *sl = leave_line(p);
        sl->ev->lost(sl, why, true); /* sl->pool is still p: its release counts it finished */
    }
    p->dispatching = was;
}

static void on_closing(void *owner, struct upconn *u, const char *why)
{
    struct pool *p = owner;
    if (!u->ready || u->unresponsive)
        connect_failed(p); /* a black-holed endpoint is avoided like one that refuses */
    if (!u->ready && !p->failing) {
        log_warn("%s (further failures of this endpoint are logged at debug level)", why);
        p->failing = true;
    } else if (u->ready && u->n_streams > 0) {
        log_info("%s (%u call%s affected)", why, u->n_streams, u->n_streams == 1 ? "" : "s");
    } else {
        log_debug("%s", why);
    }
    gr_list_remove(&u->link);
    p->n_conns--;
    stats_add(stats_block(p->w->stats, p->stats), E_CONNS, (uint64_t)-1);
    if (!u->ready && !any_ready(p))
        lose_line(p, why);
}

static void on_closed(void *owner, struct upconn *u)
{
    struct pool *p = owner;
    (void)u;
    pool_dispatch(p);
    release_if_idle(p);
}

static const struct upconn_events pool_upconn_events = {
    .settings = on_settings,
    .closing = on_closing,
    .closed = on_closed,
};

/* The first connection with a free slot; connections fill in order, so
 * streams pack onto as few connections as the peer allows. Sets *handshaking
 * when a connection still waits for the peer's SETTINGS, and counts in
 * *draining those that take no new stream (GOAWAY, age, stream ids). */
static struct upconn *find_free(struct pool *p, bool *handshaking, uint32_t *draining)
{
    struct gr_list *it, *tmp;
    *handshaking = false;
    *draining = 0;
    gr_list_for_each_safe (it, tmp, &p->conns) {
        struct upconn *u = container_of(it, struct upconn, link);
        if (h2_client_free_slots(u) > 0)
            return u;
        if (u->ready && !u->draining && !h2_client_takes_streams(u))
            h2_client_drain(u); /* stream ids used up: closes once its streams finish */
        if (u->draining)
            (*draining)++;
        if (!u->ready)
            *handshaking = true;
    }
    return NULL;
}

static struct upconn *find_or_open(struct pool *p, int *err)
{
    bool handshaking;
    uint32_t draining;
    struct upconn *u = find_free(p, &handshaking, &draining);
    *err = GR_OK;
    /* While a connection is still handshaking its real stream limit is
     * unknown (it takes one stream): wait for its SETTINGS rather than open
     * more. Connections that drain (their long streams may keep them for
     * hours) leave room for new ones, up to max_connections more of them. */
    uint32_t max = p->cl->max_connections;
    if (u == NULL && !handshaking && !p->retired && p->n_conns - draining < max && p->n_conns < 2 * max &&
        !p->w->stopping) {
        u = h2_client_open(p->w, p->cl, p->ep, &pool_upconn_events, p);
        if (u == NULL) {
            log_warn("upstream %s: cannot open a connection: %s", p->ep->address.text, strerror(errno));
            *err = GR_ERR_IO;
        } else {
            gr_list_insert_tail(&p->conns, &u->link);
            p->n_conns++;
            stats_add(stats_block(p->w->stats, p->stats), E_CONNS, 1);
        }
    }
    return u;
}

int pool_acquire(struct pool *p, struct up_slot *sl)
{
    int err;
    struct upconn *u = find_or_open(p, &err);
    if (u == NULL && err != GR_OK)
        return err;
    if (u == NULL && p->n_waiting >= p->cl->max_pending)
        return GR_ERR_LIMIT;
    if (u == NULL && breaker_pending_join(p->cl) != BREAKER_OK)
        return BREAKER_ERR_PENDING; /* the cluster's line, all endpoints and workers, is full */
    sl->pool = p;
    if (!p->retired)
        balancer_started(p->lb, p->index);
    if (u != NULL) {
        h2_client_attach(u, sl);
        return GR_OK;
    }
    sl->queued = true;
    sl->queued_at = ev_now(p->w->loop);
    gr_list_insert_tail(&p->waiting, &sl->link);
    p->n_waiting++;
    if (p->cl->max_pending_time_ms > 0 && !ev_is_active(&p->wait_timer)) {
        ev_timer_set(&p->wait_timer, (double)p->cl->max_pending_time_ms / 1e3, 0.0);
        ev_timer_start(p->w->loop, &p->wait_timer);
    }
    return GR_OK;
}

void pool_release(struct up_slot *sl)
{
    struct pool *p = sl->pool;
    if (p == NULL)
        return;
    sl->pool = NULL;
    if (sl->queued) {
        sl->queued = false;
        gr_list_remove(&sl->link);
        p->n_waiting--;
        breaker_pending_leave(p->cl);
    }
    if (!p->retired) {
        balancer_finished(p->lb, p->index);
        pool_dispatch(p);
    }
    release_if_idle(p);
}

/* Serves the line from free slots (or new connections). Not re-entered: a
 * call that fails here releases its slot, which asks for a dispatch that
 * the running loop already does (no recursion as deep as the line). */
static void pool_dispatch(struct pool *p)
{
    if (p->dispatching)
        return;
    p->dispatching = true;
    /* Bounded: every turn takes one call out of the line. */
    while (p->n_waiting > 0) {
        int err;
        struct upconn *u = find_or_open(p, &err);
        if (u == NULL && err == GR_OK)
            break; /* all connections busy: wait for the next free slot */
        struct up_slot *sl = leave_line(p);
        if (u == NULL) {
            refuse(p, sl, "cannot open a connection to the upstream");
            continue;
        }
        h2_client_attach(u, sl);
        sl->ev->granted(sl);
    }
    p->dispatching = false;
}

/* The oldest call in line may have waited max_pending_time: every call
 * that has is refused (the line is oldest first, so they are at its head),
 * and the timer is set for the next one. Calls that left the line early
 * cost nothing: the timer finds a younger head and waits for it. */
static void on_wait_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct pool *p = container_of(t, struct pool, wait_timer);
    double max = (double)p->cl->max_pending_time_ms / 1e3, now = ev_now(loop);
    char why[160];
    snprintf(why, sizeof(why), "upstream %s: no stream slot within max_pending_time (%llums)", p->ep->address.text,
             (unsigned long long)p->cl->max_pending_time_ms);
    /* Bounded: every turn takes one call out of the line. */
    while (p->n_waiting > 0) {
        struct up_slot *sl = container_of(p->waiting.next, struct up_slot, link);
        if (sl->queued_at + max > now) {
            ev_timer_set(t, sl->queued_at + max - now, 0.0);
            ev_timer_start(loop, t);
            break;
        }
        refuse(p, leave_line(p), why);
    }
    release_if_idle(p);
}

void pool_shutdown(struct pool *p)
{
    refuse_line(p, "grelay is shutting down");
    while (!gr_list_empty(&p->conns)) {
        struct upconn *u = container_of(p->conns.next, struct upconn, link);
        conn_close(&u->io, GR_OK, "shutting down");
    }
}
