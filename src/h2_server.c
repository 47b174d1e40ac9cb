/* Downstream HTTP/2: nghttp2 server sessions whose callbacks map onto
 * streams (stream user data = struct stream). */
#include "grelay/h2_data.h"
#include "grelay/h2_server.h"
#include "grelay/log.h"
#include "grelay/stream.h"
#include "grelay/worker.h"

#include <stdlib.h>
#include <unistd.h>

static inline struct dconn *dconn_of(struct conn *c) { return container_of(c, struct dconn, base.io); }
static inline struct dconn *dconn_from(struct downstream *d) { return container_of(d, struct dconn, base); }

/* A call began or ended: the connection goes to the busy end of the
 * worker's hibernation list (h2_hibernate.c). */
static void dconn_busy(struct dconn *d)
{
    if (!gr_list_linked(&d->lru_link))
        return;
    struct worker *w = d->base.io.w;
    d->busy_at = ev_now(w->loop);
    gr_list_remove(&d->lru_link);
    gr_list_insert_tail(&w->h2_lru, &d->lru_link);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct dconn *d = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST || d->reviving)
        return 0;
    h2_table_on_request(d);
    struct stream *s = stream_new(&d->base, frame->hd.stream_id);
    if (s == NULL) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    dconn_busy(d);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    if (stream_on_req_header(s, name, namelen, value, valuelen) != GR_OK)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type == NGHTTP2_SETTINGS && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        h2_table_on_ack(user_data);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        stream_on_req_headers_done(s);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        stream_on_req_end(s);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    stream_on_req_data(s, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    /* The answer is complete but the client is still sending: tell it to
     * stop, as RFC 9113 8.1 allows, so the stream can close. */
    if (s != NULL && !s->req_ended)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s != NULL) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_on_down_close(s, error_code);
    }
    dconn_busy(user_data);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    (void)user_data;
    log_debug("client: %.*s", (int)len, msg);
    return 0;
}

