/* What both client-side protocols share: registration with the worker. */
#include "grelay/downstream.h"
#include "grelay/stats.h"
#include "grelay/worker.h"

void downstream_init(struct downstream *d, struct worker *w, const struct gr_listener_cfg *l,
                     const struct downstream_ops *ops, bool http1)
{
    d->ops = ops;
    d->http1 = http1;
    d->peer[0] = '\0';
    uint64_t *b = stats_block(w->stats, l->stats);
    stats_add(b, http1 ? L_CONNS_H1 : L_CONNS_H2, 1);
    stats_add(b, http1 ? L_CONNS_TOTAL_H1 : L_CONNS_TOTAL_H2, 1);
    d->cfg = l;
    d->cut_at = 0;
    d->calls = 0;
    gr_list_init(&d->streams);
    gr_list_insert_tail(&w->dconns, &d->link);
}

void downstream_fini(struct downstream *d)
{
    gr_list_remove(&d->link);
    stats_add(stats_block(d->io.w->stats, d->cfg->stats), d->http1 ? L_CONNS_H1 : L_CONNS_H2, (uint64_t)-1);
}

void downstream_break(struct downstream *d)
{
    d->broken = true;
    conn_want_flush(&d->io);
}

void downstream_call_began(struct downstream *d)
{
    if (++d->calls == d->cfg->max_requests_per_connection)
        (void)d->ops->drain(d, NULL);
}
