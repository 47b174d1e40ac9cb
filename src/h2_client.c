/* Upstream HTTP/2 connections: nghttp2 client sessions whose callbacks map
 * onto the attempts they carry (stream user data = struct up_slot). */
#include "grelay/h2_client.h"
#include "grelay/h2_common.h"
#include "grelay/log.h"
#include "grelay/tls.h"
#include "grelay/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PINGs sooner than H2_CLIENT_PING_MIN_INTERVAL after the previous one that
 * we allow ourselves while the peer sends no HEADERS or DATA: gRPC servers
 * count each as a strike and end the connection at the third (grpc-go's
 * maxPingStrikes, C-core's GRPC_ARG_HTTP2_MAX_PING_STRIKES, both 2); one
 * leaves a margin. */
#define EARLY_PINGS 1

/* Streams a connection takes before the peer's SETTINGS arrive, when its
 * MAX_CONCURRENT_STREAMS is still unknown (RFC 9113: unlimited until then;
 * nghttp2 assumes 100). A backend that allows fewer refuses the streams
 * past its limit (REFUSED_STREAM), or treats them as a PROTOCOL_ERROR of
 * the whole connection (RFC 9113 5.1.2 allows either). One stream is what
 * every peer takes (a limit of 0 is only ever sent later, to shed load):
 * the first call of a new connection goes out with our preface, without
 * waiting a round trip, and the others wait in the pool's line for the
 * SETTINGS, which follow within that round trip. */
#define PRE_SETTINGS_STREAMS 1

/* The largest request header list (32 + name + value per field, RFC 9113
 * 6.5.2) sent before the peer's SETTINGS, when its
 * SETTINGS_MAX_HEADER_LIST_SIZE is still unknown: C-core gRPC servers
 * advertise 8 KiB by default and end the connection over it. An ordinary
 * gRPC request (with a token) is well under 4 KiB and leaves at once; a
 * larger one waits for the SETTINGS, which say whether it may go. */
#define PRE_SETTINGS_HEADER_LIST 4096

/* The worker's share of upstream HTTP/2 (w->h2c). */
struct h2_client_state {
    nghttp2_session_callbacks *cbs; /* client session callbacks */
    nghttp2_option *opt;            /* client session options (h2_common_options + the peer's assumed limit) */
    int32_t first_stream_id;        /* test only (GRELAY_TEST_FIRST_STREAM_ID): 0, or where stream ids start */
    ev_tstamp ping_min_interval;    /* H2_CLIENT_PING_MIN_INTERVAL (tests: GRELAY_TEST_PING_MIN_INTERVAL_MS) */
};

static inline struct upconn *upconn_of(struct conn *c) { return container_of(c, struct upconn, io); }
static inline struct up_slot *slot_of(nghttp2_session *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2, id);
}

/* The slot of stream id while its header block is read: looked up once,
 * when the block begins (on_begin_headers), not once a field. */
static inline struct up_slot *block_slot_of(struct upconn *u, nghttp2_session *h2, int32_t id)
{
    return id == u->block_id ? u->block_slot : slot_of(h2, id);
}