int h2_server_setup(nghttp2_session_callbacks **cbs, nghttp2_option **opt)
{
    if (nghttp2_session_callbacks_new(cbs) != 0)
        return GR_ERR_NOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(*cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(*cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(*cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(*cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(*cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(*cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(*cbs, on_error);
    if (nghttp2_option_new(opt) != 0)
        return GR_ERR_NOMEM;
    nghttp2_option_set_no_auto_window_update(*opt, 1);
    nghttp2_option_set_no_closed_streams(*opt, 1); /* we keep no priority tree: do not hold closed streams */
    return GR_OK;
}

static int d_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct dconn *d = dconn_of(c);
    if (d->h2 == NULL) {
        int rc = h2_revive(d);
        if (rc != GR_OK)
            return rc;
    }
    if (gr_list_linked(&d->lru_link))
        h2_frames_feed(&d->frames, data, len);
    ssize_t rv = nghttp2_session_mem_recv(d->h2, data, len);
    if (rv < 0) {
        log_debug("client connection: %s", nghttp2_strerror((int)rv));
        return GR_ERR_PROTO;
    }
    return GR_OK;
}

static ssize_t d_pull(struct conn *c, const uint8_t **data)
{
    struct dconn *d = dconn_of(c);
    return d->h2 != NULL ? nghttp2_session_mem_send(d->h2, data) : 0;
}

static bool d_done(struct conn *c)
{
    struct dconn *d = dconn_of(c);
    return d->h2 != NULL && !nghttp2_session_want_read(d->h2) && !nghttp2_session_want_write(d->h2);
}

static void d_on_close(struct conn *c, int err, const char *why)
{
    struct dconn *d = dconn_of(c);
    if (err != GR_OK && err != GR_ERR_CLOSED)
        log_debug("client connection closed: %s", why);
    gr_list_remove(&d->lru_link);
    downstream_close_streams(&d->base);
    nghttp2_session_del(d->h2);
    d->h2 = NULL;
}

static void d_destroy(struct conn *c) { slab_free(&c->w->dconn_slab, dconn_of(c)); }

/* Response body provider: pulls from the stream, then sends its trailers. */
static ssize_t resp_read(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user_data)
{
    (void)src;
    (void)user_data;
    return h2_provide(session, stream_id, out, length, flags, stream_pull_resp, stream_trailers_nv);
}

static int h2_respond(struct downstream *base, struct stream *s, const nghttp2_nv *nva, size_t n, bool end_stream)
{
    struct dconn *d = dconn_from(base);
    nghttp2_data_provider prd = {.source = {.ptr = s}, .read_callback = resp_read};
    int rv = nghttp2_submit_response(d->h2, s->id, nva, n, end_stream ? NULL : &prd);
    conn_want_flush(&base->io);
    return rv == 0 ? GR_OK : GR_ERR_PROTO;
}

static void h2_resume(struct downstream *base, struct stream *s)
{
    /* Streams call respond/resume/reset; a connection with streams is awake, so h2 is set. */
    nghttp2_session_resume_data(dconn_from(base)->h2, s->id);
    conn_want_flush(&base->io);
}

static void h2_consume(struct downstream *base, struct stream *s, size_t n)
{
    struct dconn *d = dconn_from(base);
    if (d->h2 == NULL)
        return;
    if (s != NULL)
        nghttp2_session_consume(d->h2, s->id, n);
    else
        nghttp2_session_consume_connection(d->h2, n);
    conn_want_flush(&base->io);
}

static void h2_reset(struct downstream *base, struct stream *s, uint32_t code)
{
    nghttp2_submit_rst_stream(dconn_from(base)->h2, NGHTTP2_FLAG_NONE, s->id, code);
    conn_want_flush(&base->io);
}

int dconn_new_session(struct dconn *d)
{
    struct worker *w = d->base.io.w;
    const struct gr_listener_cfg *l = d->base.cfg;
    if (nghttp2_session_server_new3(&d->h2, w->server_cbs, d, w->server_opt, &w->h2mem.mem) != 0) {
        d->h2 = NULL;
        return GR_ERR_NOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l->stream_buffer},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l->max_request_headers},
    };
    if (nghttp2_submit_settings(d->h2, NGHTTP2_FLAG_NONE, iv, GR_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(d->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)l->connection_window) != 0) {
        nghttp2_session_del(d->h2);
        d->h2 = NULL;
        return GR_ERR_NOMEM;
    }
    return GR_OK;
}

static const struct downstream_ops h2_downstream_ops = {
    .respond = h2_respond,
    .resume = h2_resume,
    .consume = h2_consume,
    .reset = h2_reset,
};

static const struct conn_ops dconn_ops = {
    .on_read = d_on_read,
    .pull = d_pull,
    .done = d_done,
    .on_connect = NULL,
    .on_close = d_on_close,
    .destroy = d_destroy,
};

struct dconn *dconn_accept(struct worker *w, const struct gr_listener_cfg *l, int fd, SSL *ssl,
                           const uint8_t *early, size_t early_len)
{
    struct dconn *d = slab_alloc(&w->dconn_slab);
    if (d != NULL) {
        d->base.io.w = w;
        d->base.cfg = l;
    }
    if (d == NULL || dconn_new_session(d) != GR_OK) {
        slab_free(&w->dconn_slab, d);
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    d->settings_unacked = 1;
    downstream_init(&d->base, w, l, &h2_downstream_ops);
    conn_init_accepted(&d->base.io, w, fd, &dconn_ops);
    gr_list_init(&d->lru_link);
    if (l->hibernate_after_ms > 0) {
        h2_frames_init(&d->frames);
        d->busy_at = ev_now(w->loop);
        gr_list_insert_tail(&w->h2_lru, &d->lru_link);
    }
    if (ssl != NULL)
        conn_adopt_tls(&d->base.io, ssl);
    if (early_len > 0 && d_on_read(&d->base.io, early, early_len) != GR_OK) {
        conn_close(&d->base.io, GR_ERR_PROTO, "protocol error from peer");
        return NULL;
    }
    conn_want_flush(&d->base.io);
    return d;
}
