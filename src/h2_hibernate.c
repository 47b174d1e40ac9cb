/* Hibernation of idle HTTP/2 client connections (see h2_hibernate.h). */
#include "grelay/h2_hibernate.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <malloc.h>
#include <string.h>

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN 24
#define FRAME_HDR 9
#define DEFAULT_WINDOW 65535
/* Free nghttp2 objects the worker's allocator keeps after a pass that
 * hibernated something (the rest goes back to malloc, then to the kernel). */
#define KEEP_FREE_PER_CLASS 64
#define KEEP_FREE_CHUNKS 32
#define TRIM_AFTER_SLEEPS 256 /* sessions freed before malloc_trim runs under load */

void h2_frames_init(struct h2_frames *t)
{
    memset(t, 0, sizeof(*t));
    t->preface = PREFACE_LEN;
}

void h2_frames_feed(struct h2_frames *t, const uint8_t *p, size_t n)
{
    if (t->preface > 0) {
        size_t k = n < t->preface ? n : t->preface;
        t->preface = (uint8_t)(t->preface - k);
        p += k;
        n -= k;
    }
    while (n > 0) {
        if (t->left > 0) {
            size_t k = n < t->left ? n : t->left;
            t->left -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        size_t k = FRAME_HDR - t->have;
        if (k > n)
            k = n;
        memcpy(t->hdr + t->have, p, k);
        t->have = (uint8_t)(t->have + k);
        p += k;
        n -= k;
        if (t->have < FRAME_HDR)
            break;
        t->have = 0;
        t->left = ((uint32_t)t->hdr[0] << 16) | ((uint32_t)t->hdr[1] << 8) | t->hdr[2];
        uint8_t type = t->hdr[3], flags = t->hdr[4];
        if (type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE || type == NGHTTP2_CONTINUATION)
            t->in_block = !(flags & NGHTTP2_FLAG_END_HEADERS);
    }
}

bool h2_frames_at_boundary(const struct h2_frames *t)
{
    return t->preface == 0 && t->left == 0 && t->have == 0 && !t->in_block;
}

static uint8_t *put_frame_hdr(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    memset(p + 5, 0, 4); /* stream 0 */
    return p + FRAME_HDR;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static int submit_table_size(struct dconn *d, uint32_t size)
{
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, size};
    if (nghttp2_submit_settings(d->h2, NGHTTP2_FLAG_NONE, &iv, 1) != 0)
        return GR_ERR_NOMEM;
    d->settings_unacked++;
    d->table_acks = d->settings_unacked;
    conn_want_flush(&d->base.io);
    return GR_OK;
}

void h2_table_on_request(struct dconn *d)
{
    if (d->table == H2_TABLE_GROWN)
        d->table = H2_TABLE_FULL;
    else if (d->table == H2_TABLE_EMPTY && ++d->calls_empty >= H2_TABLE_GROW_AFTER &&
             submit_table_size(d, 4096) == GR_OK)
        d->table = H2_TABLE_GROWING; /* busy again: compression back */
}

void h2_table_on_ack(struct dconn *d)
{
    if (d->reviving || d->settings_unacked == 0)
        return;
    d->settings_unacked--;
    if (d->table_acks > 0 && --d->table_acks == 0) {
        if (d->table == H2_TABLE_SHRINKING)
            d->table = H2_TABLE_EMPTY;
        else if (d->table == H2_TABLE_GROWING)
            d->table = H2_TABLE_GROWN;
    }
}

enum h2_idle h2_idle_step(struct dconn *d)
{
    struct conn *c = &d->base.io;
    nghttp2_session *h2 = d->h2;
    if (h2 == NULL)
        return H2_IDLE_ASLEEP;
    if (!gr_list_empty(&d->base.streams))
        return H2_IDLE_BUSY;
    if (c->state != CONN_OPEN || c->wbuf.len > 0 || nghttp2_session_want_write(h2) ||
        !h2_frames_at_boundary(&d->frames))
        return H2_IDLE_WAIT;
    if (d->table == H2_TABLE_FULL) {
        d->calls_empty = 0;
        if (submit_table_size(d, 0) != GR_OK)
            return H2_IDLE_BUSY;
        d->table = H2_TABLE_SHRINKING;
        return H2_IDLE_WAIT;
    }
    if (d->table == H2_TABLE_GROWING || d->table == H2_TABLE_GROWN)
        return H2_IDLE_BUSY; /* a grow not confirmed by a header block yet */
    if (d->table != H2_TABLE_EMPTY || d->settings_unacked > 0)
        return H2_IDLE_WAIT;
    /* A new session's send window starts at 65535: a smaller one is used up
     * by a response on a stream of the past (see h2_revive), which the
     * client's initial stream window must allow. The client's window must be
     * at most full. */
    int32_t send_window = nghttp2_session_get_remote_window_size(h2);
    int32_t recv_left = nghttp2_session_get_local_window_size(h2);
    int32_t full = (int32_t)d->base.cfg->connection_window;
    int32_t last = nghttp2_session_get_last_proc_stream_id(h2);
    uint32_t stream_window = nghttp2_session_get_remote_settings(h2, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    if (send_window < 0 || recv_left < 0 || recv_left > full ||
        (send_window < DEFAULT_WINDOW && (last <= 0 || DEFAULT_WINDOW - send_window > (int32_t)stream_window)))
        return H2_IDLE_BUSY;
    for (int i = 0; i < 6; i++)
        d->remote_settings[i] = nghttp2_session_get_remote_settings(h2, (nghttp2_settings_id)(i + 1));
    d->remote_window = send_window;
    d->last_stream = last;
    nghttp2_session_del(h2);
    d->h2 = NULL;
    if (recv_left < full) {
        /* Top the client up to a full window, where a new session starts. */
        uint8_t wu[FRAME_HDR + 4];
        put_u32(put_frame_hdr(wu, 4, NGHTTP2_WINDOW_UPDATE, 0), (uint32_t)(full - recv_left));
        if (buf_append(&c->wbuf, &c->w->chunks, wu, sizeof(wu)) != GR_OK) {
            conn_close(c, GR_ERR_NOMEM, "out of memory");
            return H2_IDLE_ASLEEP;
        }
        conn_want_flush(c);
    }
    log_debug("client connection hibernates (idle, HTTP/2 session freed)");
    return H2_IDLE_ASLEEP;
}

/* The body of the response on the stream of the past: as many bytes as
 * the new session's send window must lose. Never reaches the client. */
static ssize_t debt_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)id;
    (void)ud;
    struct dconn *d = src->ptr;
    size_t n = d->debt < length ? d->debt : length;
    memset(buf, 0, n);
    d->debt -= (uint32_t)n;
    if (d->debt == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Runs the session's output and throws it away: the client has had it
 * (SETTINGS, WINDOW_UPDATE) from the session before. */
static int drop_output(nghttp2_session *h2)
{
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h2, &data)) > 0)
        ;
    return n == 0 ? GR_OK : GR_ERR_PROTO;
}

