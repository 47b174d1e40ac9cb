/* A connection's deadlines on one libev timer (see include/grelay/conn_timer.h). */
#include "grelay/conn_timer.h"

#include <string.h>

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct conn_timer *ct = container_of(t, struct conn_timer, t);
    conn_timer_fire(ct, ev_now(loop));
}

void conn_timer_init(struct conn_timer *ct, struct ev_loop *loop, conn_timer_cb expired)
{
    memset(ct, 0, sizeof(*ct));
    ct->loop = loop;
    ct->expired = expired;
    ev_init(&ct->t, on_timer);
}

ev_tstamp conn_timer_next(const struct conn_timer *ct)
{
    ev_tstamp next = 0;
    for (int k = 0; k < CONN_TIMER_KINDS; k++)
        if (ct->at[k] > 0 && (next == 0 || ct->at[k] < next))
            next = ct->at[k];
    return next;
}

/* Arms the libev timer for the earliest deadline when it would fire later
 * than that (or not at all); an armed timer that fires early is left. */
static void arm(struct conn_timer *ct)
{
    ev_tstamp next = conn_timer_next(ct);
    if (next == 0) {
        ev_timer_stop(ct->loop, &ct->t); /* also a repeating one that just fired */
        ct->armed = 0;
        return;
    }
    if (ct->armed != 0 && ct->armed <= next)
        return; /* fires early enough: the expiry re-checks */
    ev_tstamp delay = next - ev_now(ct->loop);
    ct->t.repeat = delay > 0 ? delay : 1e-6;
    ev_timer_again(ct->loop, &ct->t);
    ct->armed = next;
}

void conn_timer_set_at(struct conn_timer *ct, enum conn_timer_kind kind, ev_tstamp at)
{
    ct->at[kind] = at;
    if (!ct->firing)
        arm(ct);
}

void conn_timer_set(struct conn_timer *ct, enum conn_timer_kind kind, ev_tstamp after)
{
    conn_timer_set_at(ct, kind, ev_now(ct->loop) + after);
}

void conn_timer_clear(struct conn_timer *ct, enum conn_timer_kind kind)
{
    ct->at[kind] = 0; /* an armed timer that finds nothing due re-arms or stops then */
}

void conn_timer_stop(struct conn_timer *ct)
{
    memset(ct->at, 0, sizeof(ct->at));
    ev_timer_stop(ct->loop, &ct->t);
    ct->armed = 0;
}

void conn_timer_fire(struct conn_timer *ct, ev_tstamp now)
{
    if (ct->armed != 0 && ct->armed <= now)
        ct->armed = 0; /* that expiry is this one */
    ct->firing = true;
    /* Bounded: each turn clears one due deadline (a handler that sets the
     * same deadline again sets it in the future, or it stays due and is
     * handled at the next expiry). */
    for (int turns = 0; turns < CONN_TIMER_KINDS; turns++) {
        int due = -1;
        for (int k = 0; k < CONN_TIMER_KINDS; k++)
            if (ct->at[k] > 0 && ct->at[k] <= now && (due < 0 || ct->at[k] < ct->at[due]))
                due = k;
        if (due < 0)
            break;
        ct->at[due] = 0;
        ct->expired(ct, (enum conn_timer_kind)due);
    }
    ct->firing = false;
    arm(ct);
}
