/* Upstream HTTP/2 connections: nghttp2 client sessions whose callbacks map
 * onto the streams they carry (stream user data = struct stream). */
#include "grelay/h2_client.h"
#include "grelay/h2_data.h"
#include "grelay/log.h"
#include "grelay/pool.h"
#include "grelay/stream.h"
#include "grelay/tls.h"
#include "grelay/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What we assume of a peer's MAX_CONCURRENT_STREAMS before its SETTINGS. */
#define ASSUMED_PEER_STREAMS 100

static inline struct upconn *upconn_of(struct conn *c) { return container_of(c, struct upconn, io); }

uint32_t upconn_free_slots(const struct upconn *u)
{
    if (u->draining || u->io.state == CONN_CLOSED || u->h2 == NULL)
        return 0;
    uint32_t cap = nghttp2_session_get_remote_settings(u->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t ours = u->pool->wc->cfg->max_streams_per_connection;
    if (ours != 0 && ours < cap)
        cap = ours;
    return cap > u->n_streams ? cap - u->n_streams : 0;
}

void upconn_stream_detached(struct upconn *u)
{
    u->n_streams--;
    if (u->pool->retired)
        u->draining = true;
    if (u->draining && u->n_streams == 0)
        conn_want_flush(&u->io); /* the flush sees done() and closes */
}

ssize_t upconn_req_read(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length, uint32_t *flags,
                        nghttp2_data_source *src, void *user_data)
{
    (void)src;
    (void)user_data;
    return h2_provide(session, stream_id, out, length, flags, stream_pull_req, stream_req_trailers_nv);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    if (stream_on_resp_header(s, name, namelen, value, valuelen) != GR_OK)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct upconn *u = user_data;
    struct stream *s;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !u->ready) {
            u->ready = true;
            ev_timer_stop(u->io.w->loop, &u->connect_timer);
            pool_connect_worked(u->pool);
            if (u->pool->failing) {
                u->pool->failing = false;
                log_info("upstream %s is reachable again", u->pool->ep->address.text);
            }
        }
        pool_dispatch(u->pool); /* the peer's stream limit may have grown */
        break;
    case NGHTTP2_GOAWAY:
        u->draining = true;
        log_info("upstream %s sent GOAWAY (%s, last stream %d)", u->pool->ep->address.text,
                 nghttp2_http2_strerror(frame->goaway.error_code), frame->goaway.last_stream_id);
        conn_want_flush(&u->io);
        break;
    case NGHTTP2_HEADERS:
        s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s == NULL)
            break;
        if (!s->resp_headers_done)
            stream_on_resp_headers_done(s, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
        else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            stream_on_resp_end(s);
        break;
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
            if (s != NULL)
                stream_on_resp_end(s);
        }
        break;
    default:
        break;
    }
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
    stream_on_resp_data(s, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s != NULL)
            s->up_headers_sent = true;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s != NULL)
        stream_on_up_close(s, error_code);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    struct upconn *u = user_data;
    log_debug("upstream %s: %.*s", u->pool->ep->address.text, (int)len, msg);
    return 0;
}