uint32_t h2_client_free_slots(const struct upconn *u)
{
    if (u->draining || u->io.state == CONN_CLOSED || u->h2 == NULL || !nghttp2_session_check_request_allowed(u->h2))
        return 0; /* not allowed: GOAWAY, a session nghttp2 ended, or stream ids used up (2^30 a connection) */
    uint32_t cap = nghttp2_session_get_remote_settings(u->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    uint32_t ours = u->cl->max_streams_per_connection;
    if (ours != 0 && ours < cap)
        cap = ours;
    if (!u->ready && cap > PRE_SETTINGS_STREAMS)
        cap = PRE_SETTINGS_STREAMS; /* the peer's limit is not known yet */
    return cap > u->n_streams ? cap - u->n_streams : 0;
}

bool h2_client_takes_streams(const struct upconn *u)
{
    return u->h2 != NULL && nghttp2_session_check_request_allowed(u->h2);
}

void h2_client_drain(struct upconn *u)
{
    u->draining = true;
    conn_want_flush(&u->io); /* the flush sees done() and closes an idle one */
}

/* GOAWAY(NO_ERROR) to a peer we are done with: no new stream will come
 * (last stream 0: we accept no pushes). */
static void say_goaway(struct upconn *u)
{
    if (u->h2 != NULL)
        nghttp2_submit_goaway(u->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
}

void h2_client_cut(struct upconn *u, const char *why)
{
    say_goaway(u);
    conn_flush(&u->io); /* what the socket takes of it now */
    conn_close(&u->io, GR_OK, why);
}

static ssize_t req_read(nghttp2_session *session, int32_t stream_id, uint8_t *out, size_t length, uint32_t *flags,
                        nghttp2_data_source *src, void *user_data)
{
    (void)user_data;
    struct up_slot *sl = src->ptr;
    if (slot_of(session, stream_id) != sl)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool eof = false;
    size_t n = sl->ev->peek(sl, length, &eof), cnt = 0;
    if (n > 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* send_data copies or moves the bytes */
    else
        n = sl->ev->pull(sl, out, length, &eof);
    nghttp2_nv *nva = eof ? sl->ev->trailers(sl, &cnt) : NULL;
    return h2_common_data_result(session, stream_id, n, eof, nva, cnt, flags);
}

/* A DATA frame req_read left uncopied (NGHTTP2_DATA_FLAG_NO_COPY): its
 * header, then the request bytes straight from the call's queue into the
 * connection's write buffer (moved when the call keeps no replay copy),
 * where nghttp2_session_mem_send stands; grelay never pads. */
static int send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *user_data)
{
    (void)session;
    struct upconn *u = user_data;
    struct up_slot *sl = src->ptr; /* req_read just checked it, in this same mem_send (h2_server.c's send_data) */
    if (frame->data.padlen > 0 || buf_append(&u->io.wbuf, &u->io.w->chunks, framehd, 9) != GR_OK ||
        sl->ev->move(sl, &u->io.wbuf, length) != GR_OK)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* Whether the request's :method (among its leading pseudo headers) is HEAD. */
static bool is_head(const nghttp2_nv *nva, size_t n)
{
    for (size_t i = 0; i < n && nva[i].namelen > 0 && nva[i].name[0] == ':'; i++)
        if (nva[i].namelen == 7 && memcmp(nva[i].name, ":method", 7) == 0)
            return nva[i].valuelen == 4 && memcmp(nva[i].value, "HEAD", 4) == 0;
    return false;
}

/* upstream_ops, on the slot's connection. */
static int op_submit(struct up_slot *sl, const nghttp2_nv *nva, size_t n, bool body)
{
    struct upconn *u = sl->conn;
    uint32_t limit = nghttp2_session_get_remote_settings(u->h2, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE);
    if (limit != UINT32_MAX || !u->ready) {
        /* A peer sent a smaller SETTINGS_MAX_HEADER_LIST_SIZE (or has not
         * said yet): a block over it would make it end the connection every
         * call on it shares. */
        size_t size = 0;
        for (size_t i = 0; i < n; i++)
            size += 32 + nva[i].namelen + nva[i].valuelen; /* RFC 9113, 6.5.2 */
        if (!u->ready && size > PRE_SETTINGS_HEADER_LIST) {
            log_debug("upstream %s: request headers of %zu bytes wait for its SETTINGS", u->ep->address.text, size);
            sl->waits_settings = true;
            return GR_ERR_AGAIN;
        }
        if (size > limit) {
            log_debug("upstream %s: request headers of %zu bytes, over its SETTINGS_MAX_HEADER_LIST_SIZE of %u",
                      u->ep->address.text, size, limit);
            return GR_ERR_LIMIT;
        }
    }
    h2_check_init(&sl->check, is_head(nva, n));
    nghttp2_data_provider prd = {.source = {.ptr = sl}, .read_callback = req_read};
    int32_t id = nghttp2_submit_request(u->h2, NULL, nva, n, body ? &prd : NULL, sl);
    if (id < 0) {
        /* The connection cannot take it (stream ids used up, or the
         * session is gone): it takes no more, and the call tries another. */
        log_info("upstream %s: connection takes no new stream (%s): draining it", u->ep->address.text,
                 nghttp2_strerror(id));
        h2_client_drain(u);
        return GR_ERR_PROTO;
    }
    sl->id = id;
    conn_want_flush(&u->io);
    return GR_OK;
}

static void op_resume(struct up_slot *sl)
{
    nghttp2_session_resume_data(sl->conn->h2, sl->id);
    conn_want_flush(&sl->conn->io);
}

/* Only the stream's window: the connection's was given back as the bytes
 * arrived (on_data_chunk_recv). */
static void op_consume(struct up_slot *sl, size_t n)
{
    nghttp2_session_consume_stream(sl->conn->h2, sl->id, n);
    conn_want_flush(&sl->conn->io);
}

/* The stream's window grows (nghttp2 sends the difference as a
 * WINDOW_UPDATE; what the client takes is still given back by op_consume). */
static void op_grow(struct up_slot *sl, uint32_t window)
{
    if (nghttp2_session_set_local_window_size(sl->conn->h2, NGHTTP2_FLAG_NONE, sl->id, (int32_t)window) == 0)
        conn_want_flush(&sl->conn->io);
}

static void op_detach(struct up_slot *sl, bool reset)
{
    struct upconn *u = sl->conn;
    if (u == NULL)
        return;
    if (reset && sl->id > 0 && u->h2 != NULL) {
        /* Also reaches a request still queued (nghttp2 opens the stream
         * when its HEADERS go out). */
        nghttp2_session_set_stream_user_data(u->h2, sl->id, NULL);
        nghttp2_submit_rst_stream(u->h2, NGHTTP2_FLAG_NONE, sl->id, NGHTTP2_CANCEL);
    }
    if (u->block_slot == sl)
        u->block_slot = NULL;
    gr_list_remove(&sl->link);
    sl->conn = NULL;
    sl->ops = NULL;
    sl->waits_settings = false;
    if (--u->n_streams == 0 && u->draining)
        say_goaway(u); /* its last stream: it closes once the GOAWAY is out */
    else if (u->n_streams == 0 && u->cl->idle_timeout_ms > 0)
        conn_timer_set(&u->io.timer, CONN_TIMER_IDLE, (double)u->cl->idle_timeout_ms / 1e3);
    conn_want_flush(&u->io); /* the RST and credit go out; a drained one with no stream left closes */
}

static const struct upstream_ops h2_upstream_ops = {
    .submit = op_submit,
    .resume = op_resume,
    .consume = op_consume,
    .detach = op_detach,
    .grow = op_grow,
};

/* When the next PING may leave: after keepalive.interval with nothing
 * read; but once the peer has sent no HEADERS or DATA since our last PING
 * (which resets a gRPC server's strikes) and EARLY_PINGS are spent, not
 * before ping_min_interval after the last one. */
static ev_tstamp next_ping_at(const struct upconn *u)
{
    ev_tstamp at = u->last_read + (double)u->cl->keepalive.interval_ms / 1e3;
    if (u->peer_wrote || u->last_ping == 0 || u->early_pings < EARLY_PINGS)
        return at;
    ev_tstamp allowed = u->last_ping + u->io.w->h2c->ping_min_interval;
    return allowed > at ? allowed : at;
}

/* Sets the keepalive deadline for the next PING (see next_ping_at). */
static void schedule_ping(struct upconn *u)
{
    ev_tstamp at = next_ping_at(u), quiet = u->last_read + (double)u->cl->keepalive.interval_ms / 1e3;
    if (at > quiet)
        log_debug("upstream %s: next PING held back %.1fs (no HEADERS or DATA from it since the last one)",
                  u->ep->address.text, at - quiet);
    conn_timer_set_at(&u->io.timer, CONN_TIMER_KEEPALIVE, at);
}

void h2_client_attach(struct upconn *u, struct up_slot *sl)
{
    sl->conn = u;
    sl->ops = &h2_upstream_ops;
    sl->id = 0;
    sl->waits_settings = false;
    gr_list_insert_tail(&u->streams, &sl->link);
    if (u->n_streams++ == 0) {
        struct conn_timer *ct = &u->io.timer;
        conn_timer_clear(ct, CONN_TIMER_IDLE);
        u->busy_since = ev_now(u->io.w->loop);
        if (u->cl->keepalive.interval_ms > 0 && ct->at[CONN_TIMER_KEEPALIVE] == 0)
            conn_timer_set_at(ct, CONN_TIMER_KEEPALIVE, next_ping_at(u));
    }
}

/* A malformed response (h2_check.h): the stream is reset with
 * PROTOCOL_ERROR, as nghttp2's HTTP messaging would reset it, and the call
 * hears that reset when the stream closes (on_stream_close); nothing more
 * of the stream reaches the call meanwhile. */
static void reject(struct upconn *u, struct up_slot *sl, const char *why)
{
    log_info("upstream %s: stream %d: malformed response (%s): reset with PROTOCOL_ERROR", u->ep->address.text, sl->id,
             why);
    sl->check.bad = true;
    nghttp2_submit_rst_stream(u->h2, NGHTTP2_FLAG_NONE, sl->id, NGHTTP2_PROTOCOL_ERROR);
    conn_want_flush(&u->io);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct upconn *u = user_data;
    struct up_slot *sl = slot_of(session, frame->hd.stream_id);
    u->block_id = frame->hd.stream_id;
    u->block_slot = sl;
    if (sl != NULL)
        h2_check_begin(&sl->check);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    struct upconn *u = user_data;
    struct up_slot *sl = block_slot_of(u, session, frame->hd.stream_id);
    if (sl == NULL || sl->check.bad)
        return 0;
    const char *why = NULL;
    if (h2_check_field(&sl->check, name, namelen, value, valuelen, &why) != H2_CHECK_OK) {
        reject(u, sl, why);
        return 0;
    }
    if (sl->ev->header(sl, name, namelen, value, valuelen) != GR_OK)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* The peer's GOAWAY, with its debug data (grpc's "too_many_pings") in
 * printable characters. */
static void log_goaway(const struct upconn *u, const nghttp2_goaway *g)
{
    char dbg[64];
    size_t n = g->opaque_data_len < sizeof(dbg) - 1 ? g->opaque_data_len : sizeof(dbg) - 1;
    for (size_t i = 0; i < n; i++)
        dbg[i] = g->opaque_data[i] >= 0x20 && g->opaque_data[i] < 0x7f ? (char)g->opaque_data[i] : '?';
    dbg[n] = '\0';
    log_info("upstream %s sent GOAWAY (%s%s%s, last stream %d)", u->ep->address.text,
             nghttp2_http2_strerror(g->error_code), n > 0 ? ": " : "", dbg, g->last_stream_id);
}

/* The peer's first SETTINGS arrived: the calls whose headers waited for
 * them (GR_ERR_AGAIN from op_submit) are told to submit again, against the
 * limit now known. */
static void submit_put_off(struct upconn *u)
{
    /* Bounded: every turn clears one slot's flag, and no slot gets it again
     * (the connection is ready); at most PRE_SETTINGS_STREAMS have it. */
    for (uint32_t turn = 0; turn <= PRE_SETTINGS_STREAMS; turn++) {
        struct up_slot *sl = NULL;
        struct gr_list *it, *tmp;
        gr_list_for_each_safe (it, tmp, &u->streams) {
            struct up_slot *x = container_of(it, struct up_slot, link);
            if (x->waits_settings) {
                sl = x;
                break;
            }
        }
        if (sl == NULL)
            return;
        sl->waits_settings = false;
        sl->ev->granted(sl); /* may fail the call and detach it: the list is walked again */
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct upconn *u = user_data;
    struct up_slot *sl;
    const char *why = NULL;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            break;
        bool first = !u->ready;
        if (first) {
            u->ready = true;
            ev_timer_stop(u->io.w->loop, &u->connect_timer);
            submit_put_off(u);
        }
        u->ev->settings(u->owner, u, first);
        break;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && u->ping_sent > 0) {
            /* Alive: the next PING is due an interval from now, not when the
             * ACK's deadline would have found it. */
            u->ping_sent = 0;
            if (u->n_streams > 0)
                schedule_ping(u);
        }
        break;
    case NGHTTP2_GOAWAY:
        u->draining = true;
        log_goaway(u, &frame->goaway);
        conn_want_flush(&u->io);
        break;
    case NGHTTP2_HEADERS:
        u->peer_wrote = true;
        sl = block_slot_of(u, session, frame->hd.stream_id);
        u->block_id = 0;
        if (sl == NULL || sl->check.bad)
            break;
        if (h2_check_block(&sl->check, end, &why) != H2_CHECK_OK)
            reject(u, sl, why);
        else
            sl->ev->headers_done(sl, end);
        break;
    case NGHTTP2_DATA:
        u->peer_wrote = true;
        if (!end || (sl = slot_of(session, frame->hd.stream_id)) == NULL || sl->check.bad)
            break;
        if (h2_check_end(&sl->check, &why) != H2_CHECK_OK)
            reject(u, sl, why);
        else
            sl->ev->end(sl);
        break;
    default: break;
    }
    return 0;
}

/* The connection's window is given back as bytes arrive, whoever will
 * take them: what a call holds is bounded by its own stream window (the
 * cluster's stream_buffer), so one client that does not read cannot stop
 * the other calls on this connection. The stream's window comes back only
 * when its client takes the bytes (op_consume). */
static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data)
{
    (void)flags;
    struct upconn *u = user_data;
    struct up_slot *sl = slot_of(session, stream_id);
    const char *why = NULL;
    nghttp2_session_consume_connection(session, len);
    if (sl != NULL && !sl->check.bad && h2_check_data(&sl->check, len, &why) != H2_CHECK_OK)
        reject(u, sl, why);
    if (sl == NULL || sl->check.bad) {
        nghttp2_session_consume_stream(session, stream_id, len);
        return 0;
    }
    sl->ev->data(sl, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    struct up_slot *sl;
    if (frame->hd.type == NGHTTP2_HEADERS && (sl = slot_of(session, frame->hd.stream_id)) != NULL)
        sl->ev->sent(sl);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    (void)user_data;
    struct up_slot *sl = slot_of(session, stream_id);
    /* A response found malformed at its END_STREAM closes before our reset
     * leaves: the call hears the reset all the same. */
    if (sl != NULL)
        sl->ev->closed(sl, sl->check.bad ? NGHTTP2_PROTOCOL_ERROR : error_code);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    struct upconn *u = user_data;
    log_debug("upstream %s: %.*s", u->ep->address.text, (int)len, msg);
    return 0;
}

int h2_client_worker_init(struct worker *w)
{
    struct h2_client_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return GR_ERR_NOMEM;
    w->h2c = st;
    if (nghttp2_session_callbacks_new(&st->cbs) != 0 || h2_common_options(&st->opt) != GR_OK)
        return GR_ERR_NOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(st->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(st->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(st->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(st->cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(st->cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(st->cbs, send_data);
    nghttp2_session_callbacks_set_on_frame_send_callback(st->cbs, on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(st->cbs, on_error);
    /* Until the peer's first SETTINGS (nghttp2 forgets it then). */
    nghttp2_option_set_peer_max_concurrent_streams(st->opt, PRE_SETTINGS_STREAMS);
    /* grelay checks the responses itself (h2_check.h): nghttp2's checks of
     * the same cost more. The server session keeps them (requests). */
    nghttp2_option_set_no_http_messaging(st->opt, 1);
    /* Test only: start stream ids near their end (2^31-1), to see a
     * connection use them up in a few calls (tests/integration/test_limits.py). */
    const char *first = getenv("GRELAY_TEST_FIRST_STREAM_ID");
    if (first != NULL)
        st->first_stream_id = (int32_t)strtol(first, NULL, 10);
    /* Test only: PING as often as keepalive.interval says, to show what a
     * gRPC server does to a client that does (tests/integration/test_upstream_timers.py). */
    const char *min_ping = getenv("GRELAY_TEST_PING_MIN_INTERVAL_MS");
    st->ping_min_interval = min_ping != NULL ? strtod(min_ping, NULL) / 1e3 : H2_CLIENT_PING_MIN_INTERVAL;
    return GR_OK;
}

void h2_client_worker_destroy(struct worker *w)
{
    struct h2_client_state *st = w->h2c;
    if (st == NULL)
        return;
    h2_common_free(st->cbs, st->opt);
    free(st);
    w->h2c = NULL;
}

static int up_on_read(struct conn *c, const uint8_t *data, size_t len)
{
    struct upconn *u = upconn_of(c);
    u->last_read = ev_now(c->w->loop); /* the keepalive deadline moves lazily (keepalive_due) */
    ssize_t rv = nghttp2_session_mem_recv(u->h2, data, len);
    if (rv < 0) {
        log_warn("upstream %s: %s", u->ep->address.text, nghttp2_strerror((int)rv));
        return GR_ERR_PROTO;
    }
    return GR_OK;
}

/* Seconds the peer may take to read what we send (the write deadline),
 * and to answer a PING: keepalive.timeout. */
static double peer_timeout(const struct upconn *u) { return (double)u->cl->keepalive.timeout_ms / 1e3; }

/* Bytes leaving for the peer: the write deadline starts if it is not
 * running, from the bytes written so far. */
static ssize_t up_pull(struct conn *c, const uint8_t **data)
{
    struct upconn *u = upconn_of(c);
    ssize_t n = nghttp2_session_mem_send(u->h2, data);
    if (n > 0) {
        if (c->timer.at[CONN_TIMER_WRITE] == 0) {
            u->write_mark = u->pulled - c->wbuf.len;
            conn_timer_set(&c->timer, CONN_TIMER_WRITE, peer_timeout(u));
        }
        u->pulled += (uint64_t)n;
    }
    return n;
}

static bool up_done(struct conn *c)
{
    struct upconn *u = upconn_of(c);
    return (u->draining && u->n_streams == 0) ||
           (!nghttp2_session_want_read(u->h2) && !nghttp2_session_want_write(u->h2));
}

static void up_on_close(struct conn *c, int err, const char *why)
{
    (void)err;
    struct upconn *u = upconn_of(c);
    char msg[256];
    ev_timer_stop(c->w->loop, &u->connect_timer);
    snprintf(msg, sizeof(msg), "upstream %s: connection %s: %s", u->ep->address.text, u->ready ? "lost" : "failed",
             why);
    u->ev->closing(u->owner, u, msg);
    u->block_slot = NULL;
    while (!gr_list_empty(&u->streams)) {
        struct up_slot *sl = container_of(u->streams.next, struct up_slot, link);
        gr_list_remove(&sl->link);
        sl->conn = NULL;
        sl->ops = NULL;
        u->n_streams--;
        sl->ev->lost(sl, msg, !u->ready);
    }
    nghttp2_session_del(u->h2);
    u->h2 = NULL;
    u->ev->closed(u->owner, u);
}

static void up_destroy(struct conn *c) { free(upconn_of(c)); }

/* No stream for idle_timeout: GOAWAY(NO_ERROR), then the close (the flush
 * finds it drained and empty). */
static void idle_due(struct upconn *u)
{
    if (u->n_streams > 0 || u->draining || u->h2 == NULL)
        return;
    log_debug("upstream %s: no call for %llums: closing the connection", u->ep->address.text,
              (unsigned long long)u->cl->idle_timeout_ms);
    say_goaway(u);
    h2_client_drain(u);
}

/* The keepalive deadline: an unanswered PING ends the connection as lost
 * (its calls are retried or failed as on any lost connection); otherwise a
 * connection carrying calls that read nothing for keepalive.interval gets
 * a PING, held back as next_ping_at says. A connection without calls is
 * never pinged (gRPC servers count those PINGs against a 2-hour minimum):
 * idle_timeout reaps it, and its next call's first quiet interval checks it. */
static void keepalive_due(struct upconn *u)
{
    ev_tstamp now = ev_now(u->io.w->loop);
    const struct gr_keepalive_cfg *ka = &u->cl->keepalive;
    if (u->ping_sent > 0) {
        if (u->last_read <= u->ping_sent) {
            char why[96];
            snprintf(why, sizeof(why), "no answer to a PING within %llums", (unsigned long long)ka->timeout_ms);
            u->unresponsive = true;
            conn_close(&u->io, GR_ERR_IO, why);
            return;
        }
        u->ping_sent = 0;
    }
    if (u->n_streams == 0 || u->h2 == NULL || ka->interval_ms == 0)
        return;      /* the next attach sets it again */
    if (!u->ready) { /* connect_timeout governs the handshake */
        conn_timer_set_at(&u->io.timer, CONN_TIMER_KEEPALIVE, now + (double)ka->interval_ms / 1e3);
        return;
    }
    ev_tstamp at = next_ping_at(u);
    if (at <= now && u->busy_since >= now) {
        /* The HEADERS that made it busy leave first: a PING on no stream is a strike. */
        conn_timer_set_at(&u->io.timer, CONN_TIMER_KEEPALIVE, now + 1e-3);
        return;
    }
    if (at > now) {
        schedule_ping(u);
        return;
    }
    if (nghttp2_submit_ping(u->h2, NGHTTP2_FLAG_NONE, NULL) != 0) {
        conn_close(&u->io, GR_ERR_NOMEM, "out of memory");
        return;
    }
    log_debug("upstream %s: nothing read for %.1fs with %u call%s: PING", u->ep->address.text, now - u->last_read,
              u->n_streams, u->n_streams == 1 ? "" : "s");
    if (u->peer_wrote)
        u->early_pings = 0; /* the peer's strikes were reset: this one is free */
    else if (u->last_ping > 0 && now < u->last_ping + u->io.w->h2c->ping_min_interval)
        u->early_pings++; /* a strike at a gRPC server */
    u->ping_sent = u->last_ping = now;
    u->peer_wrote = false;
    conn_timer_set_at(&u->io.timer, CONN_TIMER_KEEPALIVE, now + (double)ka->timeout_ms / 1e3);
    conn_want_flush(&u->io);
}

/* The write deadline: bytes that wait in our buffer while the peer took
 * none of them for keepalive.timeout (its socket accepts nothing: it does
 * not read) end the connection as lost, as an unanswered PING does. Bytes
 * that leave move the deadline on; an empty buffer stops it (the next
 * bytes start it again). */
static void write_due(struct upconn *u)
{
    struct conn *c = &u->io;
    uint64_t written = u->pulled - c->wbuf.len;
    if (c->wbuf.len == 0)
        return;
    if (written > u->write_mark) {
        u->write_mark = written;
        conn_timer_set(&c->timer, CONN_TIMER_WRITE, peer_timeout(u));
        return;
    }
    char why[128];
    snprintf(why, sizeof(why), "it read none of %zu bytes for %llums", c->wbuf.len,
             (unsigned long long)u->cl->keepalive.timeout_ms);
    u->unresponsive = true;
    conn_close(c, GR_ERR_IO, why);
}

/* max_connection_age: no new stream; the connection closes (GOAWAY) once
 * its streams have ended, and the pool opens a new one when calls need it. */
static void age_due(struct upconn *u)
{
    if (u->draining || u->h2 == NULL)
        return;
    log_debug("upstream %s: connection reached max_connection_age (%llums): no new streams, %u left",
              u->ep->address.text, (unsigned long long)u->cl->max_connection_age_ms, u->n_streams);
    if (u->n_streams == 0)
        say_goaway(u);
    h2_client_drain(u);
}

static void up_on_deadline(struct conn *c, enum conn_timer_kind kind)
{
    if (kind == CONN_TIMER_IDLE)
        idle_due(upconn_of(c));
    else if (kind == CONN_TIMER_KEEPALIVE)
        keepalive_due(upconn_of(c));
    else if (kind == CONN_TIMER_WRITE)
        write_due(upconn_of(c));
    else if (kind == CONN_TIMER_AGE)
        age_due(upconn_of(c));
}

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

static const struct conn_ops upconn_conn_ops = {
    .on_read = up_on_read,
    .pull = up_pull,
    .done = up_done,
    .on_connect = up_on_connect,
    .on_close = up_on_close,
    .destroy = up_destroy,
    .on_deadline = up_on_deadline,
};

static void on_connect_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct upconn *u = container_of(t, struct upconn, connect_timer);
    char why[64];
    snprintf(why, sizeof(why), "no HTTP/2 SETTINGS within %llums", (unsigned long long)u->cl->connect_timeout_ms);
    conn_close(&u->io, GR_ERR_IO, why);
}

/* The client session with our SETTINGS and connection window queued. */
static int new_session(struct upconn *u, struct worker *w)
{
    const struct gr_cluster_cfg *cl = u->cl;
    if (nghttp2_session_client_new3(&u->h2, w->h2c->cbs, u, w->h2c->opt, &w->h2mem.mem) != 0) {
        u->h2 = NULL;
        return GR_ERR_NOMEM;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, upstream_window_start(cl->stream_buffer)},
    };
    if (w->h2c->first_stream_id > 0)
        nghttp2_session_set_next_stream_id(u->h2, w->h2c->first_stream_id);
    if (nghttp2_submit_settings(u->h2, NGHTTP2_FLAG_NONE, iv, GR_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(u->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)cl->connection_window) != 0) {
        nghttp2_session_del(u->h2);
        u->h2 = NULL;
        return GR_ERR_NOMEM;
    }
    return GR_OK;
}

/* TCP keepalive and TCP_USER_TIMEOUT from the cluster's keepalive: the
 * kernel probes a connection silent for interval (also one without calls,
 * which gets no PING: gRPC servers punish those) every timeout/3, and
 * aborts one whose bytes or probes stay unacknowledged for interval +
 * timeout (the kernel's own bound is ~15 minutes of retransmissions).
 * Probes are TCP's, invisible to the peer's HTTP/2 ping policy. No
 * interval, no keepalive of either kind. */
static void set_liveness(struct upconn *u)
{
    const struct gr_keepalive_cfg *ka = &u->cl->keepalive;
    if (ka->interval_ms == 0)
        return;
    uint64_t idle = (ka->interval_ms + 999) / 1000, intvl = (ka->timeout_ms / 3 + 999) / 1000;
    uint64_t user = ka->interval_ms + ka->timeout_ms;
    conn_set_liveness(&u->io, (uint32_t)(idle < 32767 ? idle : 32767), (uint32_t)(intvl > 0 ? intvl : 1), 3,
                      (uint32_t)(user < UINT32_MAX ? user : UINT32_MAX));
}

struct upconn *h2_client_open(struct worker *w, const struct gr_cluster_cfg *cl, const struct endpoint *ep,
                              const struct upconn_events *ev, void *owner)
{
    struct upconn *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->cl = cl;
    u->ep = ep;
    u->ev = ev;
    u->owner = owner;
    gr_list_init(&u->streams);
    gr_list_init(&u->link);
    SSL *ssl = NULL;
    int e = ENOMEM;
    if (new_session(u, w) != GR_OK || (cl->tls.set && (ssl = tls_client_new(&cl->tls, ep->host, ep->text)) == NULL))
        goto fail;
    if (conn_connect(&u->io, w, &ep->address, &upconn_conn_ops, ssl) != GR_OK) {
        e = errno;
        goto fail;
    }
    ev_timer_init(&u->connect_timer, on_connect_timeout, (double)cl->connect_timeout_ms / 1000.0, 0.0);
    ev_timer_start(w->loop, &u->connect_timer);
    u->last_read = ev_now(w->loop);
    if (cl->idle_timeout_ms > 0)
        conn_timer_set(&u->io.timer, CONN_TIMER_IDLE, (double)cl->idle_timeout_ms / 1e3);
    if (cl->max_connection_age_ms > 0) {
        /* +-10%, so that connections opened together do not all close together */
        double jitter = 0.9 + 0.2 * (double)(gr_rand(&w->rng) % 10001) / 10000.0;
        conn_timer_set(&u->io.timer, CONN_TIMER_AGE, (double)cl->max_connection_age_ms / 1e3 * jitter);
    }
    set_liveness(u);
    return u;
fail:
    nghttp2_session_del(u->h2);
    free(u);
    errno = e;
    return NULL;
}
