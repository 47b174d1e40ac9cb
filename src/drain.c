/* The drain of the whole process (see include/grelay/drain.h). */
#include "grelay/drain.h"
#include "grelay/common.h"
#include "grelay/log.h"

#include <stdatomic.h>
#include <stdlib.h>

/* After the cut, how long the cut calls' trailers have to leave before
 * the workers stop and close what is left. */
#define CUT_GRACE_S 0.5

enum drain_phase {
    DRAIN_IDLE,  /* serving */
    DRAIN_DELAY, /* not ready, still accepting (drain_delay) */
    DRAIN_WAIT,  /* listeners closed, connections draining, calls finishing */
    DRAIN_CUT,   /* the calls left were cut; their trailers are leaving */
};

struct drain {
    struct ev_loop *loop;   /* the main thread's loop */
    struct proxy *p;        /* the workers */
    ev_timer delay;         /* drain_delay after the signal */
    ev_timer deadline;      /* drain_timeout after the signal; after the cut, CUT_GRACE_S */
    ev_async empty;         /* a worker has no client connection left (sent from its thread) */
    enum drain_phase phase; /* see enum drain_phase */
    ev_tstamp began;        /* when the signal came (ev_time) */
};

static atomic_bool ready = true;

bool drain_ready(void) { return atomic_load(&ready); }

static void finish(struct drain *d)
{
    uint64_t drained, cut;
    proxy_drain_counts(d->p, &drained, &cut);
    log_info("drained in %.2fs: %llu call%s finished, %llu cut%s", ev_time() - d->began, (unsigned long long)drained,
             drained == 1 ? "" : "s", (unsigned long long)cut,
             proxy_drained(d->p) ? "" : "; connections still open are closed");
    ev_timer_stop(d->loop, &d->delay);
    ev_timer_stop(d->loop, &d->deadline);
    ev_break(d->loop, EVBREAK_ALL);
}

static void stop_accepting(struct drain *d)
{
    ev_timer_stop(d->loop, &d->delay);
    d->phase = DRAIN_WAIT;
    log_info("draining: listeners closed, client connections told (GOAWAY, Connection: close)");
    proxy_drain(d->p, d->loop, &d->empty);
}

static void cut(struct drain *d)
{
    if (d->phase == DRAIN_DELAY)
        stop_accepting(d);
    d->phase = DRAIN_CUT;
    log_info("draining: cutting the calls left (UNAVAILABLE)");
    proxy_drain_cut(d->p);
    ev_timer_stop(d->loop, &d->deadline);
    ev_timer_set(&d->deadline, CUT_GRACE_S, 0.0);
    ev_timer_start(d->loop, &d->deadline);
}

static void on_delay(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    stop_accepting(container_of(t, struct drain, delay));
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct drain *d = container_of(t, struct drain, deadline);
    if (d->phase == DRAIN_CUT)
        finish(d);
    else
        cut(d);
}

static void on_empty(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct drain *d = container_of(a, struct drain, empty);
    if (d->phase >= DRAIN_WAIT && proxy_drained(d->p))
        finish(d);
}

struct drain *drain_new(struct ev_loop *loop, struct proxy *p)
{
    struct drain *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->loop = loop;
    d->p = p;
    ev_timer_init(&d->delay, on_delay, 0.0, 0.0); /* both set by drain_start, from the snapshot then running */
    ev_timer_init(&d->deadline, on_deadline, 0.0, 0.0);
    ev_async_init(&d->empty, on_empty);
    ev_async_start(loop, &d->empty);
    return d;
}

void drain_start(struct drain *d, const char *why)
{
    switch (d->phase) {
    case DRAIN_IDLE: {
        /* The snapshot running now: a reload may have changed both. */
        const struct gr_config *cfg = proxy_config(d->p);
        atomic_store(&ready, false);
        d->began = ev_time();
        d->phase = DRAIN_DELAY;
        log_info("%s: draining (not ready); listeners close in %.3gs, calls may take %.3gs to finish", why,
                 (double)cfg->drain_delay_ms / 1e3, (double)cfg->drain_timeout_ms / 1e3);
        ev_timer_set(&d->delay, (ev_tstamp)cfg->drain_delay_ms / 1e3, 0.0);
        ev_timer_set(&d->deadline, (ev_tstamp)cfg->drain_timeout_ms / 1e3, 0.0);
        ev_timer_start(d->loop, &d->deadline);
        if (cfg->drain_delay_ms > 0)
            ev_timer_start(d->loop, &d->delay);
        else
            stop_accepting(d);
        break;
    }
    case DRAIN_DELAY:
    case DRAIN_WAIT:
        log_info("%s again: not waiting any longer", why);
        cut(d);
        break;
    case DRAIN_CUT:
        log_info("%s again: stopping now", why);
        finish(d);
        break;
    }
}

void drain_free(struct drain *d)
{
    if (d == NULL)
        return;
    ev_timer_stop(d->loop, &d->delay);
    ev_timer_stop(d->loop, &d->deadline);
    ev_async_stop(d->loop, &d->empty);
    free(d);
}
