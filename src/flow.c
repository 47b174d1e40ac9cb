/* A call's body bytes and their credit, one direction (see include/grelay/flow.h). */
#include "grelay/flow.h"

int flow_queue(struct flow *f, struct chunk_pool *cp, const uint8_t *data, size_t len, size_t wire)
{
    if (buf_append(&f->q, cp, data, len) != GR_OK)
        return GR_ERR_NOMEM;
    if (f->text)
        f->wire_unacked += wire;
    return GR_OK;
}

void flow_drop_replay(struct flow *f, struct chunk_pool *cp)
{
    if (!f->replay)
        return;
    f->replay = false;
    buf_drain(&f->q, cp, f->sent);
    f->acked -= f->sent;
    f->sent = 0;
}

/* flow_pull into out or, when out is NULL, into dst. */
static long pull(struct flow *f, struct chunk_pool *cp, uint8_t *out, struct buf *dst, size_t len, size_t keep_max,
                 size_t *due)
{
    size_t acked_now = 0;
    long n;
    if (f->replay) {
        /* Keep what is sent, for a retry; the sender's window still opens
         * as bytes go, so replay costs no backpressure. */
        n = out != NULL ? (long)buf_copy_at(&f->q, f->sent, out, len) : buf_append_from(dst, cp, &f->q, f->sent, len);
        if (n < 0)
            return n;
        f->sent += (size_t)n;
        if (f->sent > f->acked) {
            acked_now = f->sent - f->acked;
            f->acked = f->sent;
        }
        if (f->sent > keep_max)
            flow_drop_replay(f, cp); /* too big to keep: this attempt is the last */
    } else {
        if (out != NULL) {
            n = (long)buf_read(&f->q, cp, out, len);
        } else {
            n = (long)(len < f->q.len ? len : f->q.len);
            if (buf_move(dst, &f->q, cp, (size_t)n) != GR_OK)
                return GR_ERR_NOMEM;
        }
        acked_now = (size_t)n > f->acked ? (size_t)n - f->acked : 0;
        f->acked = (size_t)n > f->acked ? 0 : f->acked - (size_t)n;
    }
    if (f->text) {
        /* The wire carried base64: once everything decoded so far has gone,
         * the bytes that brought it are done with. */
        size_t queued = flow_ready(f);
        acked_now = queued == 0 ? f->wire_unacked : 0;
        f->wire_unacked -= acked_now;
    }
    *due = acked_now;
    return n;
}

size_t flow_pull(struct flow *f, struct chunk_pool *cp, uint8_t *out, size_t len, size_t keep_max, size_t *due)
{
    return (size_t)pull(f, cp, out, NULL, len, keep_max, due);
}

long flow_pull_buf(struct flow *f, struct chunk_pool *cp, struct buf *dst, size_t len, size_t keep_max, size_t *due)
{
    return pull(f, cp, NULL, dst, len, keep_max, due);
}