int h2_client_setup(nghttp2_session_callbacks **cbs, nghttp2_option **opt)
{
    if (nghttp2_session_callbacks_new(cbs) != 0)
        return GR_ERR_NOMEM;
    nghttp2_session_callbacks_set_on_header_callback(*cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(*cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(*cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(*cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(*cbs, on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(*cbs, on_error);
    if (nghttp2_option_new(opt) != 0)
        return GR_ERR_NOMEM;
    nghttp2_option_set_no_auto_window_update(*opt, 1);
    nghttp2_option_set_no_closed_streams(*opt, 1); /* we keep no priority tree: do not hold closed streams */
    nghttp2_option_set_peer_max_concurrent_streams(*opt, ASSUMED_PEER_STREAMS);
    return GR_OK;
}

static int up_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct upconn *u = upconn_of(c);
    ssize_t rv = nghttp2_session_mem_recv(u->h2, data, len);
    if (rv < 0) {
        log_warn("upstream %s: %s", u->pool->ep->address.text, nghttp2_strerror((int)rv));
        return GR_ERR_PROTO;
    }
    return GR_OK;
}

static ssize_t up_pull(struct conn *c, const uint8_t **data)
{
    return nghttp2_session_mem_send(upconn_of(c)->h2, data);
}

static bool up_done(struct conn *c)
{
    struct upconn *u = upconn_of(c);
    return (u->draining && u->n_streams == 0) ||
           (!nghttp2_session_want_read(u->h2) && !nghttp2_session_want_write(u->h2));
}

static void up_on_close(struct conn *c, int err, const char *why)
{
    struct upconn *u = upconn_of(c);
    struct pool *p = u->pool;
    char msg[256];
    ev_timer_stop(c->w->loop, &u->connect_timer);
    if (!u->ready)
        snprintf(msg, sizeof(msg), "upstream %s: connection failed: %s", p->ep->address.text, why);
    else
        snprintf(msg, sizeof(msg), "upstream %s: connection lost: %s", p->ep->address.text, why);
    if (!u->ready)
        pool_connect_failed(p);
    if (!u->ready && !p->failing) {
        log_warn("%s (further failures of this endpoint are logged at debug level)", msg);
        p->failing = true;
    } else if (u->ready && u->n_streams > 0) {
        log_info("%s (%u call%s affected)", msg, u->n_streams, u->n_streams == 1 ? "" : "s");
    } else {
        log_debug("%s", msg);
    }
    gr_list_remove(&u->link);
    p->n_conns--;
    while (!gr_list_empty(&u->streams)) {
        struct stream *s = container_of(u->streams.next, struct stream, up_link);
        stream_on_up_lost(s, msg, !u->ready || !s->up_headers_sent);
    }
    nghttp2_session_del(u->h2);
    u->h2 = NULL;
    pool_dispatch(p);
    pool_release_if_idle(p);
}

static void up_destroy(struct conn *c) { free(upconn_of(c)); }

static void up_on_connect(struct conn *c)
{
    if (c->ssl == NULL)
        return;
    /* Only HTTP/2 carries gRPC: the backend must have said so with ALPN. */
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &len);
    if (len != 2 || memcmp(proto, "h2", 2) != 0)
        conn_close(c, GR_ERR_PROTO, "TLS: the upstream did not choose h2 with ALPN");
}

static const struct conn_ops upconn_ops = {
    .on_read = up_on_read,
    .pull = up_pull,
    .done = up_done,
    .on_connect = up_on_connect,
    .on_close = up_on_close,
    .destroy = up_destroy,
};

static void on_connect_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct upconn *u = container_of(t, struct upconn, connect_timer);
    char why[64];
    snprintf(why, sizeof(why), "no HTTP/2 SETTINGS within %llums",
             (unsigned long long)u->pool->wc->cfg->connect_timeout_ms);
    conn_close(&u->io, GR_ERR_IO, why);
}

struct upconn *upconn_open(struct pool *p)
{
    struct worker *w = p->w;
    const struct gr_cluster_cfg *cl = p->wc->cfg;
    struct upconn *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->pool = p;
    gr_list_init(&u->streams);
    if (nghttp2_session_client_new3(&u->h2, w->client_cbs, u, w->client_opt, &w->h2mem.mem) != 0) {
        free(u);
        errno = ENOMEM;
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cl->stream_buffer},
    };
    nghttp2_submit_settings(u->h2, NGHTTP2_FLAG_NONE, iv, GR_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(u->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)cl->connection_window);
    SSL *ssl = NULL;
    if (cl->tls.set) {
        ssl = tls_client_new(&cl->tls, p->ep->host);
        if (ssl == NULL) {
            nghttp2_session_del(u->h2);
            free(u);
            errno = ENOMEM;
            return NULL;
        }
    }
    if (conn_connect(&u->io, w, &p->ep->address, &upconn_ops, ssl) != GR_OK) {
        int e = errno;
        nghttp2_session_del(u->h2);
        free(u);
        errno = e;
        return NULL;
    }
    ev_timer_init(&u->connect_timer, on_connect_timeout, (double)cl->connect_timeout_ms / 1000.0, 0.0);
    ev_timer_start(w->loop, &u->connect_timer);
    gr_list_insert_tail(&p->conns, &u->link);
    p->n_conns++;
    return u;
}
