/* What both client-side protocols share: registration and teardown. */
#include "grelay/downstream.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

void downstream_init(struct downstream *d, struct worker *w, const struct gr_listener_cfg *l,
                     const struct downstream_ops *ops)
{
    d->ops = ops;
    d->cfg = l;
    gr_list_init(&d->streams);
    gr_list_insert_tail(&w->dconns, &d->link);
}

void downstream_close_streams(struct downstream *d)
{
    gr_list_remove(&d->link);
    while (!gr_list_empty(&d->streams)) {
        struct stream *s = container_of(d->streams.next, struct stream, down_link);
        stream_on_down_close(s, NGHTTP2_CANCEL);
    }
}