int h2_revive(struct dconn *d)
{
    int rc = dconn_new_session(d);
    if (rc != GR_OK)
        return rc;
    d->reviving = true;
    rc = drop_output(d->h2);
    /* The connection's past, as the new session must believe it. */
    uint8_t past[PREFACE_LEN + FRAME_HDR + 6 * 6 + FRAME_HDR + FRAME_HDR + 4 + FRAME_HDR + 16], *p = past;
    memcpy(p, PREFACE, PREFACE_LEN);
    p += PREFACE_LEN;
    p = put_frame_hdr(p, 6 * 6, NGHTTP2_SETTINGS, 0);
    for (int i = 0; i < 6; i++) {
        p[0] = 0;
        p[1] = (uint8_t)(i + 1);
        p = put_u32(p + 2, d->remote_settings[i]);
    }
    p = put_frame_hdr(p, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK);
    if (d->remote_window > DEFAULT_WINDOW)
        p = put_u32(put_frame_hdr(p, 4, NGHTTP2_WINDOW_UPDATE, 0), (uint32_t)(d->remote_window - DEFAULT_WINDOW));
    if (d->last_stream > 0) {
        /* The client's last stream, opened again as a GET that ends at once,
         * so that the new session knows which ids are past; its response
         * (dropped) uses up the send window the client has not returned.
         * HPACK: static-table entries and a literal never indexed, so the
         * decoder's table stays empty; :status 200 is static for the encoder. */
        static const uint8_t block[] = {0x82, 0x86, 0x84, 0x01, 0x01, 'x'}; /* GET http / :authority x */
        p = put_frame_hdr(p, sizeof(block), NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM);
        put_u32(p - 4, (uint32_t)d->last_stream);
        memcpy(p, block, sizeof(block));
        p += sizeof(block);
    }
    if (rc == GR_OK && nghttp2_session_mem_recv(d->h2, past, (size_t)(p - past)) != p - past)
        rc = GR_ERR_PROTO;
    if (rc == GR_OK && d->last_stream > 0) {
        static const nghttp2_nv status = {(uint8_t *)":status", (uint8_t *)"200", 7, 3,
                                          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
        d->debt = d->remote_window < DEFAULT_WINDOW ? (uint32_t)(DEFAULT_WINDOW - d->remote_window) : 0;
        nghttp2_data_provider prd = {.source = {.ptr = d}, .read_callback = debt_read};
        if (nghttp2_submit_response(d->h2, d->last_stream, &status, 1, d->debt > 0 ? &prd : NULL) != 0)
            rc = GR_ERR_PROTO;
    }
    if (rc == GR_OK)
        rc = drop_output(d->h2);
    if (rc == GR_OK && (d->debt != 0 || nghttp2_session_get_remote_window_size(d->h2) != d->remote_window))
        rc = GR_ERR_PROTO; /* cannot happen: h2_idle_step checked the windows */
    d->reviving = false;
    d->calls_empty = 0; /* counts calls of this waking only */
    if (rc != GR_OK) {
        nghttp2_session_del(d->h2);
        d->h2 = NULL;
        return rc;
    }
    struct worker *w = d->base.io.w;
    d->busy_at = ev_now(w->loop);
    gr_list_insert_tail(&w->h2_lru, &d->lru_link);
    log_debug("client connection wakes (new HTTP/2 session)");
    return GR_OK;
}

void h2_hibernate_sweep(struct worker *w, ev_tstamp now)
{
    /* Quiet: no call in flight and none began since the last pass. (No call
     * in flight at one instant says little: under load every call of a
     * burst may have ended just before the next burst arrives.) */
    bool quiet = w->n_streams == 0 && w->streams_begun == w->streams_begun_swept;
    w->streams_begun_swept = w->streams_begun;
    /* Chunks and streams a burst left in the free lists go back too: those
     * no call took since the last pass, or, when quiet, all. */
    if (quiet) {
        w->chunks.n_free_low = w->chunks.n_free;
        w->free_streams_low = w->n_free_streams;
    }
    size_t freed = chunk_pool_trim(&w->chunks, KEEP_FREE_CHUNKS) + stream_cache_trim(w);
    size_t slept = 0;
    struct gr_list *it, *tmp;
    gr_list_for_each_safe(it, tmp, &w->h2_lru)
    {
        struct dconn *d = container_of(it, struct dconn, lru_link);
        ev_tstamp idle = now - d->busy_at;
        if (idle < w->hibernate_min)
            break; /* the rest are busier still */
        if (idle < (ev_tstamp)d->base.cfg->hibernate_after_ms / 1000.0)
            continue;
        switch (h2_idle_step(d)) {
        case H2_IDLE_ASLEEP:
            gr_list_remove(&d->lru_link);
            slept++;
            break;
        case H2_IDLE_BUSY:
            d->busy_at = now; /* look again after another hibernate_after */
            gr_list_remove(&d->lru_link);
            gr_list_insert_tail(&w->h2_lru, &d->lru_link);
            break;
        case H2_IDLE_WAIT:
            break;
        }
    }
    w->slept_untrimmed += slept;
    /* Give the freed memory back to the system, not just to free lists.
     * malloc_trim walks the whole heap (tens of ms under load: a stall for
     * every call in flight), so it runs when the worker is quiet, or under
     * load once enough sessions (~25 KiB each) have gone to sleep to be
     * worth it. */
    if ((quiet && w->slept_untrimmed + freed > 0) || w->slept_untrimmed >= TRIM_AFTER_SLEEPS) {
        mem_pool_trim(&w->h2mem, KEEP_FREE_PER_CLASS);
        malloc_trim(0);
        w->slept_untrimmed = 0;
    }
}
